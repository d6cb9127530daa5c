/**
 * The servers under test: the service itself, the process-per-request baselines and the
 * no-op HTTP floor, each started as a subprocess through {@link startServer}; and what the
 * harness reads from the service's `/health`.
 *
 * @module
 */

import { CpuGroup } from "./cpu_group.ts";
import { type RunningServer, ServerStartError, startServer } from "./server_process.ts";
import type { BenchLanguage } from "./programs.ts";

const BASELINES = new URL("./baselines/", import.meta.url);

/** Starts the no-op HTTP floor (a Hono route answering a constant). */
export function startFloor(): Promise<RunningServer> {
  return startServer({
    cpuGroup: "own",
    name: "no-op floor",
    args: ["run", "--allow-all", "--no-prompt", new URL("floor_server.ts", BASELINES).pathname],
  });
}

/**
 * Starts the warm-context floor (baselines/context_floor_server.ts): `count` processes,
 * default one per core, each an HTTP server with one warm no-permission worker that runs
 * every request in a fresh `node:vm` context. One worker is one thread: a load spread over
 * the processes round-robin uses every core, as the service's runner processes can. The
 * processes share one CPU cgroup: together they weigh as much as the service does.
 */
export async function startContextFloor(
  options: { count?: number } = {},
): Promise<RunningServer[]> {
  const count = options.count ?? navigator.hardwareConcurrency;
  if (!Number.isInteger(count) || count < 1) {
    throw new RangeError(`expected a positive integer count of processes, got ${count}`);
  }
  const script = new URL("context_floor_server.ts", BASELINES).pathname;
  const group = CpuGroup.create("warm-context floor");
  const started = await Promise.allSettled(Array.from({ length: count }, (_, i) =>
    startServer({
      cpuGroup: group instanceof CpuGroup ? group : "own",
      name: `warm-context floor ${i + 1}/${count}`,
      args: ["run", "--allow-all", "--no-prompt", script],
    })));
  const servers = started.flatMap((result) => result.status === "fulfilled" ? [result.value] : []);
  const failure = started.find((result) => result.status === "rejected");
  if (failure) {
    await Promise.all(servers.map((server) => server.stop()));
    throw failure.reason;
  }
  return servers;
}

/**
 * Starts the Python fork floor (baselines/fork_floor_server.ts): an HTTP front handing the
 * requests round-robin to warm `python` interpreters, one per core by default (`parents`),
 * that fork a child per run.
 */
export function startForkFloor(
  options: { python: string; parents?: number },
): Promise<RunningServer> {
  return startServer({
    cpuGroup: "own",
    name: "python fork floor",
    args: [
      "run",
      "--allow-all",
      "--no-prompt",
      new URL("fork_floor_server.ts", BASELINES).pathname,
    ],
    env: {
      BENCH_PYTHON: options.python,
      BENCH_PARENTS: String(options.parents ?? navigator.hardwareConcurrency),
    },
  });
}

/** A process-per-request baseline mode (see baselines/spawn_server.ts). */
export type SpawnMode = "deno-run" | "deno-eval" | "python3";

/** Human name of each process-per-request baseline. */
export const SPAWN_NAMES: Record<SpawnMode, string> = {
  "deno-run": "deno run per request",
  "deno-eval": "deno eval per request",
  python3: "python3 per request",
};

/** Starts a process-per-request baseline; `python` is the interpreter the python3 mode runs. */
export function startSpawnBaseline(
  mode: SpawnMode,
  options: { python: string },
): Promise<RunningServer> {
  return startServer({
    cpuGroup: "own",
    name: SPAWN_NAMES[mode],
    args: [
      "run",
      "--allow-all",
      "--no-prompt",
      new URL("spawn_server.ts", BASELINES).pathname,
      `--mode=${mode}`,
    ],
    env: { BENCH_PYTHON: options.python },
  });
}

/**
 * The real interpreter behind `python` (`sys.executable`): a version-manager shim is a shell
 * script whose own start-up would be charged to the baseline.
 */
export async function resolvePython(python: string): Promise<string> {
  try {
    const { code, stdout } = await new Deno.Command(python, {
      args: ["-c", "import sys; print(sys.executable)"],
      stdout: "piped",
      stderr: "null",
    }).output();
    const path = new TextDecoder().decode(stdout).trim();
    return code === 0 && path ? path : python;
  } catch {
    return python;
  }
}

/** The service started, with the languages it serves. */
export interface StartedService {
  /** The running service. */
  server: RunningServer;
  /** Languages it was started with and serves. */
  languages: BenchLanguage[];
}

const MISSING_RUNTIME = /no runtime is built into this service for ([a-z, ]+)/;

/**
 * Starts `<repo>/main.ts` with `env` and `FAAS_LANGUAGES` set to `languages`. When the
 * service refuses some languages (no runtime for them yet), it is started again without them;
 * `notes` receives what was dropped. Rejects with {@link ServerStartError} when it cannot
 * start at all.
 */
export async function startService(
  mainPath: string,
  options: {
    languages: BenchLanguage[];
    env: Record<string, string>;
    notes: string[];
    /** Name in messages; defaults to `service`. */
    name?: string;
  },
): Promise<StartedService> {
  let languages = [...options.languages];
  while (true) {
    try {
      const server = await startServer({
        cpuGroup: "own",
        name: options.name ?? "service",
        args: ["run", "--allow-all", "--no-prompt", mainPath],
        env: { ...options.env, FAAS_LANGUAGES: languages.join(",") },
        readyTimeoutMs: 60_000,
      });
      return { server, languages };
    } catch (error) {
      const missing = error instanceof ServerStartError
        ? error.message.match(MISSING_RUNTIME)
        : null;
      if (!missing) throw error;
      const dropped = missing[1].split(",").map((name) => name.trim()) as BenchLanguage[];
      const rest = languages.filter((language) => !dropped.includes(language));
      if (rest.length === languages.length || rest.length === 0) throw error;
      options.notes.push(
        `the service has no runtime for ${dropped.join(", ")} yet: measured without ${
          dropped.join(", ")
        }`,
      );
      languages = rest;
    }
  }
}

/** Instance counts as `/health` reports them. */
interface PoolCounts {
  totalInstances?: number;
  idleInstances?: number;
  activeInstances?: number;
}

/** The parts of the service's `/health` body the harness reads. */
export interface Health {
  /** `healthy` or `unhealthy`. */
  status?: string;
  /** Totals, with per-language counts under `languages`. */
  pool?: PoolCounts & { languages?: Record<string, PoolCounts> };
  /** Availability per language. */
  languages?: Record<string, { available?: boolean; version?: string }>;
}

/** Reads `/health` (any status code); `undefined` when it does not answer JSON. */
export async function readHealth(server: RunningServer): Promise<Health | undefined> {
  try {
    const response = await fetch(`${server.url}/health`, { signal: AbortSignal.timeout(5_000) });
    return await response.json() as Health;
  } catch {
    return undefined;
  }
}

/**
 * Idle sandboxes serving `language`: the per-language count when `/health` has one (TS
 * falls back to JS, which shares its runtime), else the total.
 */
export function idleFor(health: Health | undefined, language: BenchLanguage): number | undefined {
  const perLanguage = health?.pool?.languages;
  const counts = perLanguage?.[language] ??
    (language === "typescript" ? perLanguage?.javascript : undefined) ?? health?.pool;
  return counts?.idleInstances;
}
