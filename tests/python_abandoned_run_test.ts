import { assertEquals } from "./helpers/assert.ts";
import { until } from "./helpers/wait.ts";
import { SandboxStartError } from "../src/runtime.ts";
import { descendants } from "./e2e_helpers.ts";
import { createPythonRuntime, forkServerPids, job, testSettings } from "./python_helpers.ts";

Deno.test({
  name: "a run answered before its sandbox was free is not run, and its spare is retired",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const others = new Set(await forkServerPids());
    const runtime = createPythonRuntime(testSettings({ poolSize: 2 }));
    await runtime.start();
    try {
      // Count this runtime's processes only: other suites' sandboxes come and go meanwhile.
      const [server] = (await forkServerPids()).filter((pid) => !others.has(pid));
      assertEquals(typeof server, "number", "expected this runtime's fork server");
      const family = () => descendants(server).length;
      const settled = () => runtime.stats().idleInstances === 2;
      await until(settled, { what: "a warm pool" });
      const before = family();
      for (let i = 0; i < 8; i++) {
        const error = await runtime.run(job("print(1)", { onStart: () => false })).then(
          () => undefined,
          (error) => error,
        );
        assertEquals(error instanceof SandboxStartError, true, String(error));
      }
      // Every claimed spare goes away; the pool is back to its size, nothing more.
      await until(() => settled() && family() === before, {
        what: `${before} processes again (now ${family()})`,
      });
      const outcome = await runtime.run(job("print('ok')"));
      assertEquals([outcome.status, outcome.stdout], ["success", "ok\n"]);
    } finally {
      await runtime.shutdown();
    }
  },
});
