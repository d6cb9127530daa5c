import { assertEquals } from "./helpers/assert.ts";
import { until } from "./helpers/wait.ts";
import { createPythonRuntime } from "./python_helpers.ts";
import { SandboxStartError } from "../src/runtime.ts";
import { descendants } from "./e2e_helpers.ts";
import { jailerPids, job, newJailer, testSettings } from "./python_helpers.ts";

Deno.test({
  name: "a run answered before its sandbox was free is not run, and its sandbox is kept",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const before = await jailerPids();
    const runtime = createPythonRuntime(testSettings({ poolSize: 2 }));
    await runtime.start();
    try {
      // Count this runtime's processes only: other suites' sandboxes come and go meanwhile.
      const jailer = await newJailer(before);
      const family = () => descendants(jailer).sort((a, b) => a - b).join(",");
      const settled = () => {
        const stats = runtime.stats();
        return stats.idleInstances >= 2 && stats.idleInstances === stats.totalInstances;
      };
      await until(settled, { what: "a warm pool" });
      const warm = family();
      for (let i = 0; i < 8; i++) {
        const error = await runtime.run(job("print(1)", { onStart: () => false })).then(
          () => undefined,
          (error) => error,
        );
        assertEquals(error instanceof SandboxStartError, true, String(error));
      }
      // No run took a zygote's waiting child: the very same processes are there, no more.
      assertEquals(family(), warm);
      const outcome = await runtime.run(job("print('ok')"));
      assertEquals([outcome.status, outcome.stdout], ["success", "ok\n"]);
    } finally {
      await runtime.shutdown();
    }
  },
});
