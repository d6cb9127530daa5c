/**
 * The Python packages' own unit tests (faas_jail, faas_python; Python's unittest), run here so
 * that `deno task test` fails when they fail, and what of the packages reaches the sandboxes.
 */

import assert from "node:assert/strict";
import { createPythonRuntime } from "./python_helpers.ts";
import { jailerPids, newJailer, PYTHON, testSettings } from "./python_helpers.ts";

const JAIL = new URL("../src/sandbox/jail/", import.meta.url).pathname;
const PYTHON_SIDE = new URL("../src/sandbox/python/", import.meta.url).pathname;

/** Runs `python -m unittest discover` on a package; its exit code and its report. */
async function discover(
  packageDir: string,
  top: string,
  env: Record<string, string> = {},
): Promise<{ code: number; report: string; ran: number }> {
  const { code, stdout, stderr } = await new Deno.Command(PYTHON, {
    args: ["-m", "unittest", "discover", "-v", "-s", packageDir, "-t", top],
    env: { PYTHONDONTWRITEBYTECODE: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const report = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  const ran = Number(/^Ran (\d+) tests? in/m.exec(report)?.[1] ?? 0);
  return { code, report, ran };
}

Deno.test("the jail package's unit tests pass", async () => {
  const { code, report, ran } = await discover(`${JAIL}faas_jail`, JAIL);
  assert.equal(code, 0, report);
  assert.ok(ran >= 15, `expected the jail's tests to run, ${ran} ran:\n${report}`);
});

Deno.test("the python runtime package's unit tests pass", async () => {
  const { code, report, ran } = await discover(`${PYTHON_SIDE}faas_python`, PYTHON_SIDE, {
    PYTHONPATH: JAIL,
  });
  assert.equal(code, 0, report);
  assert.ok(ran >= 30, `expected the runtime's tests to run, ${ran} ran:\n${report}`);
});

Deno.test({
  name: "the sandboxes get the packages' modules and none of their tests",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const before = await jailerPids();
    const runtime = createPythonRuntime(testSettings({ poolSize: 1 }));
    await runtime.start();
    try {
      // The jailer runs from its copy of the packages (see jail/mod.ts).
      const copy = await Deno.readLink(`/proc/${await newJailer(before)}/cwd`);
      const names = async (dir: string) => {
        const found: string[] = [];
        for await (const entry of Deno.readDir(`${copy}/${dir}`)) found.push(entry.name);
        return found.sort();
      };
      assert.deepEqual(await names("faas_jail"), [
        "__init__.py",
        "__main__.py",
        "jail.py",
        "layers.py",
        "seccomp.py",
        "slots.py",
        "workdirs.py",
      ]);
      assert.deepEqual(await names("faas_python"), [
        "__init__.py",
        "executor.py",
        "frames.py",
        "prefault.py",
        "validation.py",
        "zygote.py",
      ]);
    } finally {
      await runtime.shutdown();
    }
  },
});
