/**
 * The Python runtime: one warm fork server (supervised here) forks a sandboxed spare ahead
 * of each run; the generic pool keeps `poolSize` spares warm and leases each to one run.
 *
 * @module
 */

import { type Sandbox, SandboxPool } from "../../pool.ts";
import { resolveRetVal } from "../../ret_val.ts";
import {
  type Language,
  type PoolStats,
  type RunJob,
  type RunOutcome,
  type Runtime,
  type RuntimeInfo,
  type RuntimeSettings,
  SandboxStartError,
  type ValidationResult,
} from "../../runtime.ts";
import { type ForkServerConfig, readForkServerProgram, resolvePython } from "./command.ts";
import { type DoneEvent, ForkServer, ForkServerGone } from "./server.ts";

/** Isolation layers the Python runtime knows how to provide. */
export const PYTHON_ISOLATION_LAYERS = [
  "rlimits",
  "uid",
  "netns",
  "pidns",
  "mountns",
  "rootfs",
  "cgroup",
  "seccomp",
  "tmpdir",
] as const;

/** Tuning beyond {@link RuntimeSettings}, mostly for tests. */
export interface PythonRuntimeOptions {
  /** Isolation layers to leave off (to exercise the fallbacks). */
  layersOff?: readonly string[];
  /** RLIMIT_FSIZE of a run in bytes; default 64 MiB. */
  fileSizeLimitBytes?: number;
  /** RLIMIT_NPROC of a run's uid (processes and threads); default 64. */
  maxProcesses?: number;
  /**
   * First uid of the runners' uid range (up to 256 uids). Default: derived from the pid, so
   * two services on one host are unlikely to share uids.
   */
  uidBase?: number;
  /** Python executable (`FAAS_PYTHON`); default `python3`. */
  python?: string;
  /** Modules to import ahead of runs (`FAAS_PYTHON_PRELOAD`); default none. */
  preload?: readonly string[];
}

/** Extra time the host waits past a run's timeout before it kills the run itself. */
const HOST_GRACE_MS = 90;
/** How long a silent fork server may take to answer a ping before it is replaced. */
const PING_TIMEOUT_MS = 2_000;
/** How long a spare may take to be forked before the server is suspected. */
const SPARE_TIMEOUT_MS = 5_000;
const VALIDATE_TIMEOUT_MS = 10_000;
/** Most runner processes (each with its own uid) one fork server keeps at once. */
const MAX_SLOTS = 256;

/** Builds the Python runtime (languages `["python"]`); does not start it. */
export function createPythonRuntime(
  settings: RuntimeSettings,
  options: PythonRuntimeOptions = {},
): Runtime {
  return new PythonRuntime(settings, options);
}

/** One spare forked by the fork server, leased to a single run. */
class PythonSandbox implements Sandbox {
  readonly id: string;
  readonly exited: Promise<void>;
  /** Pid of the spare, which leads its own process group. */
  readonly pid: number;
  readonly server: ForkServer;
  readonly spareId: number;
  #killed = Promise.withResolvers<void>();
  #state: "idle" | "running" | "finished" = "idle";

  constructor(server: ForkServer, spareId: number, pid: number, ended: Promise<void>) {
    this.server = server;
    this.spareId = spareId;
    this.pid = pid;
    this.id = `python-${spareId}`;
    this.exited = Promise.race([this.#killed.promise, ended]);
    ended.then(() => {
      if (this.#state === "idle") this.#state = "finished";
    });
  }

  /** Marks the spare as taken by a run; false when it already ended. */
  claim(): boolean {
    if (this.#state !== "idle") return false;
    this.#state = "running";
    return true;
  }

  /** Marks the run as answered. */
  finish(): void {
    this.#state = "finished";
  }

  kill(): void {
    if (this.#state === "idle") this.server.retire(this.spareId);
    if (this.#state === "running") killGroup(this.pid);
    this.#state = "finished";
    this.#killed.resolve();
  }
}

class PythonRuntime implements Runtime {
  readonly languages: readonly Language[] = ["python"];
  #settings: RuntimeSettings;
  #options: PythonRuntimeOptions;
  #pool: SandboxPool<PythonSandbox>;
  #python = "";
  #program = "";
  #server: ForkServer | undefined;
  #starting: Promise<ForkServer> | undefined;
  #version = "";
  #isolation: Record<string, boolean> = {};
  #nextId = 1;
  #closed = false;
  #started = false;
  /** Servers under suspicion of hanging, with the ping that decides. */
  #suspicions = new Map<ForkServer, Promise<boolean>>();

  constructor(settings: RuntimeSettings, options: PythonRuntimeOptions) {
    this.#settings = settings;
    this.#options = options;
    this.#pool = new SandboxPool<PythonSandbox>({
      create: () => this.#createSandbox(),
      size: settings.poolSize,
      max: settings.maxInstances,
      maxRuns: 1,
      maxAgeMs: 10 * 60_000,
      idleTtlMs: 60_000,
      bootConcurrency: 4,
      onBoot: (ms, ok) => settings.onSandboxBoot?.("python", ms, ok),
    });
  }

  async start(): Promise<void> {
    for (const layer of this.#settings.requireIsolation) {
      if (!(PYTHON_ISOLATION_LAYERS as readonly string[]).includes(layer)) {
        throw new Error(
          `unknown isolation layer "${layer}": expected one of ${
            PYTHON_ISOLATION_LAYERS.join(", ")
          }`,
        );
      }
    }
    this.#python = await resolvePython(this.#options.python ?? "python3");
    this.#program = await readForkServerProgram();
    try {
      await this.#ensureServer();
      const missing = this.#settings.requireIsolation.filter((layer) => !this.#isolation[layer]);
      if (missing.length > 0) {
        throw new Error(
          `required isolation layer(s) ${missing.join(", ")} not available for python on this host`,
        );
      }
      await this.#pool.start();
      // One real run proves the whole path (uid drop, imports, limits) before we say ready.
      const probe = await this.run({
        taskId: "python-start-probe",
        language: "python",
        code: "import json\njson.dumps([1])",
        timeoutMs: 10_000,
      });
      if (probe.status !== "success" || probe.retVal !== '"[1]"') {
        const detail = (probe.stderr || probe.error || probe.status).trim().split("\n").pop();
        throw new Error(`python sandbox cannot run code on this host: ${detail}`);
      }
    } catch (error) {
      await this.shutdown();
      throw error;
    }
    this.#started = true;
  }

  async run(job: RunJob): Promise<RunOutcome> {
    const sandbox = await this.#acquireLive(job.tenant);
    try {
      if (job.onStart?.() === false) {
        // Claimed but never given a job: the server retires it (it would wait forever).
        sandbox.server.retire(sandbox.spareId);
        throw new SandboxStartError("the run was answered before a sandbox was free");
      }
      return await this.#execute(sandbox, job);
    } finally {
      sandbox.finish();
      this.#pool.release(sandbox, false);
    }
  }

  /** Leases a spare whose server is alive; spares of a dead server are skipped. */
  async #acquireLive(tenant: string | undefined): Promise<PythonSandbox> {
    let reason = "no live sandbox";
    for (let attempt = 0; attempt < 4; attempt++) {
      const sandbox = await this.#pool.acquire(tenant);
      const suspicion = this.#suspicions.get(sandbox.server);
      if (suspicion && !(await suspicion)) {
        reason = "its fork server stopped answering";
      } else if (!sandbox.server.alive) {
        reason = "its fork server died";
      } else if (sandbox.claim()) {
        return sandbox;
      } else {
        reason = "the spare ended before the run";
      }
      sandbox.finish();
      this.#pool.release(sandbox, false);
    }
    throw new SandboxStartError(`python sandbox failed to start: ${reason}`);
  }

  async validate(code: string, _language: Language): Promise<ValidationResult> {
    const server = await this.#ensureServer();
    const id = this.#nextId++;
    const timer = Promise.withResolvers<never>();
    const handle = setTimeout(
      () => timer.reject(new Error("the python syntax check did not answer in time")),
      VALIDATE_TIMEOUT_MS,
    );
    try {
      const event = await Promise.race([server.validate(id, code), timer.promise]);
      if (event.ok) return { valid: true, error: null };
      return {
        valid: false,
        error: {
          message: event.message ?? "invalid syntax",
          line: event.line ?? 1,
          column: event.column ?? 1,
        },
      };
    } catch (error) {
      if (error instanceof ForkServerGone) {
        throw new SandboxStartError(`python syntax check failed: ${error.message}`);
      }
      void this.#suspect(server);
      throw error;
    } finally {
      clearTimeout(handle);
    }
  }

  stats(): PoolStats {
    const { totalInstances, idleInstances, activeInstances } = this.#pool.stats();
    return { totalInstances, idleInstances, activeInstances };
  }

  info(): RuntimeInfo {
    return {
      available: this.#started && !this.#closed && this.#pool.healthy(),
      version: this.#version,
      isolation: { ...this.#isolation },
    };
  }

  async shutdown(): Promise<void> {
    this.#closed = true;
    await this.#pool.shutdown();
    const server = this.#server ?? await this.#starting?.catch(() => undefined);
    this.#server = undefined;
    if (!server) return;
    await server.close();
    const timer = setTimeout(() => server.kill("the python runtime is shut down"), 2_000);
    await server.exited;
    clearTimeout(timer);
  }

  #ensureServer(): Promise<ForkServer> {
    if (this.#closed) return Promise.reject(new Error("the python runtime is shut down"));
    if (this.#server?.alive) return Promise.resolve(this.#server);
    this.#starting ??= this.#spawnServer().finally(() => {
      this.#starting = undefined;
    });
    return this.#starting;
  }

  async #spawnServer(): Promise<ForkServer> {
    const settings = this.#settings;
    const config: ForkServerConfig = {
      memory_limit_mb: settings.memoryLimitMb,
      max_output_bytes: settings.maxOutputBytes,
      max_slots: Math.min(MAX_SLOTS, 2 * settings.maxInstances + settings.poolSize + 8),
      uid_base: this.#options.uidBase ?? 200_000 + (Deno.pid % 4096) * MAX_SLOTS,
      file_size_limit_bytes: this.#options.fileSizeLimitBytes ?? 64 * 1024 * 1024,
      max_processes: this.#options.maxProcesses ?? 64,
      max_open_files: 256,
      tmp_root: "/tmp",
      layers_off: [...(this.#options.layersOff ?? [])],
    };
    const { server, ready } = await ForkServer.spawn(this.#python, this.#program, {
      config,
      debug: settings.debug,
      readyTimeoutMs: 10_000,
    });
    if (this.#closed) {
      server.kill("the python runtime is shut down");
      throw new Error("the python runtime is shut down");
    }
    this.#version = ready.version;
    this.#isolation = { ...ready.isolation };
    this.#server = server;
    if (settings.debug) {
      console.error(`python fork server ${server.pid} ready: ${JSON.stringify(ready.isolation)}`);
    }
    return server;
  }

  async #createSandbox(): Promise<PythonSandbox> {
    const server = await this.#ensureServer();
    const id = this.#nextId++;
    const ended = Promise.withResolvers<void>();
    const timer = Promise.withResolvers<never>();
    const handle = setTimeout(() => {
      timer.reject(new Error("the python fork server did not fork a spare in time"));
      void this.#suspect(server);
    }, SPARE_TIMEOUT_MS);
    try {
      const pid = await Promise.race([server.spare(id, ended.resolve), timer.promise]);
      return new PythonSandbox(server, id, pid, ended.promise);
    } finally {
      clearTimeout(handle);
    }
  }

  async #execute(sandbox: PythonSandbox, job: RunJob): Promise<RunOutcome> {
    const startedAt = performance.now();
    const { server } = sandbox;
    const input = job.input === undefined ? null : JSON.stringify(job.input);
    const backstop = Promise.withResolvers<"overdue">();
    const handle = setTimeout(() => backstop.resolve("overdue"), job.timeoutMs + HOST_GRACE_MS);
    let event: Record<string, unknown> | "overdue";
    const running = server.run(sandbox.spareId, {
      code: job.code,
      input,
      timeoutMs: job.timeoutMs,
    });
    try {
      event = await Promise.race([running, backstop.promise]);
    } catch (error) {
      if (error instanceof ForkServerGone && !error.sent) {
        throw new SandboxStartError(`python sandbox failed to start: ${error.message}`);
      }
      // The server died: the run may have started, so it is answered, never retried.
      killGroup(sandbox.pid);
      const reason = error instanceof Error ? error.message : String(error);
      return this.#failure(sandbox, startedAt, "crashed", reason);
    } finally {
      clearTimeout(handle);
    }
    if (event === "overdue") {
      // Usually the server's answer is already on its way: a loaded host can run this timer
      // before it reads the pipe. The run is a timeout then, with what the code wrote.
      // Without an answer soon after, the server is dead or hung.
      killGroup(sandbox.pid);
      const late = await settleWithin(running, HOST_GRACE_MS);
      if (late?.ev === "done") {
        const outcome = this.#outcome(sandbox, startedAt, late as unknown as DoneEvent);
        if (outcome.status !== "crashed") return outcome;
        return {
          ...outcome,
          status: "timeout",
          error: `execution timed out after ${job.timeoutMs} ms`,
        };
      }
      void this.#suspect(server);
      return this.#failure(
        sandbox,
        startedAt,
        "crashed",
        `the python fork server did not end the run at its ${job.timeoutMs} ms timeout; ` +
          "the run was killed",
      );
    }
    if (event.ev === "start_failed") {
      throw new SandboxStartError(`python sandbox failed to start: ${String(event.error)}`);
    }
    return this.#outcome(sandbox, startedAt, event as unknown as DoneEvent);
  }

  #outcome(sandbox: PythonSandbox, startedAt: number, done: DoneEvent): RunOutcome {
    const { retVal, stdout } = resolveRetVal({
      explicit: done.explicit ?? undefined,
      returned: done.returned ?? undefined,
      stdout: done.stdout,
    });
    const outcome: RunOutcome = {
      stdout,
      stderr: done.stderr,
      retVal,
      status: done.status,
      exitCode: done.exit_code,
      durationMs: Math.round(performance.now() - startedAt),
      truncated: done.truncated,
      instanceId: sandbox.id,
    };
    if (done.status !== "success" && done.status !== "error") {
      outcome.error = done.error ?? `the run ended with status ${done.status}`;
    }
    return outcome;
  }

  #failure(
    sandbox: PythonSandbox,
    startedAt: number,
    status: "crashed",
    error: string,
  ): RunOutcome {
    return {
      stdout: "",
      stderr: "",
      retVal: "",
      status,
      exitCode: 137,
      durationMs: Math.round(performance.now() - startedAt),
      truncated: false,
      instanceId: sandbox.id,
      error,
    };
  }

  /** Replaces the server when it does not answer a ping: a hung server must not stall runs. */
  #suspect(server: ForkServer): Promise<boolean> {
    if (!server.alive) return Promise.resolve(false);
    const pending = this.#suspicions.get(server);
    if (pending) return pending;
    const check = server.ping(this.#nextId++, PING_TIMEOUT_MS).then((alive) => {
      this.#suspicions.delete(server);
      if (!alive) server.kill("the python fork server stopped answering");
      return alive;
    });
    this.#suspicions.set(server, check);
    return check;
  }
}

/** The value of `promise` if it settles within `ms`, else `undefined` (also on rejection). */
async function settleWithin<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([promise.catch(() => undefined), expired]);
  } finally {
    clearTimeout(timer);
  }
}

function killGroup(pid: number): void {
  try {
    Deno.kill(-pid, "SIGKILL");
  } catch {
    // already gone
  }
}
