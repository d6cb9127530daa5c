/**
 * The jail, read from /proc: a live JS runner and a live Python run are each in every layer this
 * host allows (own uid, pid/mount/ipc/uts/net/cgroup namespaces, a minimal read-only root with a
 * private /tmp, a cgroup of their slot, rlimits, seccomp with no_new_privs, a clean
 * environment); a layer left off is reported off, and refused when required; two jails never
 * hand out the same uids.
 */

import { assert, assertEquals, assertStringIncludes } from "./helpers/assert.ts";
import { createJavaScriptRuntime } from "../src/sandbox/javascript/mod.ts";
import { createPythonRuntime } from "../src/sandbox/python/mod.ts";
import type { Runtime } from "../src/runtime.ts";
import { run, runnerPids, testSettings } from "./javascript_helpers.ts";
import { JAIL_LAYERS } from "../src/sandbox/jail/mod.ts";
import { OWN_DENO_DIR } from "../src/sandbox/javascript/code_cache.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const PYTHON = Deno.env.get("FAAS_PYTHON") ?? "python3";
const root = Deno.uid() === 0;

function status(pid: number): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of Deno.readTextFileSync(`/proc/${pid}/status`).split("\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1).trim();
  }
  return fields;
}

function namespace(pid: number | "self", kind: string): string {
  return Deno.readLinkSync(`/proc/${pid}/ns/${kind}`);
}

function environment(pid: number): string[] {
  return Deno.readTextFileSync(`/proc/${pid}/environ`).split("\0").filter(Boolean);
}

/** Names at the top of the process's root, as it sees them. */
function rootNames(pid: number): string[] {
  return [...Deno.readDirSync(`/proc/${pid}/root/`)].map((entry) => entry.name).sort();
}

/** The mount of `path` in the process's mount namespace: its options and its fs type. */
function mountOf(pid: number, path: string): { options: string; type: string } | undefined {
  for (const line of Deno.readTextFileSync(`/proc/${pid}/mountinfo`).split("\n")) {
    const fields = line.split(" ");
    if (fields[4] !== path) continue;
    const dash = fields.indexOf("-");
    return { options: fields[5], type: fields[dash + 1] };
  }
  return undefined;
}

function limit(pid: number, name: string): string {
  const line = Deno.readTextFileSync(`/proc/${pid}/limits`).split("\n")
    .find((item) => item.startsWith(name));
  return line?.slice(26).trim().split(/\s+/)[0] ?? "";
}

/** Asserts every jail layer on `pid`, a process of a sandbox. */
function assertJailed(pid: number, what: string): void {
  const fields = status(pid);
  const [uid] = fields.Uid.split(/\s+/).map(Number);
  assert(uid >= 10_000, `${what}: runs as its own uid, not ${uid}`);
  assertEquals(fields.Groups, "", `${what}: no supplementary groups`);
  assertEquals(fields.CapEff, "0000000000000000", `${what}: no capability`);
  assertEquals(fields.NoNewPrivs, "1", `${what}: no_new_privs`);
  assertEquals(fields.Seccomp, "2", `${what}: a seccomp filter`);
  for (const kind of ["pid", "mnt", "ipc", "uts", "net", "cgroup"]) {
    assert(namespace(pid, kind) !== namespace("self", kind), `${what}: own ${kind} namespace`);
  }
  const names = rootNames(pid);
  for (const name of ["dev", "etc", "proc", "tmp", "usr"]) {
    assert(names.includes(name), `${what}: ${name} in its root (${names})`);
  }
  for (const name of ["home", "work", "var", "opt", "run", "mnt", "srv", "boot"]) {
    assert(!names.includes(name), `${what}: no ${name} in its root (${names})`);
  }
  // What the host keeps private is not there (an interpreter under /root may be, alone).
  for (const path of ["/etc/shadow", "/root/.bashrc", "/root/.ssh", "/etc/hosts.allow"]) {
    let present = true;
    try {
      Deno.statSync(`/proc/${pid}/root${path}`);
    } catch {
      present = false;
    }
    assert(!present, `${what}: ${path} is visible`);
  }
  assertStringIncludes(mountOf(pid, "/")!.options, "ro");
  assertEquals(mountOf(pid, "/tmp")?.type, "tmpfs", `${what}: a private /tmp`);
  assertEquals(mountOf(pid, "/proc")?.type, "proc", `${what}: its own /proc`);
  // Its /proc shows its own pid namespace: a few processes, not the host's hundreds.
  const pids = [...Deno.readDirSync(`/proc/${pid}/root/proc`)].filter((e) => /^\d+$/.test(e.name));
  assert(pids.length < 10, `${what}: sees ${pids.length} processes`);
  assertEquals(
    Deno.readTextFileSync(`/proc/${pid}/root/etc/hostname`),
    "sandbox\n",
    `${what}: synthetic /etc`,
  );
  const cgroups = Deno.readTextFileSync(`/proc/${pid}/cgroup`);
  assertStringIncludes(cgroups, "/faas-");
  assertEquals(limit(pid, "Max core file size"), "0");
  assert(Number(limit(pid, "Max open files")) <= 256, `${what}: few descriptors`);
  for (const variable of environment(pid)) {
    assert(!variable.startsWith("FAAS_") && !variable.startsWith("HOME="), `${what}: ${variable}`);
  }
}

/**
 * A runner's Deno cache: its own copy of the databases (only it may write them, and they go
 * with it), the compiled modules shared and read-only.
 */
function assertOwnCache(pid: number, what: string): void {
  const environ = environment(pid);
  assert(environ.includes(`DENO_DIR=${OWN_DENO_DIR}`), `${what}: ${environ}`);
  const [uid] = status(pid).Uid.split(/\s+/).map(Number);
  const own = Deno.statSync(`/proc/${pid}/root${OWN_DENO_DIR}/v8_code_cache_v2`);
  assertEquals(own.uid, uid, `${what}: its code cache is its own`);
  assertEquals(mountOf(pid, "/tmp")?.type, "tmpfs", `${what}: in its private /tmp`);
  assertStringIncludes(mountOf(pid, "/sandbox/files")!.options, "ro", `${what}: shared, read-only`);
}

Deno.test({
  name: "jail: a live JS runner is in every layer",
  ignore: !root,
  ...opts,
  async fn() {
    const runtime = createJavaScriptRuntime(testSettings({ poolSize: 1 }), { python: PYTHON });
    await runtime.start();
    try {
      const layers = runtime.info().isolation;
      for (const name of JAIL_LAYERS) assertEquals(layers[name], true, name);
      const running = run(runtime, "await new Promise((r) => setTimeout(r, 1500)); return 1;", {
        tenant: "jail",
      });
      const pids = await runnerPids();
      assert(pids.length > 0, "runners are up");
      let checked = 0;
      for (const pid of pids) {
        try {
          Deno.statSync(`/proc/${pid}`);
        } catch {
          continue; // a spare recycled meanwhile
        }
        assertJailed(pid, `runner ${pid}`);
        assertOwnCache(pid, `runner ${pid}`);
        checked++;
      }
      assert(checked > 0, "a live runner was checked");
      assertEquals((await running).retVal, "1");
      // Two jails claim different uid ranges: runners of two services never share a uid.
      const other = createJavaScriptRuntime(testSettings({ poolSize: 1 }), { python: PYTHON });
      await other.start();
      try {
        const mine = new Set(pids.map((pid) => status(pid).Uid.split(/\s+/)[0]));
        const theirs = (await runnerPids()).filter((pid) => !pids.includes(pid))
          .map((pid) => status(pid).Uid.split(/\s+/)[0]);
        assert(theirs.length > 0, "the other service's runners are up");
        for (const uid of theirs) assert(!mine.has(uid), `uid ${uid} handed out twice`);
      } finally {
        await other.shutdown();
      }
    } finally {
      await runtime.shutdown();
    }
  },
});

Deno.test({
  name: "jail: a live Python run is in every layer",
  ignore: !root,
  ...opts,
  async fn() {
    const runtime = createPythonRuntime(testSettings({ poolSize: 1 }), { python: PYTHON });
    await runtime.start();
    try {
      const layers = runtime.info().isolation;
      for (const name of JAIL_LAYERS) assertEquals(layers[name], true, name);
      const marker = `jail-marker-${crypto.randomUUID()}`;
      const running = runtime.run({
        taskId: "jail",
        language: "python",
        code: `import sys, time\nsys.argv.append(${JSON.stringify(marker)})\n` +
          "print('up', flush=True)\ntime.sleep(2)\n1",
        timeoutMs: 10_000,
      });
      running.catch(() => {}); // awaited below; a failed check must not leave it unhandled
      // The run is a grandchild of the jailer (jailer → zygote → run); find it by its uid and
      // its parent, a zygote that is itself a jailed process.
      let found: number | undefined;
      for (let i = 0; i < 200 && found === undefined; i++) {
        for (const entry of Deno.readDirSync("/proc")) {
          if (!/^\d+$/.test(entry.name)) continue;
          try {
            const pid = Number(entry.name);
            const fields = status(pid);
            if (Number(fields.Uid.split(/\s+/)[0]) < 10_000 || fields.State.startsWith("Z")) {
              continue;
            }
            const parent = Number(fields.PPid);
            if (Deno.readTextFileSync(`/proc/${parent}/cmdline`).includes("faas_jail")) {
              if (Deno.readTextFileSync(`/proc/${pid}/cmdline`).includes("faas_jail")) {
                // A run child keeps its zygote's command line; the one that sleeps is the run.
                if (Deno.readTextFileSync(`/proc/${pid}/wchan`) !== "pipe_read") found = pid;
              }
            }
          } catch {
            // gone meanwhile
          }
        }
        if (found === undefined) await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert(found !== undefined, "found the run's process");
      assertJailed(found, "python run");
      // Its zygote (which never execs) holds no namespace of the jailer's: neither the template
      // root nor another slot's network.
      const zygote = Number(status(found).PPid);
      const namespaces = [...Deno.readDirSync(`/proc/${zygote}/fd`)]
        .map((entry) => Deno.readLinkSync(`/proc/${zygote}/fd/${entry.name}`))
        .filter((target) => /^(mnt|net|pid|ipc|uts):/.test(target));
      assertEquals(namespaces, [], "the zygote's namespace descriptors");
      const outcome = await running;
      assertEquals(outcome.status, "success", outcome.stderr);
    } finally {
      await runtime.shutdown();
    }
  },
});

Deno.test({
  name: "jail: a layer left off is reported off, and a required one refuses the start",
  ignore: !root,
  ...opts,
  async fn() {
    const factories: [string, (required: string[]) => Runtime][] = [
      [
        "javascript",
        (required) =>
          createJavaScriptRuntime(testSettings({ poolSize: 0, requireIsolation: required }), {
            python: PYTHON,
            layersOff: ["netns", "ipcns"],
          }),
      ],
      [
        "python",
        (required) =>
          createPythonRuntime(testSettings({ poolSize: 0, requireIsolation: required }), {
            python: PYTHON,
            layersOff: ["netns", "ipcns"],
          }),
      ],
    ];
    for (const [language, create] of factories) {
      const runtime = create([]);
      await runtime.start();
      try {
        const layers = runtime.info().isolation;
        assertEquals([layers.netns, layers.ipcns], [false, false], language);
        assertEquals([layers.uid, layers.pidns, layers.seccomp], [true, true, true], language);
        // Without a network namespace of its own a run still reaches no network: the seccomp
        // filter (Python) and the worker's permissions (JS) stand in for it.
        const code = language === "python"
          ? "import socket\nsocket.create_connection(('127.0.0.1', 1), timeout=1)"
          : "await Deno.connect({hostname: '127.0.0.1', port: 1})";
        const outcome = await runtime.run({
          taskId: "off",
          language: language === "python" ? "python" : "javascript",
          code,
          timeoutMs: 5_000,
        });
        assertEquals(outcome.status, "error", outcome.stderr);
        assertStringIncludes(
          outcome.stderr,
          language === "python" ? "Operation not permitted" : "NotCapable",
        );
      } finally {
        await runtime.shutdown();
      }
      let message = "";
      try {
        await create(["netns"]).start();
      } catch (error) {
        message = String(error);
      }
      assertStringIncludes(message, "netns");
    }
  },
});
