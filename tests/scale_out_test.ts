/**
 * Scale-out: three instances of the service behind Debian's nginx on loopback.
 * A client that retries exactly like the Go client sends a steady stream of
 * runs; mid-stream one instance is SIGTERMed (it must drain: answer every run
 * it had accepted, then exit 0) and another SIGKILLed. Every request must end
 * 200 with the right output.
 *
 * Each instance runs as pid 1 of its own pid namespace with a private /tmp (as in
 * a container), so killing it also ends every sandbox process it started and drops
 * its temp files: nothing is left behind.
 */

import assert from "node:assert/strict";
import { exists, hasCapability, watchStdout } from "./helpers/host.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const NGINX = ["/usr/sbin/nginx", "/usr/bin/nginx"].find(exists);
const HAS_MAIN = exists(`${ROOT}main.ts`);
const IS_ROOT = Deno.uid() === 0;
/**
 * Root with its full capability set (CAP_SYS_ADMIN, bit 21), needed to build namespaces; not
 * the case when this suite itself runs under deploy/run-restricted.sh.
 */
const FULL_ROOT = IS_ROOT && hasCapability(21);
/** What the service says when no runtime is registered for the enabled languages. */
const NO_RUNTIME = "no runtime is built into this service";

/** Runs in the stream; bounded so the test stops by itself. */
const STREAM_REQUESTS = 48;
const STREAM_CONCURRENCY = 4;
/** How long one run sleeps inside the sandbox, so instances have work in flight. */
const RUN_SLEEP_MS = 150;
/** The test gives up past this, whatever state it is in. */
const DEADLINE_MS = 150_000;
/** Go client: 1 attempt + 3 retries, 1 s apart, 30 s per attempt. */
const CLIENT_ATTEMPTS = 4;
const CLIENT_RETRY_DELAY_MS = 1000;
const CLIENT_ATTEMPT_TIMEOUT_MS = 30_000;

function skipReason(): string | undefined {
  if (!NGINX) return "nginx is not installed (Debian package nginx)";
  if (!HAS_MAIN) return "main.ts is not here yet: nothing to scale out";
  if (!FULL_ROOT) return "needs root with all capabilities to give each instance a pid namespace";
  if (!exists("/usr/bin/unshare")) return "unshare (util-linux) is missing";
  return undefined;
}

const SKIP = skipReason();
if (SKIP) console.warn(`scale_out_test skipped: ${SKIP}`);

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function deadlineReached(signal: AbortSignal): Promise<never> {
  const reached = new Promise<never>((_, reject) => {
    const fail = () => reject(new Error("the test deadline passed"));
    if (signal.aborted) fail();
    else signal.addEventListener("abort", fail, { once: true });
  });
  reached.catch(() => {}); // only meaningful inside a race
  return reached;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// Instances.

interface Instance {
  name: string;
  /** Resolves to the bound port from the "listening" log line. */
  ready: Promise<number>;
  port: number;
  /** The `unshare` process; its exit status is the service's. */
  process: Deno.ChildProcess;
  status: Promise<Deno.CommandStatus>;
  exited: boolean;
  log: Promise<string>;
}

function startInstance(name: string, env: Record<string, string>): Instance {
  const process = new Deno.Command("unshare", {
    args: [
      "--pid",
      "--fork",
      "--mount-proc",
      "--kill-child",
      "--",
      "sh",
      "-c",
      // A private /tmp, as in a container: whatever the instance leaves there, even when it is
      // SIGKILLed, goes away with its mount namespace. A checkout under /tmp is carried over
      // into it. exec keeps the service pid 1.
      [
        'case "$PWD" in /tmp/*) mount --bind "$PWD" /mnt || exit 1 ;; esac',
        "mount -t tmpfs -o size=512m,mode=1777 tmpfs /tmp || exit 1",
        'case "$PWD" in /tmp/*) mkdir -p "$PWD" && mount --move /mnt "$PWD" && cd "$PWD" || exit 1 ;; esac',
        'exec "$@"',
      ].join("\n"),
      "sh",
      Deno.execPath(),
      "run",
      "--allow-all",
      "--no-prompt",
      "main.ts",
    ],
    cwd: ROOT,
    env: { ...env, FAAS_PORT: "0", FAAS_HOST: "127.0.0.1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = watchStdout(process.stdout);
  const instance: Instance = {
    name,
    ready: stdout.url.then((url) => Number(new URL(url).port)),
    port: 0,
    process,
    status: Promise.resolve({} as Deno.CommandStatus),
    exited: false,
    log: Promise.all([stdout.text, new Response(process.stderr).text()])
      .then(([out, err]) => out + err),
  };
  instance.ready.then((port) => (instance.port = port), () => {});
  instance.status = process.status.then((s) => {
    instance.exited = true;
    return s;
  });
  return instance;
}

/** Host pid of the service itself: the child of `unshare --fork`, pid 1 in its namespace. */
async function servicePid(instance: Instance): Promise<number> {
  const dir = `/proc/${instance.process.pid}/task`;
  for await (const task of Deno.readDir(dir)) {
    const children = (await Deno.readTextFile(`${dir}/${task.name}/children`)).trim();
    if (children) return Number(children.split(/\s+/)[0]);
  }
  throw new Error(`${instance.name}: expected unshare to have forked the service`);
}

async function health(port: number): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${port}/health`, {
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text);
  } catch {
    // a non-JSON answer is simply not healthy
  }
  return { status: res.status, body };
}

/**
 * Polls /health until it answers 200 "healthy": listening precedes healthy only by the pool's
 * prewarm, for which no event is exposed (bounded).
 */
async function waitHealthy(port: number, what: string, isDead: () => boolean): Promise<void> {
  const until = Date.now() + 60_000;
  while (Date.now() < until && !isDead()) {
    try {
      const { status, body } = await health(port);
      if (status === 200 && body.status === "healthy") return;
    } catch {
      // not listening yet
    }
    await delay(200);
  }
  throw new Error(`${what} never became healthy on port ${port}`);
}

// ---------------------------------------------------------------------------------------------
// nginx.

interface Nginx {
  port: number;
  process: Deno.ChildProcess;
  status: Promise<Deno.CommandStatus>;
  accessLog: string;
}

async function startNginx(prefix: string, upstreams: number[]): Promise<Nginx> {
  const port = freePort();
  const accessLog = `${prefix}/access.log`;
  for (const dir of ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]) {
    await Deno.mkdir(`${prefix}/${dir}`, { recursive: true });
  }
  // POST is not idempotent for nginx; a 503 from a draining instance means "not run", so it is
  // safe (and quicker than the client's 1 s back-off) to pass it on: hence non_idempotent.
  const conf = `
daemon off;
master_process on;
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 512; }
http {
  log_format upstreams '$status|$upstream_addr|$upstream_status|$upstream_bytes_sent';
  access_log ${accessLog} upstreams;
  client_body_temp_path ${prefix}/client_body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  client_max_body_size 2m;
  upstream faas {
${upstreams.map((p) => `    server 127.0.0.1:${p} max_fails=1 fail_timeout=10s;`).join("\n")}
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://faas;
      proxy_next_upstream error timeout http_502 http_503 non_idempotent;
      proxy_next_upstream_tries 3;
      proxy_connect_timeout 2s;
      proxy_read_timeout 35s;
    }
  }
}
`;
  await Deno.writeTextFile(`${prefix}/nginx.conf`, conf);
  const process = new Deno.Command(NGINX!, {
    args: ["-p", prefix, "-c", `${prefix}/nginx.conf`, "-e", `${prefix}/error.log`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let exited = false;
  const status = process.status.then((s) => {
    exited = true;
    return s;
  });
  await waitHealthy(port, "nginx", () => exited);
  return { port, process, status, accessLog };
}

// ---------------------------------------------------------------------------------------------
// The client: retries exactly like the Go client.

interface Outcome {
  ok: boolean;
  attempts: number;
  stdout?: string;
  retVal?: string;
  lastProblem?: string;
  /** HTTP status of the last attempt; undefined after a transport error. */
  lastStatus?: number;
}

/** One logical request: any non-200, transport error or undecodable body is retried. */
async function runCode(
  base: string,
  body: Record<string, unknown>,
  options: { attempts?: number } = {},
): Promise<Outcome> {
  const attempts = options.attempts ?? CLIENT_ATTEMPTS;
  let lastProblem = "";
  let lastStatus: number | undefined;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (attempt > 1) await delay(CLIENT_RETRY_DELAY_MS);
    try {
      const res = await fetch(`${base}/run_code`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(CLIENT_ATTEMPT_TIMEOUT_MS),
      });
      const text = await res.text();
      lastStatus = res.status;
      if (res.status !== 200) {
        lastProblem = `HTTP ${res.status}: ${text.slice(0, 200)}`;
        continue;
      }
      const parsed = JSON.parse(text);
      const { stdout, stderr, ret_val } = parsed.output ?? {};
      if (typeof stdout !== "string" || typeof stderr !== "string" || typeof ret_val !== "string") {
        lastProblem = `undecodable output: ${text.slice(0, 200)}`;
        continue;
      }
      if (parsed.error) return { ok: false, attempts: attempt, lastProblem: parsed.error };
      return { ok: true, attempts: attempt, stdout, retVal: ret_val };
    } catch (err) {
      lastProblem = `transport: ${(err as Error).message}`;
      lastStatus = undefined;
    }
  }
  return { ok: false, attempts, lastProblem, lastStatus };
}

function job(n: number, language: "javascript" | "python", sleepMs = RUN_SLEEP_MS) {
  const code = language === "javascript"
    ? `await new Promise((r) => setTimeout(r, ${sleepMs}));\nconsole.log("req ${n}");\nreturn ${n} * 2;`
    : `import time\ntime.sleep(${sleepMs / 1000})\nprint("req ${n}")\n${n} * 2`;
  return {
    body: { language, code, timeout: 10_000, ext: { space_id: `tenant-${n % 3}` } },
    stdout: `req ${n}\n`,
    retVal: String(n * 2),
  };
}

function expectRight(outcome: Outcome, expected: { stdout: string; retVal: string }, what: string) {
  assert.ok(
    outcome.ok,
    `${what}: failed after ${outcome.attempts} attempts: ${outcome.lastProblem}`,
  );
  assert.equal(outcome.stdout, expected.stdout, `${what}: stdout`);
  assert.equal(outcome.retVal, expected.retVal, `${what}: ret_val`);
}

// ---------------------------------------------------------------------------------------------

Deno.test({
  name: "three instances behind nginx: SIGTERM drains, SIGKILL is absorbed, every request ends 200",
  ignore: SKIP !== undefined,
  sanitizeOps: false, // fetch bodies cancelled by the deadline may settle after the test
  async fn() {
    const deadline = AbortSignal.timeout(DEADLINE_MS);
    const prefix = await Deno.makeTempDir({ prefix: "faas-scale-" });
    const env = {
      FAAS_POOL_SIZE: "2",
      FAAS_MAX_INSTANCES: "4",
      FAAS_DRAIN_TIMEOUT: "20000",
    };
    const instances = ["a", "b", "c"].map((name) => startInstance(name, env));
    const [drained, killed] = instances;
    let nginx: Nginx | undefined;
    try {
      try {
        await Promise.all(instances.map(async (i) => {
          const port = await Promise.race([i.ready, deadlineReached(deadline)]);
          await waitHealthy(port, `instance ${i.name}`, () => i.exited);
        }));
      } catch (error) {
        const log = await drained.log;
        if (log.includes(NO_RUNTIME)) {
          console.warn(`scale_out_test skipped: this build has no language runtime yet`);
          return;
        }
        throw new Error(`${(error as Error).message}\n${log.slice(-2000)}`);
      }
      const languages = ((await health(drained.port)).body.languages ?? {}) as Record<
        string,
        { available?: boolean }
      >;
      const withPython = languages.python?.available === true;
      if (!withPython) console.warn("python is not available on these instances: JS runs only");
      nginx = await startNginx(prefix, instances.map((i) => i.port));
      const base = `http://127.0.0.1:${nginx.port}`;

      // The steady stream, through nginx.
      let next = 0;
      let done = 0;
      const results: { n: number; outcome: Outcome; expected: ReturnType<typeof job> }[] = [];
      const doneAt = (count: number) => {
        const { promise, resolve } = Promise.withResolvers<void>();
        const check = () => (done >= count || deadline.aborted ? resolve() : setTimeout(check, 20));
        check();
        return promise;
      };
      const worker = async () => {
        while (next < STREAM_REQUESTS && !deadline.aborted) {
          const n = next++;
          const expected = job(n, withPython && n % 2 === 1 ? "python" : "javascript");
          const outcome = await runCode(base, expected.body);
          results.push({ n, outcome, expected });
          done++;
        }
      };
      const stream = Promise.all(Array.from({ length: STREAM_CONCURRENCY }, worker));

      // Runs sent straight to the instance about to drain, and accepted before SIGTERM.
      await doneAt(STREAM_REQUESTS / 4);
      const direct = [1001, 1002].map((n) => job(n, "javascript", 1500));
      const directRuns = direct.map((d) =>
        runCode(`http://127.0.0.1:${drained.port}`, d.body, { attempts: 1 })
      );
      await waitBusy(drained.port);
      const drainedPid = await servicePid(drained);
      Deno.kill(drainedPid, "SIGTERM");

      await doneAt(STREAM_REQUESTS / 2);
      Deno.kill(await servicePid(killed), "SIGKILL");

      await stream;
      assert.ok(!deadline.aborted, `stream did not finish within ${DEADLINE_MS} ms`);
      // A run the draining instance had accepted must come back 200 with its output; one that
      // reached it after SIGTERM may be refused with 503 (not run); nothing else is allowed.
      const directOutcomes = await Promise.all(directRuns);
      directOutcomes.forEach((o, i) => {
        if (!o.ok && o.lastStatus === 503) return;
        expectRight(o, direct[i], `run ${1001 + i} sent straight to the draining instance`);
      });
      assert.ok(
        directOutcomes.some((o) => o.ok),
        "no run was in flight on the draining instance at SIGTERM: the drain was not exercised",
      );

      const drainedStatus = await drained.status;
      assert.equal(
        drainedStatus.code,
        0,
        `drained instance exited ${JSON.stringify(drainedStatus)}:
${(await drained.log).slice(-2000)}`,
      );
      const killedStatus = await killed.status;
      assert.notEqual(killedStatus.code, 0, "the SIGKILLed instance cannot have exited cleanly");

      assert.equal(results.length, STREAM_REQUESTS);
      for (const r of results) expectRight(r.outcome, r.expected, `request ${r.n}`);

      const retried = results.filter((r) => r.outcome.attempts > 1).length;
      const log = await summariseAccessLog(nginx.accessLog, drained.port);
      console.log(
        `scale-out: ${results.length} runs (${withPython ? "js+python" : "js"}) all 200; ` +
          `${retried} needed a client retry (max attempts ${
            Math.max(...results.map((r) => r.outcome.attempts))
          }); ` +
          `nginx passed ${log.passedOn} attempts to the next instance; drained instance ` +
          `answered ${log.drained200} runs 200, refused ${log.drained503} with 503, ` +
          `${log.drainedReset} connections reset after its listener closed`,
      );
    } finally {
      for (const i of instances) {
        if (!i.exited) i.process.kill("SIGKILL"); // --kill-child takes the service down too
      }
      await Promise.all(instances.map((i) => i.status));
      await Promise.all(instances.map((i) => i.log));
      if (nginx) {
        nginx.process.kill("SIGQUIT");
        await nginx.status;
      }
      await Deno.remove(prefix, { recursive: true });
    }
  },
});

/** Waits (bounded) until an instance reports a run active or queued. */
async function waitBusy(port: number): Promise<void> {
  const until = Date.now() + 10_000;
  while (Date.now() < until) {
    const { body } = await health(port);
    const pool = (body.pool ?? {}) as { activeInstances?: number };
    const scheduler = (body.scheduler ?? {}) as { queuedTasks?: number };
    if ((pool.activeInstances ?? 0) > 0 || (scheduler.queuedTasks ?? 0) > 0) return;
    await delay(20);
  }
  throw new Error(`instance on ${port} never reported the direct runs as active`);
}

/** Counts, from nginx's log, what each upstream attempt to the two disturbed instances got. */
async function summariseAccessLog(path: string, drainedPort: number) {
  const lines = (await Deno.readTextFile(path)).trim().split("\n").filter(Boolean);
  let passedOn = 0;
  let drained200 = 0;
  let drained503 = 0;
  let drainedReset = 0;
  for (const line of lines) {
    const [, addrs, statuses, sent] = line.split("|");
    const a = addrs.split(/, | : /);
    const s = statuses.split(/, | : /);
    const b = sent.split(/, | : /);
    passedOn += a.length - 1;
    a.forEach((addr, i) => {
      if (!addr.endsWith(`:${drainedPort}`)) return;
      if (s[i] === "200") drained200++;
      else if (s[i] === "503") drained503++;
      else if (Number(b[i]) > 0) drainedReset++;
    });
  }
  return { passedOn, drained200, drained503, drainedReset };
}
