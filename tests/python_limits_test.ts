/**
 * Limits of Python runs (time, memory, crashes) and supervision of the fork server, proven
 * on real processes.
 */

import assert from "node:assert/strict";
import { SandboxStartError } from "../src/runtime.ts";
import {
  assertNoProcessesLeft,
  createPythonRuntime,
  forkServerPids,
  job,
  testSettings,
} from "./python_helpers.ts";

const UID_BASE = 1_501_000;
const runtime = createPythonRuntime(testSettings(), { uidBase: UID_BASE });
const opts = { sanitizeOps: false, sanitizeResources: false };

async function assertHealthy(): Promise<void> {
  const out = await runtime.run(job("print('still fine')\n1"));
  assert.equal(out.status, "success", out.stderr);
  assert.equal(out.stdout, "still fine\n");
  await assertNoProcessesLeft(UID_BASE, 256);
}

Deno.test({
  name: "limits: runtime starts",
  ...opts,
  fn: async () => {
    await runtime.start();
  },
});

Deno.test({
  name: "a run past its timeout is killed and answered as timeout with what it printed",
  ...opts,
  fn: async () => {
    const started = performance.now();
    const out = await runtime.run(
      job("import sys\nprint('started', flush=True)\nwhile True: pass", { timeoutMs: 300 }),
    );
    const elapsed = performance.now() - started;
    assert.equal(out.status, "timeout");
    assert.equal(out.error, "execution timed out after 300 ms");
    assert.equal(out.stdout, "started\n");
    assert.ok(elapsed < 300 + 2_000, `answered after ${elapsed} ms`);
    await assertHealthy();
  },
});

Deno.test({
  name: "a timeout keeps what print() wrote without flush, from a busy loop and from a sleep",
  ...opts,
  fn: async () => {
    const busy = await runtime.run(job("print('before')\nwhile True: pass", { timeoutMs: 400 }));
    assert.equal(busy.status, "timeout");
    assert.equal(busy.stdout, "before\n");
    const asleep = await runtime.run(
      job("import time\nprint('napping')\ntime.sleep(60)", { timeoutMs: 400 }),
    );
    assert.equal(asleep.status, "timeout");
    assert.equal(asleep.stdout, "napping\n");
    await assertHealthy();
  },
});

Deno.test({
  name: "a timeout keeps stderr and stdout written without a newline",
  ...opts,
  fn: async () => {
    const code = "import sys\nsys.stderr.write('err-no-newline')\nprint('out', end='')\n" +
      "while True: pass";
    const out = await runtime.run(job(code, { timeoutMs: 400 }));
    assert.equal(out.status, "timeout");
    assert.equal(out.error, "execution timed out after 400 ms");
    assert.equal(out.stderr, "err-no-newline");
    assert.equal(out.stdout, "out");
    await assertHealthy();
  },
});

Deno.test({
  name: "a run that blocks the stop signal, or is stuck in C code, still ends at its timeout",
  ...opts,
  fn: async () => {
    const blocking = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" +
      "signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals))\nwhile True: pass";
    const inC = "print('lost in C')\nsum(range(10**12))";
    for (const code of [blocking, inC]) {
      const started = performance.now();
      const out = await runtime.run(job(code, { timeoutMs: 400 }));
      const elapsed = performance.now() - started;
      assert.equal(out.status, "timeout", code);
      assert.ok(elapsed < 400 + 2_000, `answered after ${elapsed} ms`);
    }
    await assertHealthy();
  },
});

Deno.test({
  name: "a return value past the output cap is output_limit, as in JavaScript",
  ...opts,
  fn: async () => {
    // testSettings() caps output at 64 KiB.
    for (const code of ["'y' * (64 * 1024 + 1)", "return_val('y' * (64 * 1024 + 1))"]) {
      const out = await runtime.run(job(`print('before')\n${code}`));
      assert.equal(out.status, "output_limit", code);
      assert.equal(out.truncated, true);
      assert.equal(out.retVal, "");
      assert.equal(out.stdout, "before\n");
      assert.equal(out.error, "output limit of 65536 bytes exceeded");
    }
    const fits = await runtime.run(job("'y' * (64 * 1024 - 2)"));
    assert.equal(fits.status, "success");
    assert.equal(fits.retVal.length, 64 * 1024);
    await assertHealthy();
  },
});

Deno.test({
  name: "output flushed at a timeout is still capped and marked truncated",
  ...opts,
  fn: async () => {
    // A buffer far larger than the cap, flushed only when the timeout stops the run.
    const code = "import io, sys, time\n" +
      "sys.stdout = io.TextIOWrapper(open(1, 'wb', buffering=1 << 20, closefd=False))\n" +
      "print('y' * 200_000)\ntime.sleep(60)";
    const out = await runtime.run(job(code, { timeoutMs: 400 }));
    assert.equal(out.truncated, true);
    assert.equal(out.stdout.length, 64 * 1024);
    await assertHealthy();
  },
});

Deno.test({
  name: "a timeout kills the whole process tree, daemonized grandchildren too",
  ...opts,
  fn: async () => {
    const code = [
      "import subprocess, os, time",
      "subprocess.Popen(['sleep', '60'])",
      "subprocess.Popen(['sleep', '61'], start_new_session=True)",
      "if os.fork() == 0:",
      "    os.setsid()",
      "    while True: pass",
      "time.sleep(60)",
    ].join("\n");
    const out = await runtime.run(job(code, { timeoutMs: 500 }));
    assert.equal(out.status, "timeout");
    await assertHealthy();
  },
});

Deno.test({
  name: "background processes left by a finished run are killed",
  ...opts,
  fn: async () => {
    const code = "import subprocess\nsubprocess.Popen(['sleep', '60'], start_new_session=True)\n1";
    const out = await runtime.run(job(code));
    assert.equal(out.status, "success", out.stderr);
    await assertHealthy();
  },
});

Deno.test({
  name: "a memory bomb ends with memory_limit",
  ...opts,
  fn: async () => {
    const out = await runtime.run(job("x = []\nwhile True:\n    x.append(' ' * 10_000_000)"));
    assert.equal(out.status, "memory_limit");
    assert.match(out.error ?? "", /memory limit of 256 MiB exceeded/);
    assert.match(out.stderr, /MemoryError/);
    const big = await runtime.run(job("b = bytearray(1 << 30)"));
    assert.equal(big.status, "memory_limit");
    await assertHealthy();
  },
});

Deno.test({
  name: "a CPU loop that ignores SIGXCPU still ends at its timeout",
  ...opts,
  fn: async () => {
    const code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass";
    const out = await runtime.run(job(code, { timeoutMs: 1_500 }));
    assert.equal(out.status, "timeout");
    await assertHealthy();
  },
});

Deno.test({
  name: "a ctypes segfault is answered as crashed",
  ...opts,
  fn: async () => {
    const out = await runtime.run(
      job("import ctypes\nprint('before', flush=True)\nctypes.string_at(0)"),
    );
    assert.equal(out.status, "crashed");
    assert.match(out.error ?? "", /SIGSEGV/);
    assert.equal(out.stdout, "before\n");
    await assertHealthy();
  },
});

Deno.test({
  name: "when the fork server dies, runs in flight answer crashed and a new server takes over",
  ...opts,
  fn: async () => {
    const [before] = await forkServerPids();
    assert.ok(before, "expected a running fork server");
    const running = runtime.run(job("import time\nprint('x', flush=True)\ntime.sleep(30)"));
    // Wait until the run is under way: the server has a running child.
    const deadline = Date.now() + 5_000;
    while (runtime.stats().activeInstances === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    Deno.kill(before, "SIGKILL");
    const out = await running;
    assert.equal(out.status, "crashed");
    assert.match(out.error ?? "", /fork server/);
    let healthy = false;
    for (let attempt = 0; attempt < 3 && !healthy; attempt++) {
      try {
        await assertHealthy();
        healthy = true;
      } catch (error) {
        if (!(error instanceof SandboxStartError)) throw error;
      }
    }
    assert.ok(healthy);
    const [after] = await forkServerPids();
    assert.ok(after && after !== before);
    await waitUntil(
      async () => (await cgroupsOfServer(before)).length === 0,
      "old cgroups removed",
    );
  },
});

/** The memory/pids cgroup dirs a fork server with this pid created (cgroup v1 hosts only). */
async function cgroupsOfServer(pid: number): Promise<string[]> {
  const found: string[] = [];
  for (const line of (await Deno.readTextFile("/proc/self/cgroup")).split("\n")) {
    const [, controllers = "", path = ""] = line.split(":");
    for (const controller of controllers.split(",")) {
      if (controller !== "memory" && controller !== "pids") continue;
      const parent = `/sys/fs/cgroup/${controller}${path.replace(/\/$/, "")}`;
      try {
        for await (const entry of Deno.readDir(parent)) {
          if (entry.name.startsWith(`faas-python-${pid}-`)) found.push(`${parent}/${entry.name}`);
        }
      } catch {
        // no such hierarchy here
      }
    }
  }
  return found;
}

Deno.test({
  name: "a hung fork server: the run answers crashed right after its timeout, server replaced",
  ...opts,
  fn: async () => {
    const [before] = await forkServerPids();
    const running = runtime.run(job("import time\ntime.sleep(30)", { timeoutMs: 400 }));
    await new Promise((resolve) => setTimeout(resolve, 100));
    Deno.kill(before, "SIGSTOP");
    const started = performance.now();
    const out = await running;
    assert.equal(out.status, "crashed");
    assert.match(out.error ?? "", /fork server did not end the run at its 400 ms timeout/);
    assert.ok(performance.now() - started < 2_000);
    let healthy = false;
    for (let attempt = 0; attempt < 3 && !healthy; attempt++) {
      try {
        await assertHealthy();
        healthy = true;
      } catch (error) {
        if (!(error instanceof SandboxStartError)) throw error;
      }
    }
    assert.ok(healthy);
    const pids = await forkServerPids();
    assert.ok(!pids.includes(before), "the stopped server must be killed");
  },
});

Deno.test({
  name: "limits: runtime shuts down without leaving processes",
  ...opts,
  fn: async () => {
    await runtime.shutdown();
    assert.deepEqual(await forkServerPids(), []);
    await assertNoProcessesLeft(UID_BASE, 256);
  },
});

Deno.test({
  name: "start() rejects when a required isolation layer is missing or unknown",
  ...opts,
  fn: async () => {
    const missing = createPythonRuntime(testSettings({ requireIsolation: ["netns"] }), {
      layersOff: ["netns"],
    });
    await assert.rejects(missing.start(), /netns/);
    const unknown = createPythonRuntime(testSettings({ requireIsolation: ["magic"] }));
    await assert.rejects(unknown.start(), /unknown isolation layer "magic"/);
    const broken = createPythonRuntime(testSettings(), { python: "/nonexistent/python" });
    await assert.rejects(broken.start(), /python/);
    assert.deepEqual(await forkServerPids(), []);
  },
});

Deno.test({
  name: "without pid and mount namespaces, escaped processes are still killed and dirs private",
  ...opts,
  fn: async () => {
    const fallback = createPythonRuntime(testSettings({ poolSize: 1 }), {
      uidBase: UID_BASE,
      layersOff: ["pidns", "mountns"],
    });
    await fallback.start();
    try {
      const { isolation } = fallback.info();
      assert.equal(isolation.pidns, false);
      assert.equal(isolation.mountns, false);
      const code = [
        "import os, subprocess",
        "subprocess.Popen(['sleep', '60'], start_new_session=True)",
        "if os.fork() == 0:",
        "    os.setsid()",
        "    while True: pass",
        "open('mine.txt', 'w').write('x')",
        "os.getcwd()",
      ].join("\n");
      const out = await fallback.run(job(code));
      assert.equal(out.status, "success", out.stderr);
      const dir = JSON.parse(out.retVal) as string;
      assert.match(dir, /^\/tmp\/faas-python-\d+-[0-9a-f]+\/r\d+$/);
      await assertNoProcessesLeft(UID_BASE, 256);
      const timedOut = await fallback.run(job(code.replace("os.getcwd()", "while True: pass"), {
        timeoutMs: 300,
      }));
      assert.equal(timedOut.status, "timeout");
      await assertNoProcessesLeft(UID_BASE, 256);
      const thief = await fallback.run(job(
        `import os\nfound = []\nfor p in (${
          JSON.stringify(dir)
        }, os.path.dirname(os.getcwd())):\n` +
          "    try:\n        found += os.listdir(p)\n    except OSError:\n        pass\nfound",
      ));
      assert.equal(thief.retVal, "[]");
      const ok = await fallback.run(job("1"));
      assert.equal(ok.status, "success");
      await assert.rejects(Deno.stat(dir), Deno.errors.NotFound);
    } finally {
      await fallback.shutdown();
    }
  },
});

Deno.test({
  name: "a starting fork server removes dead servers' run dirs but never a live one's",
  ...opts,
  fn: async () => {
    const dead = await Deno.makeTempDir({ dir: "/tmp", prefix: "faas-python-1-" });
    await Deno.writeTextFile(`${dead}/.lock`, "");
    // A live server in another pid namespace: its pid is invisible here, its lock is held.
    const live = await Deno.makeTempDir({ dir: "/tmp", prefix: "faas-python-1-" });
    const lock = await Deno.open(`${live}/.lock`, { create: true, write: true });
    await lock.lock(true);
    const other = createPythonRuntime(testSettings({ poolSize: 1 }), { uidBase: UID_BASE + 512 });
    try {
      await other.start();
      await waitForRemoval(dead);
      assert.ok((await Deno.stat(live)).isDirectory, "a live server's dir was removed");
    } finally {
      await other.shutdown();
      lock.close();
      await Deno.remove(live, { recursive: true });
    }
  },
});

/** Stale dirs are removed by a background child: wait for it, bounded. */
function waitForRemoval(path: string): Promise<void> {
  return waitUntil(async () => {
    try {
      await Deno.stat(path);
      return false;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return true;
      throw error;
    }
  }, `${path} removed`);
}

/** Polls a condition that no event announces (cleanup done by another process), bounded. */
async function waitUntil(condition: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.fail(`timed out waiting until ${what}`);
}
