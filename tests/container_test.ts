/**
 * The image, built, run with exactly the privileges deploy/compose.yaml grants, and attacked.
 *
 * Run as part of the suite, this file runs deploy/container_test.sh, which builds the image
 * with podman, runs the wire-contract suite and the JavaScript and Python attack suites
 * against containers of it, and then runs this file again against one of those containers
 * (FAAS_TEST_CONTAINER set) for the checks below:
 *
 * - the jail's OS operations under candidate privileges, measured by
 *   deploy/privileges_probe.py in containers of the image (the table in deploy/README.md);
 * - the isolation layers the container's `/health` lists, next to those of the service run
 *   directly as root on this machine, with the reason for every layer the container lacks;
 * - a SIGTERM while runs are in flight: every accepted run is answered, new runs get 503,
 *   and the container exits 0.
 *
 * Skipped, with the reason printed, where podman or root is missing; `.ci/run` installs
 * podman, so CI runs it.
 */

import assert from "node:assert/strict";
import { exists } from "./helpers/host.ts";
import { spawnService } from "./helpers/service_process.ts";
import { until } from "./helpers/wait.ts";
import { absentLayers, layersAbsentFrom, REMOTE_URL } from "./helpers/remote.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const SCRIPT = `${ROOT}deploy/container_test.sh`;
const PROBE = `${ROOT}deploy/privileges_probe.py`;
/** The container under test, named by deploy/container_test.sh. */
const CONTAINER = Deno.env.get("FAAS_TEST_CONTAINER");
const opts = { sanitizeOps: false, sanitizeResources: false };

function which(name: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((dir) => exists(`${dir}/${name}`));
}

function skipReason(): string | undefined {
  if (!which("podman")) {
    return "podman is not installed (Debian package podman; .ci/run installs it)";
  }
  if (Deno.uid() !== 0) return "needs root (rootful podman, debootstrap)";
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Without FAAS_TEST_CONTAINER: the whole container test.

if (CONTAINER === undefined) {
  const skip = skipReason();
  if (skip) console.warn(`container_test skipped: ${skip}`);
  Deno.test({
    name: "container: deploy/container_test.sh builds, runs and attacks the image",
    ignore: skip !== undefined,
    ...opts,
    async fn() {
      const status = await new Deno.Command(SCRIPT, {
        cwd: ROOT,
        stdin: "null",
        stdout: "inherit",
        stderr: "inherit",
      }).spawn().status;
      assert.equal(status.code, 0, "deploy/container_test.sh failed (its output is above)");
    },
  });
}

// ---------------------------------------------------------------------------------------------
// With FAAS_TEST_CONTAINER: checks of a running container, from deploy/container_test.sh.

/** Settings deploy/container_test.sh passes about the container under test. */
interface ContainerContext {
  url: string;
  name: string;
  image: string;
  /** podman run flags generated from compose.yaml (plus the podman override). */
  composeFlags: string[];
  /** Flags this host needs for any container (OCI runtime, limits it can grant). */
  hostFlags: string[];
}

function context(): ContainerContext {
  const json = (name: string) => JSON.parse(Deno.env.get(name) ?? "[]") as string[];
  assert(REMOTE_URL, "expected FAAS_TEST_URL");
  return {
    url: REMOTE_URL,
    name: CONTAINER!,
    image: Deno.env.get("FAAS_TEST_IMAGE") ?? "",
    composeFlags: json("FAAS_TEST_PODMAN_FLAGS"),
    hostFlags: json("FAAS_TEST_PODMAN_HOST_FLAGS"),
  };
}

async function output(cmd: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** The probe's answer: the context it ran in and each operation's result. */
interface ProbeResult {
  context: Record<string, string | number>;
  checks: Record<string, string>;
}

/** The jail's needs: the operations that must work under the chosen privileges. */
const JAIL_NEEDS = [
  "unshare mount",
  "unshare pid",
  "unshare ipc",
  "unshare net",
  "unshare uts",
  "setns net",
  "setns ipc",
  "mount tmpfs",
  "bind + remount ro",
  "mount proc (new pid ns)",
  "pivot_root",
  "chroot",
  "setresuid 60001",
  "kill other uid",
  "chown to run uid",
  "seccomp filter",
];

/** Without the capabilities and user namespace options: the flags every candidate shares. */
function withoutPrivileges(flags: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < flags.length; i++) {
    if (["--cap-add", "--userns"].includes(flags[i])) {
      i++;
      continue;
    }
    out.push(flags[i]);
  }
  return out;
}

/** The flags `name` with their values, alone. */
function flagValues(flags: string[], name: string): string[] {
  return flags.flatMap((flag, i) => flag === name ? [flag, flags[i + 1]] : []);
}

/** The resource limit flags alone. */
function limits(flags: string[]): string[] {
  return flagValues(flags, "--ulimit");
}

function caps(names: string[]): string[] {
  return names.flatMap((name) => ["--cap-add", name]);
}

const FIVE = ["SETUID", "SETGID", "KILL", "CHOWN", "DAC_OVERRIDE"];

if (CONTAINER !== undefined) {
  const ctx = context();

  Deno.test({
    name: "container: the jail's operations work under compose's privileges, and nothing more",
    ...opts,
    async fn() {
      const base = [...ctx.hostFlags, ...withoutPrivileges(ctx.composeFlags)];
      const userns = ctx.composeFlags[ctx.composeFlags.indexOf("--userns") + 1];
      assert(ctx.composeFlags.includes("--userns"), "expected compose to ask for a user namespace");
      const candidates: [string, string[] | "host"][] = [
        ["host root", "host"],
        ["5 caps", [...base, ...caps(FIVE)]],
        ["5+SYS_ADMIN", [...base, ...caps([...FIVE, "SYS_ADMIN"])]],
        ["userns, 5 caps", [...base, "--userns", userns, ...caps(FIVE)]],
        ["compose.yaml", [...ctx.hostFlags, ...ctx.composeFlags]],
        // As a Kubernetes pod with hostUsers: false: 65536 ids.
        ["userns 65536, compose caps", [
          ...base,
          "--userns",
          "auto:size=65536",
          ...flagValues(ctx.composeFlags, "--cap-add"),
        ]],
        ["privileged", [...ctx.hostFlags, ...limits(ctx.composeFlags), "--privileged"]],
      ];
      const results: Record<string, ProbeResult> = {};
      for (const [name, flags] of candidates) {
        const cmd = flags === "host" ? ["python3", PROBE, "--json"] : [
          "podman",
          "run",
          "--rm",
          ...flags,
          // Past the entrypoint, which refuses some of these candidates (the next test).
          "--entrypoint",
          "python3",
          ctx.image,
          "deploy/privileges_probe.py",
          "--json",
        ];
        const res = await output(cmd);
        assert.equal(res.code, 0, `${name}: ${res.stderr}`);
        results[name] = JSON.parse(res.stdout);
      }
      printTable(results);
      const chosen = results["compose.yaml"].checks;
      const failed = JAIL_NEEDS.filter((op) => !chosen[op].startsWith("yes"));
      assert.deepEqual(failed.map((op) => `${op}: ${chosen[op]}`), []);
      if (!chosen["cgroup subtree"].startsWith("yes")) {
        console.log(
          `NOT AVAILABLE under compose's privileges on this host: cgroup subtree ` +
            `(${chosen["cgroup subtree"]}); every candidate short of --privileged lacks it too: ${
              Object.entries(results).filter(([name]) =>
                name !== "privileged" && name !== "host root"
              )
                .every(([, r]) => !r.checks["cgroup subtree"].startsWith("yes"))
            }`,
        );
      }
      // What SYS_ADMIN in the host's user namespace would expose must stay out of reach.
      for (const exposure of ["exposed: new cgroup v1 hierarchy", "exposed: remount cgroup rw"]) {
        assert(!chosen[exposure].startsWith("yes"), `${exposure}: ${chosen[exposure]}`);
      }
      assert(
        results["5+SYS_ADMIN"].checks["exposed: new cgroup v1 hierarchy"].startsWith("yes") ||
          results["5+SYS_ADMIN"].context.cgroup === "v2",
        "control: SYS_ADMIN without a user namespace should reach a new cgroup v1 hierarchy",
      );
    },
  });

  Deno.test({
    name: "container: the image holds no setuid or setgid file",
    ...opts,
    async fn() {
      // Kubernetes cannot set no_new_privs next to SYS_ADMIN: nothing may raise a run at exec.
      const found = await output([
        "podman",
        "run",
        "--rm",
        ...ctx.hostFlags,
        ...ctx.composeFlags,
        "--entrypoint",
        "find",
        ctx.image,
        "/",
        "-xdev",
        "-perm",
        "/6000",
        "-type",
        "f",
      ]);
      assert.equal(found.code, 0, found.stderr);
      assert.deepEqual(found.stdout.trim().split("\n").filter(Boolean), []);
    },
  });

  Deno.test({
    name: "container: the entrypoint refuses SYS_ADMIN outside a user namespace",
    ...opts,
    async fn() {
      const base = [...ctx.hostFlags, ...withoutPrivileges(ctx.composeFlags)];
      const run = (flags: string[]) =>
        output(["podman", "run", "--rm", ...flags, ctx.image, "true"]);
      const refused = await run([...base, ...caps([...FIVE, "SYS_ADMIN"])]);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(
        refused.stderr,
        /refusing to start: .* CAP_SYS_ADMIN in the host's user namespace/,
      );
      const composed = await run([...ctx.hostFlags, ...ctx.composeFlags]);
      assert.equal(composed.code, 0, `compose's own privileges: ${composed.stderr}`);
      const five = await run([...base, ...caps(FIVE)]);
      assert.equal(five.code, 0, `without SYS_ADMIN: ${five.stderr}`);
    },
  });

  Deno.test({
    name:
      "container: /health lists the isolation layers of the service run here as root, or why not",
    ...opts,
    async fn() {
      const container = await isolation(ctx.url);
      await using host = spawnService("main.ts", { FAAS_POOL_SIZE: "1" });
      const hostUrl = await host.listening();
      await until(async () => (await fetch(`${hostUrl}/health`).then((r) => r.status)) === 200, {
        timeoutMs: 60_000,
        what: "the service run directly on this machine to become healthy",
      });
      const direct = await isolation(hostUrl);
      host.child.kill("SIGTERM");
      await host.child.status;
      const excused = absentLayers();
      const rows: string[][] = [["language", "layer", "host (root)", "container", "why"]];
      const unexplained: string[] = [];
      for (const language of Object.keys(direct).sort()) {
        const layers = new Set([
          ...Object.keys(direct[language]),
          ...Object.keys(container[language] ?? {}),
        ]);
        for (const layer of [...layers].sort()) {
          const here = direct[language][layer];
          const there = container[language]?.[layer];
          let why = "";
          if (here === true && there !== true) {
            why = excused[layer]
              ? `the container's privileges forbid it: ${excused[layer]}`
              : "UNEXPLAINED: the probe says its operations work in the container";
            if (!excused[layer]) unexplained.push(`${language} ${layer}`);
          }
          rows.push([language, layer, String(here ?? "-"), String(there ?? "-"), why]);
        }
      }
      console.log(formatRows(rows));
      assert.deepEqual(unexplained, [], "layers the container lacks for no reason the probe found");
    },
  });

  Deno.test({
    name: "container: SIGTERM with runs in flight answers every accepted run and exits 0",
    ...opts,
    async fn() {
      const sleepers: [string, string, string][] = [
        [
          "javascript",
          "await new Promise((r) => setTimeout(r, 2000)); console.log('js done');",
          "js done\n",
        ],
        ["python", "import time\ntime.sleep(2)\nprint('py done')", "py done\n"],
        [
          "javascript",
          "await new Promise((r) => setTimeout(r, 2500)); console.log('js done');",
          "js done\n",
        ],
        ["python", "import time\ntime.sleep(2.5)\nprint('py done')", "py done\n"],
      ];
      const inFlight = sleepers.map(([language, code, expected]) =>
        fetch(`${ctx.url}/run_code`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            language,
            code,
            timeout: 20_000,
            ext: { space_id: `drain-${language}` },
          }),
        }).then(async (res) => ({ status: res.status, body: await res.json(), expected }))
      );
      await until(async () => {
        const body = await (await fetch(`${ctx.url}/health`)).json();
        return body.scheduler.runningTasks >= sleepers.length;
      }, { timeoutMs: 20_000, what: `${sleepers.length} runs in flight in the container` });
      const kill = await output(["podman", "kill", "--signal", "SIGTERM", ctx.name]);
      assert.equal(kill.code, 0, kill.stderr);
      await until(async () => {
        try {
          return (await fetch(`${ctx.url}/health`)).status === 503;
        } catch {
          return true; // already stopped listening
        }
      }, { timeoutMs: 10_000, what: "/health to turn 503 after SIGTERM" });
      const late = await fetch(`${ctx.url}/run_code`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ language: "python", code: "1" }),
      }).then((res) => res.status, () => "refused");
      assert(late === 503 || late === "refused", `a run sent while draining got ${late}`);
      const answers = await Promise.all(inFlight);
      for (const answer of answers) {
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        assert.equal(answer.body.metadata.status, "success", JSON.stringify(answer.body));
        assert.equal(answer.body.output.stdout, answer.expected);
      }
      const waited = await output(["podman", "wait", ctx.name]);
      assert.equal(waited.stdout.trim(), "0", `exit code ${waited.stdout}${waited.stderr}`);
      console.log(
        `drain: ${answers.length} runs in flight at SIGTERM, ${answers.length} answered 200, ` +
          `a new run got ${late}, exit code 0`,
      );
    },
  });
}

/** `sandbox.<language>.isolation` of a service's /health. */
async function isolation(url: string): Promise<Record<string, Record<string, boolean>>> {
  const body = await (await fetch(`${url}/health`)).json();
  const sandbox = (body.sandbox ?? {}) as Record<string, { isolation: Record<string, boolean> }>;
  return Object.fromEntries(Object.entries(sandbox).map(([lang, s]) => [lang, s.isolation]));
}

function printTable(results: Record<string, ProbeResult>): void {
  const names = Object.keys(results);
  const operations = Object.keys(results[names[0]].checks);
  const rows = [["operation", ...names]];
  for (const op of operations) {
    rows.push([
      op,
      ...names.map((name) => results[name].checks[op].startsWith("yes") ? "yes" : "no"),
    ]);
  }
  rows.push(["(uid_map)", ...names.map((name) => String(results[name].context.uid_map))]);
  console.log(formatRows(rows));
  const chosen = results["compose.yaml"];
  const reasons = Object.entries(chosen.checks).filter(([, result]) => !result.startsWith("yes"));
  for (const [op, result] of reasons) console.log(`compose.yaml: ${op}: ${result}`);
  console.log(
    `layers the service cannot have under compose.yaml: ${
      JSON.stringify(layersAbsentFrom(chosen.checks))
    }`,
  );
}

function formatRows(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => (row[i] ?? "").length)));
  return rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd())
    .join("\n");
}
