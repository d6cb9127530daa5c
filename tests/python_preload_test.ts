/**
 * Modules preloaded for Python runs (`FAAS_PYTHON_PRELOAD`): imported once by the jailer,
 * inherited by every zygote and run; a module that cannot be preloaded stops the start.
 */

import assert from "node:assert/strict";
import { createPythonRuntime } from "./python_helpers.ts";
import { jailerPids, job, testSettings } from "./python_helpers.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** Debian's interpreter, with Debian's numpy (python3-numpy) when installed. */
const SYSTEM_PYTHON = "/usr/bin/python3";

async function hasNumpy(python: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(python, {
      args: ["-I", "-c", "import numpy"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

Deno.test({
  name: "a preloaded module is in every run before it imports it",
  ...opts,
  fn: async () => {
    const runtime = createPythonRuntime(testSettings({ poolSize: 1 }), { preload: ["json"] });
    await runtime.start();
    try {
      const out = await runtime.run(job("import sys\n'json' in sys.modules"));
      assert.equal(out.status, "success", out.stderr);
      assert.equal(out.retVal, "true");
    } finally {
      await runtime.shutdown();
    }
  },
});

Deno.test({
  name: "a module that cannot be preloaded stops the start with one line naming it",
  ...opts,
  fn: async () => {
    const before = await jailerPids();
    const runtime = createPythonRuntime(testSettings({ poolSize: 1 }), {
      preload: ["json", "faas_no_such_module"],
    });
    const error = await runtime.start().then(() => undefined, (error: Error) => error);
    assert.ok(error instanceof Error, "start() must reject");
    assert.match(error.message, /cannot preload the python module 'faas_no_such_module'/);
    assert.ok(!error.message.includes("\n"), JSON.stringify(error.message));
    assert.equal(runtime.info().available, false);
    assert.deepEqual(await jailerPids(), before, "no jailer is left running");
  },
});

Deno.test({
  name: "with numpy preloaded, a run imports it for free and its values come back as JSON",
  ignore: !(await hasNumpy(SYSTEM_PYTHON)),
  ...opts,
  fn: async () => {
    const runtime = createPythonRuntime(testSettings({ poolSize: 1 }), {
      python: SYSTEM_PYTHON,
      preload: ["numpy"],
    });
    await runtime.start();
    try {
      const timed =
        "import sys, time\nbefore = 'numpy' in sys.modules\nstarted = time.perf_counter()\n" +
        "import numpy as np\n[before, (time.perf_counter() - started) * 1000]";
      const out = await runtime.run(job(timed));
      assert.equal(out.status, "success", out.stderr);
      const [preloaded, importMs] = JSON.parse(out.retVal);
      assert.equal(preloaded, true, "numpy is there before the run imports it");
      assert.ok(importMs < 5, `import numpy took ${importMs} ms: it was imported again`);
      const values: [string, string][] = [
        ["np.int64(3)", "3"],
        ["np.float32(1.5)", "1.5"],
        ["np.bool_(True)", "true"],
        ["np.arange(3)", "[0, 1, 2]"],
        ["np.array([[1, 2], [3, 4]])", "[[1, 2], [3, 4]]"],
        ["{'n': np.int64(1), 'v': np.array([0.5])}", '{"n": 1, "v": [0.5]}'],
      ];
      for (const [expression, json] of values) {
        const last = await runtime.run(job(`import numpy as np\n${expression}`));
        assert.equal(last.status, "success", last.stderr);
        assert.equal(last.retVal, json, expression);
        const explicit = await runtime.run(job(`import numpy as np\nreturn_val(${expression})`));
        assert.equal(explicit.retVal, json, `return_val(${expression})`);
      }
    } finally {
      await runtime.shutdown();
    }
  },
});

Deno.test({
  name: "without numpy preloaded, a run's import of it is a real import",
  ignore: !(await hasNumpy(SYSTEM_PYTHON)),
  ...opts,
  fn: async () => {
    const runtime = createPythonRuntime(testSettings({ poolSize: 1 }), { python: SYSTEM_PYTHON });
    await runtime.start();
    try {
      const out = await runtime.run(job(
        "import sys\nbefore = 'numpy' in sys.modules\n" +
          "import numpy\n[before, 'numpy' in sys.modules]",
      ));
      assert.equal(out.status, "success", out.stderr);
      assert.equal(out.retVal, "[false, true]");
    } finally {
      await runtime.shutdown();
    }
  },
});
