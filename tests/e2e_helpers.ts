/**
 * End-to-end helpers: the real service (main.ts with both real runtimes) as a child process,
 * requests in the Go client's shape, and views of the service's process tree from /proc.
 *
 * @module
 */

import { assert, assertEquals } from "./helpers/assert.ts";
import { type ServiceProcess, spawnService } from "./helpers/service_process.ts";
import { until } from "./helpers/wait.ts";
import { descendants } from "../bench/proc_tree.ts";
import { assertRemoteSettings, REMOTE_URL } from "./helpers/remote.ts";

export { descendants };

/** A running real service and its base URL. */
export interface RealService extends AsyncDisposable {
  /** The service process. */
  process: ServiceProcess;
  /** Base URL. */
  url: string;
}

/**
 * Starts `deno run main.ts` on an ephemeral port with `env` on top of the test defaults
 * (`options` as for {@link spawnService}).
 */
export async function startRealService(
  env: Record<string, string> = {},
  options: { ownGroup?: boolean } = {},
): Promise<RealService> {
  const process = spawnService("main.ts", { FAAS_POOL_SIZE: "2", ...env }, options);
  let url;
  try {
    url = await process.listening();
  } catch (error) {
    await process[Symbol.asyncDispose]();
    throw error;
  }
  return {
    process,
    url,
    async [Symbol.asyncDispose]() {
      try {
        process.child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      const timer = setTimeout(() => process[Symbol.asyncDispose](), 10_000);
      await process.child.status;
      clearTimeout(timer);
      await process[Symbol.asyncDispose]();
    },
  };
}

/** A service to send requests to, started here or already running elsewhere. */
export interface ServiceUnderTest extends AsyncDisposable {
  /** Base URL. */
  url: string;
}

/**
 * The real service started with `env` (see {@link startRealService}), or, with FAAS_TEST_URL
 * set, the service already running there, which must have been started with `env`
 * (tests/helpers/remote.ts); disposing of it then leaves it running.
 */
export async function serviceUnderTest(
  env: Record<string, string> = {},
): Promise<ServiceUnderTest> {
  if (REMOTE_URL === undefined) return await startRealService(env);
  assertRemoteSettings(env);
  const { status } = await health(REMOTE_URL);
  assertEquals(status, 200, `the service at ${REMOTE_URL} is not healthy`);
  return { url: REMOTE_URL, [Symbol.asyncDispose]: () => Promise.resolve() };
}

/** The 200 answer of /run_code, as the contract shapes it. */
export interface RunAnswer {
  output: { stdout: string; stderr: string; ret_val: string };
  metadata: {
    task_id: string;
    instance_id: string;
    language: string;
    status: string;
    exit_code: number;
    duration: number;
    queue_time: number;
    truncated: boolean;
    pool_stats: { totalInstances: number; idleInstances: number; activeInstances: number };
  };
  error: string;
}

/** POSTs `body` (JSON-encoded unless a string) to `url + path`; returns status and parsed body. */
export async function postJson(
  url: string,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const response = await fetch(url + path, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`answer ${response.status} is not JSON: ${text.slice(0, 300)}`);
  }
  return { status: response.status, headers: response.headers, body: parsed };
}

/** Runs code through /run_code; fails unless the answer is a 200 of the contract's shape. */
export async function runCode(url: string, request: Record<string, unknown>): Promise<RunAnswer> {
  const { status, body } = await postJson(url, "/run_code", request);
  assertEquals(status, 200, `expected 200, got ${status}: ${JSON.stringify(body)}`);
  assertRunShape(body);
  return body as unknown as RunAnswer;
}

/** Fails unless `body` has exactly the types the Go client decodes. */
export function assertRunShape(body: Record<string, unknown>): void {
  const shape = JSON.stringify(body).slice(0, 400);
  const output = body.output as Record<string, unknown>;
  const metadata = body.metadata as Record<string, unknown>;
  assert(output && typeof output === "object", `no output: ${shape}`);
  for (const field of ["stdout", "stderr", "ret_val"]) {
    assertEquals(typeof output[field], "string", `output.${field} is not a string: ${shape}`);
  }
  assertEquals(typeof body.error, "string", `error is not a string: ${shape}`);
  assert(metadata && typeof metadata === "object", `no metadata: ${shape}`);
  for (const field of ["task_id", "instance_id", "language", "status"]) {
    assertEquals(typeof metadata[field], "string", `metadata.${field} is not a string: ${shape}`);
  }
  for (const field of ["exit_code", "duration", "queue_time"]) {
    assert(Number.isInteger(metadata[field]), `metadata.${field} is not an integer: ${shape}`);
  }
  assertEquals(typeof metadata.truncated, "boolean", `metadata.truncated: ${shape}`);
  const stats = metadata.pool_stats as Record<string, unknown>;
  for (const field of ["totalInstances", "idleInstances", "activeInstances"]) {
    assert(Number.isInteger(stats?.[field]), `pool_stats.${field} is not an integer: ${shape}`);
  }
}

/** GET /health: status and body. */
export async function health(url: string): Promise<{ status: number; body: HealthBody }> {
  const response = await fetch(url + "/health");
  return { status: response.status, body: await response.json() };
}

/** The parts of /health the tests read. */
export interface HealthBody {
  status: string;
  pool: {
    languages: Record<string, { totalInstances: number; idleInstances: number }>;
  };
  scheduler: Record<string, number>;
}

/**
 * Resolves once /health is 200, nothing runs and every language has warm idle sandboxes
 * again with no boot under way.
 */
export function untilRecovered(url: string): Promise<void> {
  return until(async () => {
    const { status, body } = await health(url);
    return status === 200 && body.scheduler.runningTasks === 0 &&
      Object.values(body.pool.languages).every((stats) =>
        stats.idleInstances >= 1 && stats.totalInstances === stats.idleInstances
      );
  }, { timeoutMs: 20_000, what: "a healthy service with warm sandboxes" });
}

/** State, parent and CPU ticks used (user + system) of a process, or undefined when gone. */
export function readStat(
  pid: number,
): { state: string; ppid: number; ticks: number } | undefined {
  let text;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return {
    state: fields[0],
    ppid: Number(fields[1]),
    ticks: Number(fields[11]) + Number(fields[12]),
  };
}

/**
 * Descendants of `root` that used more than a tenth of a core in each of two consecutive
 * windows of `windowMs`: a sandbox left spinning after its run was answered (a runner that
 * just booted may still be busy for a moment, never for two windows).
 */
export async function spinningDescendants(root: number, windowMs = 1000): Promise<string[]> {
  const sample = () => new Map(descendants(root).map((pid) => [pid, readStat(pid)?.ticks ?? 0]));
  const samples = [sample()];
  for (let i = 0; i < 2; i++) {
    await new Promise((resolve) => setTimeout(resolve, windowMs));
    samples.push(sample());
  }
  const ticksPerSecond = 100;
  const limit = (windowMs / 1000) * ticksPerSecond / 10;
  const spinning: string[] = [];
  for (const [pid, first] of samples[0]) {
    const second = samples[1].get(pid);
    const third = samples[2].get(pid);
    if (second === undefined || third === undefined) continue;
    if (second - first > limit && third - second > limit) {
      let command = "";
      try {
        command = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").slice(0, 3).join(" ");
      } catch {
        // Gone meanwhile.
      }
      spinning.push(`${pid} used ${third - first} ticks in ${2 * windowMs} ms: ${command}`);
    }
  }
  return spinning;
}
