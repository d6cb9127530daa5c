/**
 * The real service's edges through HTTP: API key, backpressure, and a SIGTERM drain with
 * runs of both languages in flight that leaves no process behind.
 */

import { assert, assertEquals, assertStringIncludes } from "./helpers/assert.ts";
import { until } from "./helpers/wait.ts";
import { descendants, health, postJson, readStat, startRealService } from "./e2e_helpers.ts";

const KEY = "e2e-secret-key";
const AUTH = { Authorization: `Bearer ${KEY}` };

Deno.test({
  name: "e2e: API key, queue full and a SIGTERM drain with runs in flight",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await using service = await startRealService({
      FAAS_API_KEY: KEY,
      FAAS_MAX_INSTANCES: "2",
      FAAS_QUEUE_LIMIT: "0",
      FAAS_DRAIN_TIMEOUT: "10000",
    });
    const { url } = service;
    const pid = service.process.child.pid;

    await t.step("a missing or wrong API key is a JSON 401; /health stays open", async () => {
      const request = { language: "js", code: "return 1" };
      const wrong: Record<string, string>[] = [
        {},
        { Authorization: "Bearer wrong" },
        { "X-API-Key": "wrong" },
      ];
      for (const headers of wrong) {
        const answer = await postJson(url, "/run_code", request, headers);
        assertEquals(answer.status, 401, JSON.stringify(headers));
        assertStringIncludes(String(answer.body.error), "API key");
      }
      const metrics = await fetch(url + "/metrics");
      assertEquals(metrics.status, 401);
      assertStringIncludes((await metrics.json()).error, "API key");
      assertEquals((await health(url)).status, 200);
      const right: Record<string, string>[] = [AUTH, { "X-API-Key": KEY }];
      for (const headers of right) {
        const answer = await postJson(url, "/run_code", request, headers);
        assertEquals([answer.status, (answer.body.output as { ret_val: string }).ret_val], [
          200,
          "1",
        ]);
      }
    });

    await t.step(
      "queue full, then SIGTERM: in-flight runs answered, new ones 503, exit 0",
      async () => {
        const inFlight = [
          postJson(url, "/run_code", {
            language: "javascript",
            code:
              "await new Promise((r) => setTimeout(r, 1500)); console.log('js done'); return 1;",
            timeout: 8000,
          }, AUTH),
          postJson(url, "/run_code", {
            language: "python",
            code: "import time\ntime.sleep(1.5)\nprint('py done')\n2",
            timeout: 8000,
          }, AUTH),
        ];
        await until(async () => (await health(url)).body.scheduler.runningTasks === 2, {
          what: "both runs in flight",
        });

        const full = await postJson(url, "/run_code", { language: "js", code: "return 3" }, AUTH);
        assertEquals(full.status, 503);
        assert(full.headers.get("retry-after"), "Retry-After on queue full");
        assertStringIncludes(String(full.body.error), "queue");

        const sandboxes = descendants(pid);
        assert(sandboxes.length > 0, "the service has sandbox processes");
        service.process.child.kill("SIGTERM");
        await until(async () => (await health(url)).status === 503, { what: "health 503" });
        assertEquals((await health(url)).body.status, "unhealthy");
        const refused = await postJson(url, "/run_code", { language: "python", code: "1" }, AUTH);
        assertEquals(refused.status, 503);
        assert(refused.headers.get("retry-after"), "Retry-After while draining");
        assertStringIncludes(String(refused.body.error), "shutting down");

        // Whatever the service starts while draining (a replacement runner) must go too.
        for (const child of descendants(pid)) if (!sandboxes.includes(child)) sandboxes.push(child);
        const [js, py] = await Promise.all(inFlight);
        assertEquals(js.status, 200);
        assertEquals(js.body.output, { stdout: "js done\n", stderr: "", ret_val: "1" });
        assertEquals(py.status, 200);
        assertEquals(py.body.output, { stdout: "py done\n", stderr: "", ret_val: "2" });

        const status = await service.process.child.status;
        assertEquals(status.code, 0);
        const left = sandboxes.filter((child) => {
          const stat = readStat(child);
          return stat !== undefined && stat.state !== "Z";
        });
        assertEquals(left, [], "no sandbox process outlives the service");
      },
    );
  },
});
