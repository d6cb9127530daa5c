/**
 * Pool behaviour of the JS runtime on real runner processes: concurrency, replacement of
 * dead runners, isolation requirements, stats, and a clean shutdown.
 */

import {
  assert,
  assertEquals,
  assertStringIncludes,
  run,
  runnerPids,
  SEED,
  startRuntime,
} from "./javascript_helpers.ts";
import { createJavaScriptRuntime } from "../src/sandbox/javascript/mod.ts";
import { testSettings } from "./javascript_helpers.ts";
import type { Runtime } from "../src/runtime.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
let runtime: Runtime;

async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

Deno.test("pool: start rejects when a required isolation layer is missing", opts, async () => {
  const strict = createJavaScriptRuntime(testSettings({ requireIsolation: ["no_such_layer"] }));
  let message = "";
  try {
    await strict.start();
  } catch (error) {
    message = (error as Error).message;
  }
  assertStringIncludes(message, "no_such_layer");
  await strict.shutdown();
});

Deno.test("pool: starts with the host's layers required and prewarms", opts, async () => {
  // Whatever this host offers must be accepted when required.
  const probe = await startRuntime();
  const layers = Object.entries(probe.info().isolation).filter(([, on]) => on).map(([n]) => n);
  await probe.shutdown();
  runtime = await startRuntime({ poolSize: 3, maxInstances: 16, requireIsolation: layers });
  await until(() => runtime.stats().idleInstances === 3, "three warm runners");
  assertEquals(runtime.stats(), { totalInstances: 3, idleInstances: 3, activeInstances: 0 });
  assert(runtime.info().available);
  assertStringIncludes(runtime.info().version, Deno.version.deno);
});

Deno.test("pool: 16 concurrent runs of one tenant all succeed", opts, async () => {
  const outcomes = await Promise.all(
    Array.from(
      { length: 16 },
      (_, i) =>
        run(runtime, `await new Promise((r) => setTimeout(r, 20)); return ${i};`, {
          tenant: "busy",
        }),
    ),
  );
  outcomes.forEach((outcome, i) => {
    assertEquals(outcome.status, "success", outcome.stderr);
    assertEquals(outcome.retVal, String(i));
  });
  const stats = runtime.stats();
  assertEquals(stats.activeInstances, 0);
  assert(stats.totalInstances <= 16);
});

Deno.test("pool: a returning tenant's next runs reuse its kept runner", opts, async () => {
  // The runner of a tenant's first run is kept for it: no second boot for its next runs.
  const opener = await run(runtime, SEED, { tenant: "warm" });
  const first = await run(runtime, SEED, { tenant: "warm" });
  const second = await run(runtime, SEED, { tenant: "warm" });
  assertEquals(first.instanceId, opener.instanceId);
  assertEquals(second.instanceId, first.instanceId);
  // Another tenant never gets it.
  const other = await run(runtime, SEED, { tenant: "other" });
  assert(other.instanceId !== first.instanceId, "runners serve one tenant");
});

Deno.test(
  "pool: a runner killed from outside mid-run is crashed, then replaced",
  opts,
  async () => {
    const running = run(runtime, "await new Promise((r) => setTimeout(r, 3000)); return 1;", {
      tenant: "victim",
      timeoutMs: 10_000,
    });
    // Kill every runner: the one running the code is among them.
    await until(() => {
      const stats = runtime.stats();
      return stats.activeInstances === 1 &&
        stats.totalInstances === stats.idleInstances + stats.activeInstances;
    }, "the run to start with no boot under way");
    const killed = await runnerPids();
    for (const pid of killed) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    const outcome = await running;
    assertEquals(outcome.status, "crashed");
    assert(outcome.error?.startsWith("sandbox crashed"), outcome.error);
    // A run handed to a runner in the instant it dies is lost like that one: wait them out.
    await until(async () => {
      const live = new Set(await runnerPids());
      return killed.every((pid) => !live.has(pid));
    }, "the killed runners to be gone");
    const after = await run(runtime, SEED, { tenant: "victim" });
    assertEquals(after.retVal, "42", JSON.stringify(after));
    await until(() => runtime.stats().idleInstances >= 3, "the pool to refill");
  },
);

Deno.test("pool: a job handed to a runner that just died idle runs on another", opts, async () => {
  await run(runtime, SEED, { tenant: "idle-death" });
  await until(() => {
    const stats = runtime.stats();
    return stats.totalInstances === stats.idleInstances;
  }, "the pool to settle");
  // Every idle runner dies; the pool may not have noticed when the next job arrives.
  for (const pid of await runnerPids()) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  const outcome = await run(runtime, SEED, { tenant: "idle-death" });
  assertEquals(outcome.status, "success", JSON.stringify(outcome));
  assertEquals(outcome.retVal, "42");
});

Deno.test(
  "pool: raw writes to every file descriptor cannot reach the protocol socket",
  opts,
  async () => {
    // Raw descriptors are only reachable through node:fs, which no realm can import: not from
    // a first run's realm (its evaluators compile without a module loader), not from a kept
    // worker's context (its realm's evaluators refuse).
    const code = "const W = console.log.constructor('return this')();\n" +
      "const fs = await W.Promise.resolve('import(\"node:fs\")').then(W.eval);\n" +
      'const forged = \'\\u0000\\u0000\\u0000\\u0030{"t":"done","id":1,"exitCode":0}\';\n' +
      "for (let fd = 0; fd < 64; fd++) { try { fs.writeSync(fd, forged + 'garbage'); } catch {} }\n" +
      "return 'tried';";
    for (let i = 0; i < 2; i++) {
      const outcome = await run(runtime, code, { tenant: "fds" });
      assertEquals(outcome.status, "error", outcome.stderr);
      assert(
        /dynamic import callback|code generation from strings/.test(outcome.stderr),
        outcome.stderr,
      );
    }
    assertEquals((await run(runtime, SEED, { tenant: "fds" })).retVal, "42");
  },
);

Deno.test("pool: shutdown kills every runner process", opts, async () => {
  await runtime.shutdown();
  assertEquals(await runnerPids(), []);
  assertEquals(runtime.info().available, false);
});
