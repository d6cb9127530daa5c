/**
 * Hostile Python code, one attempt per test: each is contained, leaves no process behind,
 * and a normal run right after succeeds.
 */

import assert from "node:assert/strict";
import type { Runtime } from "../src/runtime.ts";
import { assertNoProcessesLeft, forkServerPids, job, testSettings } from "./python_helpers.ts";
import {
  absentLayers,
  HttpRuntime,
  inProcessOnly,
  REMOTE_URL,
  remoteEnv,
  requiresLayer,
  skipInProcessCheck,
} from "./helpers/remote.ts";

const UID_BASE = 1_502_000;
const settings = testSettings({ maxInstances: 8 });
/** With FAAS_TEST_URL set, the attacks go to that service over HTTP (tests/helpers/remote.ts). */
const runtime: Runtime = REMOTE_URL === undefined
  ? createPythonRuntime(settings, { uidBase: UID_BASE })
  : new HttpRuntime(REMOTE_URL, ["python"], settings);
const opts = { sanitizeOps: false, sanitizeResources: false };

async function assertHealthy(target: Runtime = runtime): Promise<void> {
  const out = await target.run(job("print('still fine')\n1"));
  assert.equal(out.status, "success", out.stderr);
  assert.equal(out.stdout, "still fine\n");
  if (!skipInProcessCheck("the check for sandbox processes left behind")) {
    await assertNoProcessesLeft(UID_BASE, 256);
  }
}

Deno.test({
  name: "attacks: runtime starts with every isolation layer on this host",
  ...opts,
  fn: async () => {
    await runtime.start();
    const { isolation } = runtime.info();
    const layers = [
      "rlimits",
      "uid",
      "netns",
      "pidns",
      "mountns",
      "rootfs",
      "cgroup",
      "seccomp",
      "tmpdir",
    ];
    // A remote host may forbid a layer's OS operations; only those named (with the reason) by
    // the privilege probe run there are excused (tests/helpers/remote.ts).
    const excused = absentLayers();
    for (const layer of layers) {
      if (excused[layer] && isolation[layer] !== true) {
        console.log(`layer ${layer} not required on the remote host: ${excused[layer]}`);
        continue;
      }
      assert.equal(isolation[layer], true, `expected layer ${layer}`);
    }
  },
});

Deno.test({
  name: "attack: reading /etc/shadow is refused",
  ...opts,
  fn: async () => {
    const out = await runtime.run(job("print(open('/etc/shadow').read())"));
    assert.equal(out.status, "error");
    assert.match(out.stderr, /PermissionError/);
    assert.equal(out.stdout, "");
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: world-readable host files outside the system dirs are not visible",
  ...opts,
  fn: async () => {
    const file = await Deno.makeTempFile({ dir: Deno.cwd(), prefix: ".faas_probe_" });
    await Deno.writeTextFile(file, "host secret");
    await Deno.chmod(file, 0o644);
    try {
      const code = "import os\nfound = []\nfor path in input:\n    try:\n" +
        "        found.append(open(path).read())\n    except OSError as e:\n" +
        "        found.append(type(e).__name__)\nfound";
      const out = await runtime.run(job(code, { input: [file, "/work", "/root/.bashrc"] }));
      assert.equal(out.status, "success", out.stderr);
      assert.ok(!out.retVal.includes("host secret"), out.retVal);
      assert.equal(JSON.parse(out.retVal)[0], "FileNotFoundError");
      await assertHealthy();
    } finally {
      await Deno.remove(file);
    }
  },
});

Deno.test({
  name: "attack: reading /proc/1/environ is refused",
  ...opts,
  fn: async () => {
    const out = await runtime.run(job("print(open('/proc/1/environ').read())"));
    assert.equal(out.status, "error");
    assert.match(out.stderr, /PermissionError/);
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: reading the service's environment through /proc is refused",
  ...opts,
  fn: async () => {
    const servers = await forkServerPids();
    const code = "import json, os\nfound = {}\n" +
      "for pid in input:\n" +
      "    if pid == os.getpid():\n" +
      "        continue\n" +
      "    for name in ('environ', 'cmdline', 'maps', 'mem'):\n" +
      "        try:\n" +
      "            found[f'{pid}/{name}'] = open(f'/proc/{pid}/{name}', 'rb').read(64).hex()\n" +
      "        except OSError as e:\n" +
      "            pass\n" +
      "print(json.dumps(sorted(found)))";
    // Remotely: the lowest pids of its host (pid 1 and the service in a container).
    const targets = REMOTE_URL === undefined
      ? [Deno.pid, ...servers]
      : Array.from({ length: 16 }, (_, i) => i + 1);
    const out = await runtime.run(job(code, { input: targets }));
    assert.equal(out.status, "success", out.stderr);
    const readable = JSON.parse(out.retVal || out.stdout) as string[];
    // cmdline is world-readable by design and holds no secret; environ/maps/mem must not be.
    assert.deepEqual(readable.filter((name) => !name.endsWith("/cmdline")), []);
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: connecting to loopback and to a port this process listens on fails",
  ...opts,
  fn: async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    let accepted = false;
    const accepting = listener.accept().then((conn) => {
      accepted = true;
      conn.close();
    }, () => {});
    const code = "import socket\nresults = []\n" +
      "for family, host in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):\n" +
      "    try:\n" +
      "        s = socket.socket(family, socket.SOCK_STREAM)\n" +
      "        s.settimeout(1)\n" +
      "        s.connect((host, input))\n" +
      "        results.append('connected')\n" +
      "    except OSError as e:\n" +
      "        results.append(type(e).__name__)\n" +
      "results";
    // Remotely: the service's own port on its loopback.
    const port = REMOTE_URL === undefined
      ? listener.addr.port
      : Number(remoteEnv().FAAS_PORT ?? 8000);
    const out = await runtime.run(job(code, { input: port }));
    listener.close();
    await accepting;
    assert.equal(out.status, "success", out.stderr);
    assert.ok(!out.retVal.includes("connected"), out.retVal);
    assert.equal(accepted, false);
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: vsock, netlink, packet and raw sockets cannot be opened",
  ...opts,
  fn: async () => {
    // AF_VSOCK reaches the hypervisor's host, which no network namespace hides.
    const code = "import socket\nresults = {}\n" +
      "for name, args in (('vsock', (40, socket.SOCK_STREAM)), ('netlink', (16, socket.SOCK_RAW)),\n" +
      "                   ('packet', (17, socket.SOCK_RAW)), ('raw', (2, socket.SOCK_RAW, 1))):\n" +
      "    try:\n        socket.socket(*args).close()\n        results[name] = 'opened'\n" +
      "    except OSError as e:\n        results[name] = type(e).__name__\n" +
      "results";
    const out = await runtime.run(job(code));
    assert.equal(out.status, "success", out.stderr);
    assert.ok(!out.retVal.includes("opened"), out.retVal);
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: the run sees only its own processes and an empty private /tmp",
  ...opts,
  fn: async () => {
    const code =
      "import os\n[sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), os.getcwd(), " +
      "os.listdir('/tmp'), os.listdir('/dev/shm')]";
    const out = await runtime.run(job(code));
    assert.equal(out.status, "success", out.stderr);
    assert.equal(out.retVal, '[[1], "/tmp", [], []]');
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: subprocesses run as the sandbox uid and cannot read protected files",
  ...opts,
  fn: async () => {
    const code = "import subprocess\n" +
      "r = subprocess.run(['cat', '/etc/shadow'], capture_output=True, text=True)\n" +
      "i = subprocess.run(['id', '-u'], capture_output=True, text=True)\n" +
      "[r.returncode, r.stdout, int(i.stdout)]";
    const out = await runtime.run(job(code));
    assert.equal(out.status, "success", out.stderr);
    const [code1, stdout, uid] = JSON.parse(out.retVal);
    assert.notEqual(code1, 0);
    assert.equal(stdout, "");
    if (REMOTE_URL === undefined) {
      assert.ok(uid >= UID_BASE && uid < UID_BASE + 256, `uid ${uid}`);
    } else {
      assert.ok(uid > 0, `uid ${uid}: the run shares the service's uid`);
    }
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: a fork bomb is capped by the process limit and killed",
  ...opts,
  fn: async () => {
    const code =
      "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass";
    const out = await runtime.run(job(code, { timeoutMs: 1_000 }));
    assert.equal(out.status, "timeout", out.error);
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: memory is capped for the run's whole process tree, not per process",
  ...opts,
  ...requiresLayer("cgroup"),
  fn: async () => {
    // Six processes of 150 MB each fit every per-process limit (256 MB) but not the run's.
    const code = "import os, time\npids = []\nfor i in range(6):\n    pid = os.fork()\n" +
      "    if pid == 0:\n        x = b'x' * (150 * 1024 * 1024)\n        time.sleep(0.5)\n" +
      "        os._exit(0)\n    pids.append(pid)\n" +
      "[os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]";
    const out = await runtime.run(job(code, { timeoutMs: 10_000 }));
    if (out.status === "success") {
      const codes = JSON.parse(out.retVal) as number[];
      assert.ok(codes.filter((c) => c === -9).length >= 3, out.retVal);
    } else {
      assert.equal(out.status, "memory_limit", out.error);
    }
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: a thread bomb is capped and killed",
  ...opts,
  fn: async () => {
    const code = "import threading, time\nn = 0\nwhile True:\n" +
      "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n    n += 1";
    const out = await runtime.run(job(code, { timeoutMs: 2_000 }));
    assert.ok(["error", "memory_limit"].includes(out.status), out.status);
    assert.match(out.stderr, /RuntimeError: can't start new thread|MemoryError/);
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: os.kill of the parent and of the fork server does not reach them",
  ...opts,
  fn: async () => {
    const [server] = await forkServerPids();
    // Remotely: the lowest pids of its host (pid 1 and the service in a container).
    const targets = REMOTE_URL === undefined
      ? [Deno.pid, server]
      : Array.from({ length: 16 }, (_, i) => i + 1);
    const code = "import os, signal\nresults = []\n" +
      "for pid in input:\n" +
      "    if pid == os.getpid():\n" +
      "        continue\n" +
      "    try:\n" +
      "        os.kill(pid, signal.SIGKILL)\n" +
      "        results.append('killed')\n" +
      "    except OSError as e:\n" +
      "        results.append(type(e).__name__)\n" +
      "results";
    // Host pids are not even visible from the run's pid namespace.
    const out = await runtime.run(job(code, { input: targets }));
    assert.equal(out.status, "success", out.stderr);
    assert.ok(!out.retVal.includes("killed"), out.retVal);
    const serverAlive = () => {
      if (!skipInProcessCheck("the check that the fork server survived")) {
        return forkServerPids().then((pids) => assert.deepEqual(pids, [server]));
      }
    };
    await serverAlive();
    const parent = await runtime.run(
      job("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"),
    );
    // In its pid namespace the run has no visible parent: getppid() is 0.
    assert.equal(parent.stderr, "");
    await serverAlive();
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: writing a 1 GB file stops at the file size limit and the file is removed",
  ...opts,
  fn: async () => {
    const code = "import os\nprint(os.getcwd(), flush=True)\n" +
      "with open('big.bin', 'wb') as f:\n" +
      "    chunk = b'\\0' * (1 << 20)\n" +
      "    for _ in range(1024):\n" +
      "        f.write(chunk)";
    const out = await runtime.run(job(code, { timeoutMs: 10_000 }));
    assert.equal(out.status, "error");
    assert.match(out.stderr, /File too large|No space left on device/);
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: a run cannot read another concurrent run's temp dir",
  ...opts,
  fn: async () => {
    const secret = crypto.randomUUID();
    const victim = runtime.run(job(
      "import os, time\nopen('secret.txt', 'w').write(input)\nprint(os.getcwd(), flush=True)\n" +
        "time.sleep(1.5)",
      { input: secret },
    ));
    // The thief looks where the victim's file could be: sibling run dirs, every /tmp, and
    // the cwd of every process it can see.
    const code = "import os, glob\nfound = []\n" +
      "paths = glob.glob('/tmp/**/secret.txt', recursive=True)\n" +
      "paths += glob.glob('/tmp/faas-python-*/*/secret.txt')\n" +
      "paths += glob.glob('/proc/*/cwd/secret.txt') + glob.glob('/proc/*/root/tmp/secret.txt')\n" +
      "for path in paths:\n" +
      "    try:\n        found.append(open(path).read())\n    except OSError:\n        pass\n" +
      "found";
    const thief = await runtime.run(job(code));
    const victimOut = await victim;
    assert.equal(thief.status, "success", thief.stderr);
    assert.equal(thief.retVal, "[]");
    assert.equal(victimOut.status, "success");
    assert.ok(!thief.stdout.includes(secret));
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: a ctypes segfault crashes only its own run",
  ...opts,
  fn: async () => {
    const out = await runtime.run(job("import ctypes\nctypes.memset(0, 1, 1)"));
    assert.equal(out.status, "crashed");
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: a memory bomb is stopped by the memory limit",
  ...opts,
  fn: async () => {
    const out = await runtime.run(job("s = 'x'\nwhile True:\n    s = s + s"));
    assert.equal(out.status, "memory_limit");
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: a CPU loop ignoring SIGXCPU is killed at its timeout",
  ...opts,
  fn: async () => {
    const code = "import signal\nsignal.signal(signal.SIGXCPU, lambda *a: None)\nwhile True: pass";
    const out = await runtime.run(job(code, { timeoutMs: 1_200 }));
    assert.equal(out.status, "timeout");
    await assertHealthy();
  },
});

Deno.test({
  name: "attacks: runtime shuts down",
  ...opts,
  fn: async () => {
    await runtime.shutdown();
    if (!skipInProcessCheck("the check that no fork server is left")) {
      assert.deepEqual(await forkServerPids(), []);
    }
  },
});

for (const off of ["netns", "seccomp"]) {
  Deno.test({
    name: `attack: network stays unreachable with only ${off === "netns" ? "seccomp" : "netns"}`,
    ...opts,
    ...inProcessOnly("the attacks on a runtime with a layer switched off"),
    fn: async () => {
      const fallback = createPythonRuntime(testSettings({ poolSize: 1 }), {
        uidBase: UID_BASE,
        layersOff: [off],
      });
      await fallback.start();
      try {
        assert.equal(fallback.info().isolation[off], false);
        const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        let accepted = false;
        const accepting = listener.accept().then((conn) => {
          accepted = true;
          conn.close();
        }, () => {});
        const code = "import socket\n" +
          "try:\n    s = socket.socket()\n    s.settimeout(1)\n" +
          "    s.connect(('127.0.0.1', input))\n    r = 'connected'\n" +
          "except OSError as e:\n    r = type(e).__name__\nr";
        const out = await fallback.run(job(code, { input: listener.addr.port }));
        listener.close();
        await accepting;
        assert.equal(out.status, "success", out.stderr);
        assert.notEqual(out.retVal, '"connected"');
        assert.equal(accepted, false);
        await assertHealthy(fallback);
      } finally {
        await fallback.shutdown();
      }
    },
  });
}
