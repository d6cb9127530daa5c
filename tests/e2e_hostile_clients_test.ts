/**
 * Clients that go away: a run whose client disconnects ends at once and frees its slot, in
 * every language, whether it was running or still queued; the service answers the next client
 * as if nothing happened.
 */

import { assert, assertEquals } from "./helpers/assert.ts";
import { until } from "./helpers/wait.ts";
import { health, runCode, startRealService, untilRecovered } from "./e2e_helpers.ts";

const LOOPS: Record<string, string> = {
  javascript: "while (true) {}",
  typescript: "let n: number = 0; while (true) { n++; }",
  python: "while True: pass",
};

/** Starts a run of `code` that the returned controller can abandon. */
function abandonable(url: string, language: string, code: string): AbortController {
  const controller = new AbortController();
  fetch(url + "/run_code", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    // Far longer than the test: only the disconnect can end these runs in time.
    body: JSON.stringify({ language, code, timeout: 600_000 }),
    signal: controller.signal,
  }).then((response) => response.body?.cancel()).catch(() => {});
  return controller;
}

Deno.test({
  name: "e2e: a client that disconnects mid-run or queued frees its slot at once",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await using service = await startRealService({
      FAAS_MAX_INSTANCES: "2",
      FAAS_MAX_TIMEOUT: "600000",
    });
    const { url } = service;
    const scheduler = async () => (await health(url)).body.scheduler;

    for (const language of Object.keys(LOOPS)) {
      await t.step(
        `${language}: both slots taken by endless runs, then their clients leave`,
        async () => {
          const cancelledBefore = (await scheduler()).cancelledTasks;
          const running = [0, 1].map(() => abandonable(url, language, LOOPS[language]));
          await until(async () => (await scheduler()).runningTasks === 2, {
            what: "two endless runs to start",
          });
          // A third one waits in the queue; its client leaves too.
          const queued = abandonable(url, language, LOOPS[language]);
          await until(async () => (await scheduler()).queuedTasks === 1, { what: "a queued run" });
          for (const controller of [...running, queued]) controller.abort();
          await until(async () => {
            const stats = await scheduler();
            return stats.runningTasks === 0 && stats.queuedTasks === 0;
          }, { timeoutMs: 15_000, what: "the abandoned runs to end" });
          assertEquals((await scheduler()).cancelledTasks - cancelledBefore, 3);
          // The slots serve the next clients.
          const answers = await Promise.all([0, 1, 2].map(() =>
            runCode(url, {
              language,
              code: language === "python" ? "print('next')" : "console.log('next')",
            })
          ));
          for (const answer of answers) {
            assertEquals([answer.metadata.status, answer.output.stdout], ["success", "next\n"]);
          }
        },
      );
    }

    await t.step("the service is healthy and counts the cancellations", async () => {
      await untilRecovered(url);
      const metrics = await (await fetch(url + "/metrics")).text();
      const cancelled = /faas_rejected_requests_total\{reason="cancelled"\} (\d+)/.exec(metrics);
      assert(cancelled, "a cancelled series in /metrics");
      assertEquals(Number(cancelled[1]), 9);
    });
  },
});
