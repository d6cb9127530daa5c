/**
 * Limits of Python runs (time, memory, crashes) and supervision of the zygotes, proven on
 * real processes.
 */

import assert from "node:assert/strict";
import { createPythonRuntime } from "./python_helpers.ts";
import { SandboxStartError } from "../src/runtime.ts";
import {
  assertNoProcessesLeft,
  jailerPids,
  job,
  listProcesses,
  newJailer,
  testSettings,
  UID_RANGE_SIZE,
  uidBase,
  zygotePids,
} from "./python_helpers.ts";

const runtime = createPythonRuntime(testSettings());
const opts = { sanitizeOps: false, sanitizeResources: false };
let jailer = 0;
let uids = 0;

async function assertHealthy(): Promise<void> {
  const out = await runtime.run(job("print('still fine')\n1"));
  assert.equal(out.status, "success", out.stderr);
  assert.equal(out.stdout, "still fine\n");
  await assertNoProcessesLeft(uids);
}

/** A run that names its process (PR_SET_NAME) and sleeps, and the zygote that runs it. */
async function startNamedRun(
  name: string,
  timeoutMs = 30_000,
): Promise<{ outcome: ReturnType<typeof runtime.run>; zygote: number }> {
  const code =
    `import ctypes, time\nctypes.CDLL(None).prctl(15, ${JSON.stringify(name)}.encode())\n` +
    "print('x', flush=True)\ntime.sleep(30)";
  const outcome = runtime.run(job(code, { timeoutMs }));
  for (let i = 0; i < 100; i++) {
    for (const p of await listProcesses()) {
      const comm = await Deno.readTextFile(`/proc/${p.pid}/comm`).catch(() => "");
      if (comm.trim() === name) return { outcome, zygote: p.ppid };
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`expected a run named ${name} to start`);
}

Deno.test({
  name: "limits: runtime starts",
  ...opts,
  fn: async () => {
    const before = await jailerPids();
    await runtime.start();
    jailer = await newJailer(before);
    uids = await uidBase(jailer);
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
    assert.equal(out.status, "timeout");
    assert.equal(out.truncated, true);
    const dropped = `\n[… ${200_001 - 64 * 1024} bytes of output dropped …]\n`;
    assert.equal(out.stdout.length, 64 * 1024 + dropped.length);
    assert.ok(out.stdout.includes(dropped));
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
  name: "when a zygote dies, its run in flight answers crashed and other zygotes take over",
  ...opts,
  fn: async () => {
    const { outcome, zygote } = await startNamedRun("victim-run");
    assert.ok((await zygotePids(jailer)).includes(zygote), "the run is a zygote's child");
    Deno.kill(zygote, "SIGKILL");
    const out = await outcome;
    assert.equal(out.status, "crashed");
    assert.match(out.error ?? "", /^sandbox crashed: signal 9 \(SIGKILL\)$/);
    assert.equal(out.stdout, "x\n");
    await assertHealthy();
    assert.ok(!(await zygotePids(jailer)).includes(zygote), "the dead zygote is gone");
    assert.deepEqual(await jailerPids(), [jailer], "the jailer lives on");
  },
});

Deno.test({
  name: "a hung zygote: the run that overstayed is answered as a timeout, the zygote is ended",
  ...opts,
  fn: async () => {
    const { outcome, zygote } = await startNamedRun("stopped-run", 400);
    Deno.kill(zygote, "SIGSTOP");
    const started = performance.now();
    const out = await outcome;
    // The run slept past its timeout: a timeout, whether or not its zygote could still say so.
    assert.equal(out.status, "timeout");
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
    const deadline = Date.now() + 5_000;
    while ((await zygotePids(jailer)).includes(zygote)) {
      assert.ok(Date.now() < deadline, "the stopped zygote must be killed");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  },
});

Deno.test({
  name: "limits: runtime shuts down without leaving processes",
  ...opts,
  fn: async () => {
    await runtime.shutdown();
    assert.deepEqual(await jailerPids(), []);
    const left = (await listProcesses()).filter((p) =>
      p.uid >= uids && p.uid < uids + UID_RANGE_SIZE
    );
    assert.deepEqual(left, []);
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
    await assert.rejects(unknown.start(), /isolation layer\(s\) magic not available/);
    const broken = createPythonRuntime(testSettings(), { python: "/nonexistent/python" });
    await assert.rejects(broken.start(), /expected a python executable at "\/nonexistent\/python"/);
    assert.deepEqual(await jailerPids(), []);
  },
});

Deno.test({
  name: "without pid and mount namespaces, escaped processes are still killed and dirs private",
  ...opts,
  fn: async () => {
    const before = await jailerPids();
    const fallback = createPythonRuntime(testSettings({ poolSize: 1 }), {
      layersOff: ["pidns", "mountns"],
    });
    await fallback.start();
    try {
      const first = await uidBase(await newJailer(before));
      const { isolation } = fallback.info();
      assert.equal(isolation.pidns, false);
      assert.equal(isolation.mountns, false);
      const code = [
        "import os, subprocess, tempfile",
        "subprocess.Popen(['sleep', '60'], start_new_session=True)",
        "if os.fork() == 0:",
        "    os.setsid()",
        "    while True: pass",
        "open('mine.txt', 'w').write('x')",
        "[os.getcwd(), tempfile.gettempdir(), oct(os.stat('.').st_mode & 0o777)]",
      ].join("\n");
      const out = await fallback.run(job(code));
      assert.equal(out.status, "success", out.stderr);
      const [dir, tmp, mode] = JSON.parse(out.retVal) as string[];
      assert.match(dir, /^\/tmp\/faas-py-[^/]+\/runs\/s\d+$/);
      assert.equal(tmp, dir);
      assert.equal(mode, "0o700");
      await assertNoProcessesLeft(first);
      const timedOut = await fallback.run(job(code.replace(/\[os.getcwd.*$/, "while True: pass"), {
        timeoutMs: 300,
      }));
      assert.equal(timedOut.status, "timeout");
      await assertNoProcessesLeft(first);
      const thief = await fallback.run(job(
        `import os\nfound = []\nfor p in (${
          JSON.stringify(dir)
        }, os.path.dirname(os.getcwd())):\n` +
          "    try:\n        found += os.listdir(p)\n    except OSError:\n        pass\nfound",
      ));
      assert.equal(thief.status, "success", thief.stderr);
      assert.equal(thief.retVal, "[]", "a run finds nothing of an earlier run's dir");
      const ok = await fallback.run(job("1"));
      assert.equal(ok.status, "success");
    } finally {
      await fallback.shutdown();
    }
  },
});

Deno.test({
  name: "a starting jailer removes dead jails' work dirs and cgroups, never a live one's",
  ...opts,
  fn: async () => {
    // A jail that died without cleaning up: its work dir with an unlocked lock, its cgroup.
    const dead = await Deno.makeTempDir({ prefix: "faas-py-" });
    await Deno.writeTextFile(`${dead}/.lock`, "");
    const name = dead.slice(dead.lastIndexOf("/") + 1);
    const cgroup = await memoryCgroupParent();
    if (cgroup) await Deno.mkdir(`${cgroup}/${name}/s0`, { recursive: true });
    // A live jail, maybe of another service: its lock is held.
    const live = await Deno.makeTempDir({ prefix: "faas-py-" });
    const lock = await Deno.open(`${live}/.lock`, { create: true, write: true });
    await lock.lock(true);
    const other = createPythonRuntime(testSettings({ poolSize: 1 }));
    try {
      await other.start();
      await assert.rejects(Deno.stat(dead), Deno.errors.NotFound);
      if (cgroup) await assert.rejects(Deno.stat(`${cgroup}/${name}`), Deno.errors.NotFound);
      assert.ok((await Deno.stat(`${live}/.lock`)).isFile, "a live jail's dir was removed");
    } finally {
      await other.shutdown();
      lock.close();
      await Deno.remove(live, { recursive: true });
      await Deno.remove(dead, { recursive: true }).catch(() => {});
    }
  },
});

/** Where jails make their memory cgroups (cgroup v1: beside this process's own), if anywhere. */
async function memoryCgroupParent(): Promise<string | undefined> {
  const lines = (await Deno.readTextFile("/proc/self/cgroup")).split("\n");
  const v1 = lines.find((line) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(line));
  if (!v1) return undefined;
  const dir = `/sys/fs/cgroup/memory${v1.split(":")[2].replace(/\/$/, "")}`;
  try {
    return (await Deno.stat(dir)).isDirectory ? dir : undefined;
  } catch {
    return undefined;
  }
}
