/**
 * Hostile Python code, one attempt per test: each is contained, leaves no process behind,
 * and a normal run right after succeeds. Tests of what crosses from one run to another (of
 * another tenant, earlier or at the same time) are at the end.
 */

import assert from "node:assert/strict";
import { until } from "./helpers/wait.ts";
import { JAIL_LAYERS } from "../src/sandbox/jail/mod.ts";
import type { RunJob, RunOutcome, Runtime } from "../src/runtime.ts";
import {
  absentLayers,
  HttpRuntime,
  inProcessOnly,
  REMOTE_URL,
  remoteEnv,
  requiresLayer,
  skipInProcessCheck,
} from "./helpers/remote.ts";
import {
  assertNoProcessesLeft,
  createPythonRuntime,
  JAILER_MARK,
  jailerPids,
  job,
  listProcesses,
  newJailer,
  testSettings,
  UID_RANGE_SIZE,
  uidBase,
  zygotePids,
} from "./python_helpers.ts";

const settings = testSettings({ maxInstances: 8 });
/** With FAAS_TEST_URL set, the attacks go to that service over HTTP (tests/helpers/remote.ts). */
const runtime: Runtime = REMOTE_URL === undefined
  ? createPythonRuntime(settings)
  : new HttpRuntime(REMOTE_URL, ["python"], settings);
/** Marks a test that looks at this host's processes: it runs only in process. */
const local = inProcessOnly("an attack checked through this host's processes");
const opts = { sanitizeOps: false, sanitizeResources: false };
let jailer = 0;
let uids = 0;

async function assertHealthy(target: Runtime = runtime, first = uids): Promise<void> {
  const out = await target.run(job("print('still fine')\n1"));
  assert.equal(out.status, "success", out.stderr);
  assert.equal(out.stdout, "still fine\n");
  if (!skipInProcessCheck("the check for sandbox processes left behind")) {
    await assertNoProcessesLeft(first);
  }
}

/**
 * Runs `next` on the zygote that ran `earlier`: what a run could inherit, it inherits from
 * there. The pool hands out idle zygotes in a fixed order, so once every zygote is idle (but
 * the `busy` ones running other runs of the test), `holders` sleeping runs started just before
 * take the first ones: trying 0, 1, 2, ... holders reaches every zygote. A cheap `probe` finds
 * the count first when `next` is costly.
 */
async function onSameZygote(
  earlier: RunOutcome,
  next: RunJob,
  options: { probe?: RunJob; busy?: number } = {},
): Promise<RunOutcome> {
  const probe = options.probe ?? next;
  for (let holders = 0; holders < 16; holders++) {
    for (const attempt of probe === next ? [next] : [probe, next]) {
      await until(() => runtime.stats().activeInstances <= (options.busy ?? 0), {
        what: "every zygote idle with its next run child ready",
      });
      const held = Array.from(
        { length: holders },
        () => runtime.run(job("import time\ntime.sleep(0.3)")),
      );
      const out = await runtime.run({ ...attempt, taskId: `${attempt.taskId}-${holders}` });
      await Promise.all(held);
      if (out.instanceId !== earlier.instanceId) break;
      if (attempt === next) return out;
    }
  }
  throw new Error(`expected a run on zygote ${earlier.instanceId}`);
}

Deno.test({
  name: "attacks: runtime starts with every isolation layer on this host",
  ...opts,
  fn: async () => {
    const before = REMOTE_URL === undefined ? await jailerPids() : [];
    await runtime.start();
    if (REMOTE_URL === undefined) {
      jailer = await newJailer(before);
      uids = await uidBase(jailer);
    }
    const { isolation } = runtime.info();
    // A remote host may forbid a layer's OS operations; only those named (with the reason) by
    // the privilege probe run there are excused (tests/helpers/remote.ts).
    const excused = absentLayers();
    for (const layer of JAIL_LAYERS) {
      if (excused[layer] && isolation[layer] !== true) {
        console.log(`layer ${layer} not required on the remote host: ${excused[layer]}`);
        continue;
      }
      assert.equal(isolation[layer], true, `expected layer ${layer}`);
    }
  },
});

Deno.test({
  name: "attacks: the jail mounts nothing in the host's mount namespace",
  ...opts,
  ...local,
  fn: async () => {
    // The jailer runs in <work dir>/files/py; sandboxes' roots are mounted at <work dir>/root,
    // each in its own namespace.
    const workdir = (await Deno.readLink(`/proc/${jailer}/cwd`)).split("/").slice(0, 3).join("/");
    const mounts = (await Deno.readTextFile("/proc/self/mountinfo")).split("\n")
      .filter((line) => line.split(" ")[4]?.startsWith(`${workdir}/`));
    assert.deepEqual(mounts, []);
  },
});

Deno.test({
  name: "attack: reading /etc/shadow is refused",
  ...opts,
  fn: async () => {
    const out = await runtime.run(job("print(open('/etc/shadow').read())"));
    assert.equal(out.status, "error");
    // Not even there: the run's root holds a synthetic /etc.
    assert.match(out.stderr, /FileNotFoundError/);
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
  name: "attack: /proc/1 is the run itself, and its environment is not readable",
  ...opts,
  fn: async () => {
    const code = "import os\n[os.getpid(), open('/proc/1/cmdline').read().split('\\0')]";
    const out = await runtime.run(job(code));
    assert.equal(out.status, "success", out.stderr);
    const [pid, cmdline] = JSON.parse(out.retVal);
    assert.equal(pid, 1);
    assert.ok(cmdline.includes(JAILER_MARK), "the host's init is out of reach");
    const environ = await runtime.run(job("print(open('/proc/1/environ').read())"));
    assert.equal(environ.status, "error");
    assert.match(environ.stderr, /PermissionError/);
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: reading the service's environment through /proc is refused",
  ...opts,
  fn: async () => {
    // Remotely: the lowest pids of its host (pid 1 and the service in a container).
    const targets = REMOTE_URL === undefined
      ? [Deno.pid, jailer, ...await zygotePids(jailer)]
      : Array.from({ length: 16 }, (_, i) => i + 1);
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
      assert.ok(uid >= uids && uid < uids + UID_RANGE_SIZE, `uid ${uid}`);
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
  name: "attack: os.kill of the parent and of the zygotes does not reach them",
  ...opts,
  ...local,
  fn: async () => {
    const zygotes = (await zygotePids(jailer)).sort();
    const code = "import os, signal\nresults = []\n" +
      "for pid in input:\n" +
      "    try:\n" +
      "        os.kill(pid, signal.SIGKILL)\n" +
      "        results.append('killed')\n" +
      "    except OSError as e:\n" +
      "        results.append(type(e).__name__)\n" +
      "results";
    // Host pids are not even visible from the run's pid namespace.
    const out = await runtime.run(job(code, { input: [Deno.pid, jailer, ...zygotes] }));
    assert.equal(out.status, "success", out.stderr);
    assert.ok(!out.retVal.includes("killed"), out.retVal);
    assert.deepEqual((await zygotePids(jailer)).sort(), zygotes);
    const parent = await runtime.run(
      job("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"),
    );
    // In its pid namespace the run has no visible parent: getppid() is 0.
    assert.equal(parent.stderr, "");
    assert.deepEqual((await zygotePids(jailer)).sort(), zygotes);
    assert.deepEqual(await jailerPids(), [jailer]);
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
      "paths += glob.glob('/tmp/faas-*/**/secret.txt', recursive=True)\n" +
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

/** Python code that looks for a marker by its hash (so it never holds the marker itself). */
const MARKER_SEARCH = String.raw`import ctypes, gc, hashlib, re, sys
pattern = re.compile(rb"faasmark[0-9a-f]{32}")
wanted = {input["secret"]: "secret", input["control"]: "control"}
found = {}

def check(blob, where):
    for match in pattern.finditer(blob):
        name = wanted.get(hashlib.sha256(match.group()).hexdigest())
        if name:
            found.setdefault(name, set()).add(where)

def text(value):
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return repr(value).encode("utf-8", "backslashreplace")

control = input["control_a"] + input["control_b"]  # a marker this run makes: the search works
frame = sys._getframe()
while frame is not None:  # up to the frames of the process this run was forked from
    for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
        try:
            check(text(value), "frames")
        except Exception:
            pass
    frame = frame.f_back
for obj in gc.get_objects():
    try:
        for held in [obj, *gc.get_referents(obj)]:
            if isinstance(held, (str, bytes, bytearray)):
                check(text(held), "gc")
    except Exception:
        pass
with open("/proc/self/maps") as maps:
    regions = [line.split() for line in maps]
for fields in regions:  # every anonymous mapping: the heap, the stack, Python's arenas
    name = fields[5] if len(fields) > 5 else ""
    if not fields[1].startswith("r") or name not in ("", "[heap]", "[stack]"):
        continue
    start, end = (int(part, 16) for part in fields[0].split("-"))
    for offset in range(start, end, 1 << 24):
        size = min(end, offset + (1 << 24) + 64) - offset
        check(ctypes.string_at(offset, size), "memory")
{name: sorted(places) for name, places in found.items()}
`;

function marker(): string {
  return `faasmark${crypto.randomUUID().replaceAll("-", "")}`;
}

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test({
  name: "attack: a run finds nothing of an earlier run's code, input or output, nor of a " +
    "concurrent run's output, in its frames, its objects or its memory",
  ...opts,
  ...local,
  fn: async () => {
    const earlier = marker();
    const concurrent = marker();
    // Another tenant's run: the marker is in its code (twice), in its input and in its output.
    const victim = await runtime.run(job(
      `secret = ${JSON.stringify(earlier)}  # ${earlier}\n` +
        "print(secret, input['secret'])\nreturn_val(input['secret'])\ninput",
      { input: { secret: earlier }, tenant: "victim" },
    ));
    assert.equal(victim.status, "success", victim.stderr);
    assert.ok(victim.stdout.includes(earlier));
    // A third tenant prints its marker again and again while a search runs.
    const printing = runtime.run(job(
      "import ctypes, time\nctypes.CDLL(None).prctl(15, b'printer-run')\n" +
        `for i in range(160):\n    print(${JSON.stringify(concurrent)}, flush=True)\n` +
        "    time.sleep(0.05)",
      { tenant: "printer", timeoutMs: 20_000 },
    ));
    await until(async () => {
      for (const p of await listProcesses()) {
        const comm = await Deno.readTextFile(`/proc/${p.pid}/comm`).catch(() => "");
        if (comm.trim() === "printer-run") return true;
      }
      return false;
    }, { what: "the printing run" });
    const control = marker();
    const input = {
      secret: await sha256(concurrent),
      control: await sha256(control),
      control_a: control.slice(0, 20),
      control_b: control.slice(20),
    };
    const concurrentSearch = await runtime.run(job(MARKER_SEARCH, {
      input,
      tenant: "thief",
      timeoutMs: 30_000,
    }));
    assert.equal(concurrentSearch.status, "success", concurrentSearch.stderr);
    const foundConcurrent = JSON.parse(concurrentSearch.retVal);
    assert.deepEqual(foundConcurrent.control, ["frames", "gc", "memory"]);
    assert.equal(foundConcurrent.secret, undefined, "a concurrent run's output was found");
    const thief = await onSameZygote(
      victim,
      job(MARKER_SEARCH, {
        input: { ...input, secret: await sha256(earlier) },
        tenant: "thief",
        timeoutMs: 30_000,
      }),
      { probe: job("1", { tenant: "thief" }), busy: 1 },
    );
    assert.equal(thief.status, "success", thief.stderr);
    const found = JSON.parse(thief.retVal);
    assert.deepEqual(found.control, ["frames", "gc", "memory"], "the search finds what is there");
    assert.equal(found.secret, undefined, `an earlier run's marker found in ${found.secret}`);
    const printed = await printing;
    assert.equal(printed.status, "success", printed.stderr);
    assert.ok(printed.stdout.startsWith(concurrent));
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: forged, deep or oversized reports and garbage on stdout harm no other run " +
    "and no zygote",
  ...opts,
  ...local,
  fn: async () => {
    const zygotes = (await zygotePids(jailer)).sort();
    const victim = runtime.run(job(
      "import time\nfor i in range(20):\n    print('line', i, flush=True)\n    time.sleep(0.02)\n" +
        "'victim done'",
      { tenant: "victim" },
    ));
    const depth = 80_000;
    const attacks = [
      // A deep array, then exit before the real report is written.
      `import os\nos.write(4, b'[' * ${depth} + b']' * ${depth})\nos._exit(0)`,
      // A deep object, as the whole report.
      `import os\nos.write(4, b'{"a":' * ${depth} + b'1' + b'}' * ${depth})\nos._exit(0)`,
      // A report far over any bound, a forged one after it, and garbage on stdout that looks
      // like the zygote's frame headers.
      'import os, sys\nos.write(4, b\'{"kind": "ok", "explicit": "\' + b\'x\' * (3 << 20))\n' +
      'os.write(4, b\'{"kind": "memory", "exit_code": 0}\')\n' +
      "os.write(1, bytes(range(256)) * 4096 + b'\\x0b\\x01\\x00\\x00\\x00\\x00\\x00\\x01' * 1000)\n" +
      "sys.stdout.write('end\\n')",
    ];
    const outcomes = await Promise.all(
      attacks.map((code) => runtime.run(job(code, { tenant: "attacker" }))),
    );
    for (const out of outcomes) {
      assert.equal(out.status, "success", `${out.status}: ${out.error} ${out.stderr}`);
      assert.equal(out.retVal, "");
    }
    assert.ok(outcomes[2].stdout.endsWith("end\n"));
    assert.equal(outcomes[2].truncated, true);
    const victimOut = await victim;
    assert.equal(victimOut.status, "success");
    assert.equal(
      victimOut.stdout,
      Array.from({ length: 20 }, (_, i) => `line ${i}\n`).join(""),
    );
    assert.equal(victimOut.retVal, '"victim done"');
    // Every zygote lives on and serves the next run.
    for (const out of outcomes) {
      const next = await onSameZygote(out, job("'fine'"));
      assert.equal(next.retVal, '"fine"');
    }
    const now = await zygotePids(jailer);
    for (const pid of zygotes) assert.ok(now.includes(pid), `zygote ${pid} is gone`);
    await assertHealthy();
  },
});

const SHM = String.raw`import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
KEY, SIZE, IPC_CREAT = 0x5eed, 200 << 20, 0o1000
`;

Deno.test({
  name: "attack: SysV shared memory of one run is gone for the next, and no longer charged",
  ...opts,
  ...local,
  fn: async () => {
    const maker = await runtime.run(job(
      SHM + "shmid = libc.shmget(KEY, SIZE, IPC_CREAT | 0o666)\n" +
        "address = libc.shmat(shmid, None, 0)\n" +
        "ctypes.memset(address, 0x41, SIZE)  # every page counts against the slot's memory\n" +
        "ctypes.memmove(address, b'shm secret', 10)\n" +
        "[shmid >= 0, ctypes.string_at(address, 10).decode()]",
      { tenant: "maker" },
    ));
    assert.equal(maker.status, "success", maker.stderr);
    assert.equal(maker.retVal, '[true, "shm secret"]');
    // The next run in the same slot: no segment, and room for nearly the whole budget.
    const next = await onSameZygote(
      maker,
      job(
        SHM + "shmid = libc.shmget(KEY, 0, 0o666)\nmissing = ctypes.get_errno() == errno.ENOENT\n" +
          "segments = open('/proc/sysvipc/shm').read().splitlines()[1:]\n" +
          "block = bytearray(220 << 20)\n[shmid, missing, segments, len(block) >> 20]",
        { tenant: "next" },
      ),
    );
    assert.equal(next.status, "success", `${next.status}: ${next.error} ${next.stderr}`);
    assert.equal(next.retVal, "[-1, true, [], 220]");
    await assertHealthy();
  },
});

const LISTENER = String.raw`import socket, time
name = input
sockets = []
for address in ("\0" + name, "/tmp/" + name):
    server = socket.socket(socket.AF_UNIX)
    server.bind(address)
    server.listen(4)
    server.settimeout(0.02)
    sockets.append(server)
    client = socket.socket(socket.AF_UNIX)  # inside one run, the sockets work
    client.connect(address)
    client.sendall(b"self")
got = []
deadline = time.time() + 2.5
while time.time() < deadline:
    for server in sockets:
        try:
            conn, _ = server.accept()
            got.append(conn.recv(100).decode())
        except OSError:
            pass
got
`;

const CALLER = String.raw`import socket, time
name = input
reached = []
deadline = time.time() + 2
while time.time() < deadline:
    for address in ("\0" + name, "/tmp/" + name):
        try:
            client = socket.socket(socket.AF_UNIX)
            client.connect(address)
            client.sendall(b"hello")
            reached.append(address)
        except OSError:
            pass
    time.sleep(0.02)
reached
`;

Deno.test({
  name: "attack: concurrent runs cannot talk over an abstract or a /tmp unix socket",
  ...opts,
  fn: async () => {
    const name = `faas-${crypto.randomUUID()}`;
    const listening = runtime.run(job(LISTENER, { input: name, tenant: "a", timeoutMs: 10_000 }));
    const calling = runtime.run(job(CALLER, { input: name, tenant: "b", timeoutMs: 10_000 }));
    const [listener, caller] = await Promise.all([listening, calling]);
    assert.equal(listener.status, "success", listener.stderr);
    assert.equal(caller.status, "success", caller.stderr);
    assert.deepEqual(JSON.parse(listener.retVal), ["self", "self"]);
    assert.deepEqual(JSON.parse(caller.retVal), []);
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: a run sees no detail of the host: names, cgroups, paths, /etc",
  ...opts,
  ...local,
  fn: async () => {
    // What would give the host away: the jail's work dir, the service's dir, the host's name.
    const workdir = (await Deno.readLink(`/proc/${jailer}/cwd`)).split("/")[2];
    assert.match(workdir, /^faas-py-/);
    const secrets = { paths: [workdir, Deno.cwd()], host: Deno.hostname() };
    const code = String.raw`import os, re, socket, sys
found = []
host = re.compile(r"\b%s\b" % re.escape(input["host"]))
def look(where, content, with_host=False):
    for secret in input["paths"]:
        if secret in content:
            found.append(where)
    if with_host and host.search(content):
        found.append(where)
def read(path):
    try:
        return open(path, errors="replace").read().replace("\0", " ")
    except PermissionError:
        return ""  # not even its own: a run may not read its /proc/self/environ
# The system dirs and the interpreter's are read-only views of the host's own.
system = {"/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/proc", "/sys",
          os.path.realpath(sys.base_prefix)}
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in system]
    for name in dirs + files:
        look(os.path.join(root, name), os.path.join(root, name))
for path in ("/proc/self/cmdline", "/proc/self/environ", "/proc/self/mountinfo",
             "/proc/self/cgroup", "/etc/hosts", "/etc/hostname", "/etc/passwd"):
    look(path, read(path), with_host=True)
{"found": found, "hostname": socket.gethostname(), "uname": os.uname().nodename,
 "cgroup": open("/proc/self/cgroup").read().splitlines(),
 "etc": {name: open("/etc/" + name).read() for name in ("hostname", "hosts", "passwd")},
 "tmp": os.listdir("/tmp"), "root": sorted(os.listdir("/"))}
`;
    const out = await runtime.run(job(code, { input: secrets }));
    assert.equal(out.status, "success", out.stderr);
    const seen = JSON.parse(out.retVal);
    assert.deepEqual(seen.found, []);
    assert.equal(seen.hostname, "sandbox");
    assert.equal(seen.uname, "sandbox");
    for (const line of seen.cgroup) assert.match(line, /:\/$/, "cgroups show only /");
    assert.deepEqual(seen.etc, {
      hostname: "sandbox\n",
      hosts: "127.0.0.1 localhost sandbox\n::1 localhost\n",
      passwd: "root:x:0:0:root:/root:/bin/false\nsandbox:x:1000:1000::/tmp:/bin/false\n",
    });
    assert.deepEqual(seen.tmp, []);
    for (const name of seen.root) {
      assert.ok(
        [
          "bin",
          "dev",
          "etc",
          "lib",
          "lib32",
          "lib64",
          "libx32",
          "proc",
          "root",
          "sbin",
          "tmp",
          "usr",
        ]
          .includes(name),
        `unexpected /${name}`,
      );
    }
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: a 1e5-deep JSON input is a clear error, not a silent exit",
  ...opts,
  // Remotely the service refuses a body this deep with a 400 (http/json_body.ts).
  ...local,
  fn: async () => {
    let input: unknown = 1;
    for (let i = 0; i < 100_000; i++) input = [input];
    const out = await runtime.run(job("print('never')", { input }));
    assert.equal(out.status, "error");
    assert.equal(out.exitCode, 1);
    assert.equal(out.stdout, "");
    assert.match(out.stderr, /^RecursionError: input is nested too deeply/);
    await assertHealthy();
  },
});

Deno.test({
  name: "attack: 12 concurrent checks of 600 KiB programs parse in slots, no more at once " +
    "than the pool holds, each within its slot's memory",
  ...opts,
  ...local,
  fn: async () => {
    const settings = testSettings({ maxInstances: 2, poolSize: 1 });
    // The runtime's slots and the pool's bound (see mod.ts).
    const poolMax = settings.maxInstances + settings.poolSize + 8 - 4;
    const slotMemory = (settings.memoryLimitMb + 32 + 64) * 1024 * 1024;
    const before = await jailerPids();
    const small = createPythonRuntime(settings);
    await small.start();
    try {
      const first = await uidBase(await newJailer(before));
      // Shaped like the platform's programs: a dataset turn embedded as a literal, then code.
      const lines = Array.from({ length: 9_500 }, (_, i) => `v${i} = {"k": ${i}, "v": [1, 2]}`);
      const code = `turn = "${"x".repeat(300_000)}"\n` + lines.join("\n") + "\n";
      assert.ok(code.length > 580 * 1024 && code.length < 620 * 1024, `${code.length} bytes`);
      let sampling = true;
      let most = 0;
      const limits = new Set<number>();
      const sampler = (async () => {
        while (sampling) {
          const parsers = (await listProcesses()).filter((p) =>
            p.uid >= first && p.uid < first + UID_RANGE_SIZE && p.cmdline.includes(JAILER_MARK)
          );
          most = Math.max(most, parsers.length);
          for (const p of parsers) {
            const limit = await slotMemoryLimit(p.pid);
            // A process on its way out leaves its cgroup: only a live one's counts.
            if (limit !== undefined && await alive(p.pid)) limits.add(limit);
          }
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      })();
      const results = await Promise.all(
        Array.from({ length: 12 }, () => small.validate(code, "python")),
      );
      sampling = false;
      await sampler;
      for (const result of results) assert.deepEqual(result, { valid: true, error: null });
      assert.ok(most > 1, "checks ran at the same time");
      assert.ok(most <= poolMax, `${most} parsers at once, more than the pool's ${poolMax}`);
      assert.deepEqual([...limits], [slotMemory]);
    } finally {
      await small.shutdown();
    }
  },
});

/** True while `pid` runs (not a zombie, not exiting). */
async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    const flags = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[6]);
    const PF_EXITING = 0x4;
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2)) && (flags & PF_EXITING) === 0;
  } catch {
    return false;
  }
}

/** The memory limit of the cgroup `pid` is in, as the host sees it (undefined: none, gone). */
async function slotMemoryLimit(pid: number): Promise<number | undefined> {
  try {
    const lines = (await Deno.readTextFile(`/proc/${pid}/cgroup`)).split("\n");
    const v1 = lines.find((line) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(line));
    const path = v1 ? v1.split(":")[2] : lines.find((line) => line.startsWith("0::"))?.slice(3);
    const file = v1
      ? `/sys/fs/cgroup/memory${path}/memory.limit_in_bytes`
      : `/sys/fs/cgroup${path}/memory.max`;
    return Number((await Deno.readTextFile(file)).trim());
  } catch {
    return undefined;
  }
}

Deno.test({
  name: "attacks: runtime shuts down",
  ...opts,
  fn: async () => {
    await runtime.shutdown();
    if (skipInProcessCheck("the check that no jailer or sandbox process is left")) return;
    assert.deepEqual(await jailerPids(), []);
    const left = (await listProcesses()).filter((p) =>
      p.uid >= uids && p.uid < uids + UID_RANGE_SIZE
    );
    assert.deepEqual(left, []);
  },
});

for (const off of ["netns", "seccomp"]) {
  Deno.test({
    name: `attack: network stays unreachable with only ${off === "netns" ? "seccomp" : "netns"}`,
    ...opts,
    ...inProcessOnly("the attacks on a runtime with a layer switched off"),
    fn: async () => {
      const before = await jailerPids();
      const fallback = createPythonRuntime(testSettings({ poolSize: 1 }), { layersOff: [off] });
      await fallback.start();
      try {
        const first = await uidBase(await newJailer(before));
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
        await assertHealthy(fallback, first);
      } finally {
        await fallback.shutdown();
      }
    },
  });
}
