/**
 * Faults around the real service: signals to its whole process group (Ctrl-C in a terminal,
 * `deno task` passing on a SIGTERM), its own sudden death, and the sandbox machinery (jailers,
 * runners, zygotes, the syntax process) killed or stopped in the middle of runs. Every accepted
 * run is answered, the service heals by itself, and no process is left behind.
 */

import { assert, assertEquals } from "./helpers/assert.ts";
import { until } from "./helpers/wait.ts";
import { descendants, health, runCode, startRealService } from "./e2e_helpers.ts";
import { startTimeOf } from "../bench/proc_tree.ts";

/** Processes by pid and start time: a pid reused later is not mistaken for one of them. */
function snapshot(pids: number[]): Map<number, string | undefined> {
  return new Map(pids.map((pid) => [pid, startTimeOf(pid)]));
}

/** Those of `family` still alive. */
function alive(family: Map<number, string | undefined>): number[] {
  return [...family].filter(([pid, start]) => start !== undefined && startTimeOf(pid) === start)
    .map(([pid]) => pid);
}

/** Runs that take a moment and then print, in each language. */
const SLOW: [string, string][] = [
  ["javascript", "await new Promise((r) => setTimeout(r, 1500)); console.log('done');"],
  ["typescript", "await new Promise<void>((r) => setTimeout(r, 1500)); console.log('done');"],
  ["python", "import time\ntime.sleep(1.5)\nprint('done')"],
];

Deno.test({
  name: "e2e: SIGINT to the whole process group drains runs in flight, exits 0, leaves nothing",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using service = await startRealService({}, { ownGroup: true });
    const pid = service.process.child.pid;
    const answers = SLOW.map(([language, code]) => runCode(service.url, { language, code }));
    await until(async () => (await health(service.url)).body.scheduler.runningTasks === 3, {
      what: "three runs in flight",
    });
    const family = snapshot(descendants(pid));
    assert(family.size > 0, "the service has sandbox processes");
    // What a terminal's Ctrl-C does: every process of the foreground group gets SIGINT.
    Deno.kill(-pid, "SIGINT");
    for (const answer of await Promise.all(answers)) {
      assertEquals([answer.metadata.status, answer.output.stdout], ["success", "done\n"]);
    }
    assertEquals((await service.process.child.status).code, 0);
    await until(() => alive(family).length === 0, { what: "every sandbox process to end" });
  },
});

Deno.test({
  name: "e2e: a service killed outright takes every sandbox process with it",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using service = await startRealService();
    const pid = service.process.child.pid;
    // Warm every kind of process: kept runners, zygotes, the syntax process.
    for (const [language] of SLOW) {
      await runCode(service.url, { language, code: "1", ext: { space_id: "warm" } });
    }
    const family = snapshot(descendants(pid));
    assert(family.size >= 4, `sandbox processes: ${[...family.keys()]}`);
    service.process.child.kill("SIGKILL");
    await service.process.child.status;
    await until(() => alive(family).length === 0, {
      timeoutMs: 10_000,
      what: "every process the service started to end with it",
    });
  },
});
