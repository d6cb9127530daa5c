/**
 * The JavaScript/TypeScript runtime: a pool of runner processes, each hosting one
 * no-permission Web Worker that runs user code in a fresh realm per run.
 *
 * A tenant's first run (and every anonymous run) gets a runner that serves no other run and
 * runs the code in its worker's own realm; a tenant that comes back gets runners kept for it,
 * which run each of its runs in a fresh `node:vm` context. A runner serves one tenant only, is
 * killed on timeout, output flood, memory exhaustion or any anomaly, and is replaced in the
 * background.
 *
 * @module
 */

import { SandboxPool } from "../../pool.ts";
import {
  type Language,
  PoolStats,
  type RunJob,
  type RunOutcome,
  type Runtime,
  type RuntimeInfo,
  type RuntimeSettings,
  SandboxStartError,
  type SyntaxProblem,
  type ValidationResult,
} from "../../runtime.ts";
import { describeLayers, probeLayers } from "./isolation.ts";
import type { RunnerLaunch, RunnerLayers } from "./runner_command.ts";
import { RUNNER_ENTRY, SERVICE_ENTRY, WORKER_ENTRY } from "./runner_command.ts";
import { type JsRunner, type RunnerOptions, startRunner } from "./runner_process.ts";
import { MAX_FRAME_BYTES } from "./protocol.ts";
import { checkSyntax, mapPositions, type PositionMap, stripTypes } from "./syntax.ts";

export { runnerCommandLine } from "./runner_command.ts";
export type {
  CommandLine,
  RunnerCommandOptions,
  RunnerLaunch,
  RunnerLayers,
} from "./runner_command.ts";

/**
 * Virtual memory V8 reserves in a runner before any user allocation and that RLIMIT_DATA
 * counts, per isolate count. Measured on Deno 2.9.6: with a worker (two isolates) a runner
 * boots at 1088 MiB and fails at 1024; inline (one isolate) boots at 576 and fails at 512.
 */
const DATA_BASE_MB = { worker: 1152, inline: 640 } as const;
/** First uid of the range runners run as when the service is root. */
const RUNNER_UID_BASE = 2_000_000;
const RUNNER_UID_RANGE = 60_000;
/** Default of {@link JavaScriptRuntimeOptions.idleTtlMs}. */
const IDLE_TTL_MS = 60_000;
/** Tenants remembered as recent at most (a few hundred KiB). */
const RECENT_TENANTS = 10_000;
/** Boots tried for one job when they fail before its code started. */
const BOOT_ATTEMPTS = 3;

/** Tuning of the runner pool beyond {@link RuntimeSettings}. */
export interface JavaScriptRuntimeOptions {
  /** Runs one runner may serve for its tenant before it is recycled (default 500). */
  maxRunsPerRunner?: number;
  /** Age after which a runner is recycled, in ms (default 10 minutes). */
  maxRunnerAgeMs?: number;
  /** How long a used runner waits for its tenant's next run, in ms (default 60 s). */
  idleTtlMs?: number;
  /** Runner boots under way at once (default: 2 per CPU core, at least 2). */
  bootConcurrency?: number;
  /**
   * Where user code runs inside a runner process: `"worker"` (default), a Web Worker with no
   * permissions; or `"inline"`, the runner's own thread after it revoked all its permissions,
   * which halves the boot CPU (more new-tenant runs per second) at the cost of that layer.
   */
  runnerMode?: "worker" | "inline";
  /**
   * How runner processes are started: `"self"` (the service's executable in runner mode, the
   * only way in a compiled binary) or `"deno"` (`deno run` on the runner module)
   * (`FAAS_RUNNER_MODE`). Default: `"self"` in a compiled binary and `"deno"` otherwise.
   */
  launch?: RunnerLaunch;
}

/** Builds the JS/TS runtime; call `start()` before running code. */
export function createJavaScriptRuntime(
  settings: RuntimeSettings,
  options: JavaScriptRuntimeOptions = {},
): Runtime {
  return new JavaScriptRuntime(settings, options);
}

class JavaScriptRuntime implements Runtime {
  readonly languages: readonly Language[] = ["javascript", "typescript"];
  #settings: RuntimeSettings;
  #options: JavaScriptRuntimeOptions;
  #pool: SandboxPool<JsRunner> | undefined;
  #layers: RunnerLayers = { rlimit: false, netns: false, uid: false };
  #cacheDir: string | undefined;
  #started = false;
  #uidCounter = 0;
  /** Tenants by the time of their last run, oldest first. */
  #recentTenants = new Map<string, number>();

  constructor(settings: RuntimeSettings, options: JavaScriptRuntimeOptions) {
    this.#settings = settings;
    this.#options = options;
  }

  async start(): Promise<void> {
    if (this.#started) return;
    this.#layers = await probeLayers(RUNNER_UID_BASE);
    const active = this.#isolation();
    const missing = this.#settings.requireIsolation.filter((name) => active[name] !== true);
    if (missing.length > 0) {
      throw new Error(
        `required isolation layers are not available on this host: ${missing.join(", ")}`,
      );
    }
    // Warms the type-stripper (a wasm module) so no request pays for it.
    stripTypes("const warm: number = 1;");
    // A compiled binary has its modules embedded: there is nothing to cache.
    if (!Deno.build.standalone) this.#cacheDir = await prepareCache(this.#launch());
    const settings = this.#settings;
    const runnerOptions = (): RunnerOptions => ({
      memoryLimitMb: settings.memoryLimitMb,
      dataLimitBytes: (DATA_BASE_MB[this.#mode()] + settings.memoryLimitMb) * 1024 * 1024,
      maxOutputBytes: settings.maxOutputBytes,
      uid: this.#nextUid(),
      layers: this.#layers,
      denoDir: this.#cacheDir,
      inline: this.#mode() === "inline",
      launch: this.#launch(),
    });
    if (!Deno.build.standalone) await fillCodeCache(runnerOptions());
    const pool = new SandboxPool<JsRunner>({
      create: () => startRunner(runnerOptions()),
      size: settings.poolSize,
      max: Math.max(settings.maxInstances, 1),
      maxRuns: this.#options.maxRunsPerRunner ?? 500,
      maxAgeMs: this.#options.maxRunnerAgeMs ?? 10 * 60_000,
      idleTtlMs: this.#options.idleTtlMs ?? IDLE_TTL_MS,
      bootConcurrency: this.#options.bootConcurrency ??
        Math.max(2, 2 * (navigator.hardwareConcurrency ?? 1)),
      onBoot: (ms, ok) => settings.onSandboxBoot?.("javascript", ms, ok),
    });
    await pool.start();
    this.#pool = pool;
    this.#started = true;
  }

  async run(job: RunJob): Promise<RunOutcome> {
    const pool = this.#requirePool();
    const file = job.language === "typescript" ? "main.ts" : "main.js";
    const source = runnableSource(job.code, job.language);
    if (!source.ok) return syntaxOutcome(source.problem, file);
    const { code, positions } = source;
    const input = job.input === undefined ? undefined : JSON.stringify(job.input);
    if (tooLargeForFrame(code, input)) return tooLargeOutcome();
    // A tenant's first run gets a runner of its own that serves no other run (it runs the code
    // in its worker's realm and never loads node:vm); a tenant that comes back gets a runner
    // kept for its later runs.
    const keep = this.#returning(job.tenant);
    const runnerJob = { code, file, input, timeoutMs: job.timeoutMs, keep };
    let runner: JsRunner;
    let result;
    // Every retry below is safe: the code never started. Dead idle runners are dropped one by
    // one (at most the pool's size of them); boots that fail are retried a few times.
    let bootFailures = 0;
    let deadRunners = 0;
    for (;;) {
      try {
        runner = await pool.acquire(job.tenant);
      } catch (error) {
        if (!(error instanceof SandboxStartError) || ++bootFailures >= BOOT_ATTEMPTS) throw error;
        continue;
      }
      if (job.onStart?.() === false) {
        pool.release(runner, true);
        throw new SandboxStartError("the run was answered before a runner was free");
      }
      try {
        result = await runner.run(runnerJob);
        break;
      } catch (error) {
        pool.release(runner, false);
        const limit = this.#settings.maxInstances + 1;
        if (!(error instanceof SandboxStartError) || ++deadRunners > limit) throw error;
      }
    }
    const { status, instanceId } = result.outcome;
    if (this.#settings.debug && (status === "crashed" || status === "memory_limit")) {
      // The runner's own stderr (V8's last words) is the only clue to why it died.
      const tail = runner!.diagnostics().trim().split("\n").slice(-5).join(" | ");
      console.error(`javascript runner ${instanceId} ended ${status}: ${tail}`);
    }
    // Released before answering, so the tenant's next run finds this runner idle; the wait is
    // one worker message (sub-millisecond) unless the code left work running.
    const reusable = await result.reusable;
    pool.release(runner, keep && reusable);
    if (!positions) return result.outcome;
    // Transformed TypeScript ran on other lines: stack frames point back at the user's.
    const { stdout, stderr, retVal } = result.outcome;
    return {
      ...result.outcome,
      stdout: mapPositions(stdout, file, positions),
      stderr: mapPositions(stderr, file, positions),
      retVal: mapPositions(retVal, file, positions),
    };
  }

  validate(code: string, language: Language): Promise<ValidationResult> {
    if (language !== "javascript" && language !== "typescript") {
      return Promise.reject(new Error(`expected javascript or typescript, got ${language}`));
    }
    const source = runnableSource(code, language);
    return Promise.resolve(
      source.ok ? { valid: true, error: null } : { valid: false, error: source.problem },
    );
  }

  stats(): PoolStats {
    if (!this.#pool) return { totalInstances: 0, idleInstances: 0, activeInstances: 0 };
    const { totalInstances, idleInstances, activeInstances } = this.#pool.stats();
    return { totalInstances, idleInstances, activeInstances };
  }

  info(): RuntimeInfo {
    return {
      available: this.#started && (this.#pool?.healthy() ?? false),
      version: `Deno ${Deno.version.deno} (V8 ${Deno.version.v8})`,
      isolation: this.#isolation(),
    };
  }

  async shutdown(): Promise<void> {
    this.#started = false;
    await this.#pool?.shutdown();
    if (this.#cacheDir) await Deno.remove(this.#cacheDir, { recursive: true }).catch(() => {});
  }

  #isolation(): Record<string, boolean> {
    return describeLayers(this.#layers, this.#mode());
  }

  #mode(): "worker" | "inline" {
    return this.#options.runnerMode ?? "worker";
  }

  #launch(): RunnerLaunch {
    return this.#options.launch ?? (Deno.build.standalone ? "self" : "deno");
  }

  #requirePool(): SandboxPool<JsRunner> {
    if (!this.#pool) throw new Error("the javascript runtime is not started: call start() first");
    return this.#pool;
  }

  /**
   * Records a run of `tenant`; true when the tenant also ran within the idle TTL (so its runners
   * are worth keeping). Anonymous runs never come back.
   */
  #returning(tenant: string | undefined): boolean {
    if (tenant === undefined) return false;
    const now = performance.now();
    const seen = this.#recentTenants.get(tenant);
    // Re-inserted, so the map's order is the order of last runs and the oldest goes first.
    this.#recentTenants.delete(tenant);
    this.#recentTenants.set(tenant, now);
    if (this.#recentTenants.size > RECENT_TENANTS) {
      this.#recentTenants.delete(this.#recentTenants.keys().next().value!);
    }
    return seen !== undefined && now - seen < (this.#options.idleTtlMs ?? IDLE_TTL_MS);
  }

  #nextUid(): number {
    return RUNNER_UID_BASE + (this.#uidCounter++ % RUNNER_UID_RANGE);
  }
}

/**
 * The JavaScript a runner runs for `code`, checked as an async function body, or the syntax
 * problem at the user's position (also when TypeScript had to be transformed).
 */
function runnableSource(
  code: string,
  language: Language,
): { ok: true; code: string; positions?: PositionMap } | { ok: false; problem: SyntaxProblem } {
  let source: { code: string; positions?: PositionMap } = { code };
  if (language === "typescript") {
    const stripped = stripTypes(code);
    if (!stripped.ok) return stripped;
    source = stripped;
  }
  const problem = checkSyntax(source.code);
  if (!problem) return { ok: true, ...source };
  const at = source.positions?.(problem.line, problem.column);
  return { ok: false, problem: at ? { ...problem, ...at } : problem };
}

/** True when code and input would not fit one protocol frame (a runner would refuse it). */
function tooLargeForFrame(code: string, input: string | undefined): boolean {
  const chars = code.length + (input?.length ?? 0);
  // A UTF-16 unit takes at most 3 bytes in UTF-8 (JSON escaping aside): measure only near it.
  if (chars * 3 < MAX_FRAME_BYTES - 4096) return false;
  const encoder = new TextEncoder();
  const bytes = encoder.encode(JSON.stringify(code)).length +
    encoder.encode(JSON.stringify(input ?? "")).length;
  return bytes > MAX_FRAME_BYTES - 4096;
}

function tooLargeOutcome(): RunOutcome {
  return {
    stdout: "",
    stderr: `Uncaught RangeError: code and input together must stay under ${
      MAX_FRAME_BYTES / 1024 / 1024
    } MiB\n`,
    retVal: "",
    status: "error",
    exitCode: 1,
    durationMs: 0,
    truncated: false,
    instanceId: "size-check",
  };
}

function syntaxOutcome(problem: SyntaxProblem, file: string): RunOutcome {
  return {
    stdout: "",
    stderr:
      `Uncaught SyntaxError: ${problem.message}\n    at ${file}:${problem.line}:${problem.column}\n`,
    retVal: "",
    status: "error",
    exitCode: 1,
    durationMs: 0,
    truncated: false,
    instanceId: "syntax-check",
  };
}

/**
 * Boots one runner as the service's own user, so that Deno writes the V8 code cache of what a
 * boot compiles into the shared cache: the runner's and worker's modules and the Deno-internal
 * modules loaded lazily (node:vm's polyfills, loaded by a kept runner before its first run, streams; about
 * 2 MiB of code cache). Runners of
 * another uid read it but cannot write it, so without this every boot compiles all of it
 * anew (10-20 % of a boot's CPU, measured). Best effort: a failure only costs that CPU.
 */
async function fillCodeCache(options: RunnerOptions): Promise<void> {
  let runner: JsRunner | undefined;
  try {
    runner = await startRunner({ ...options, layers: { ...options.layers, uid: false } });
    // Kept runs load node:vm and compile what a vm context run needs.
    for (let i = 0; i < 2; i++) {
      const { reusable } = await runner.run({
        code: "return 1",
        file: "warm.js",
        timeoutMs: 10_000,
        keep: true,
      });
      if (!await reusable) break;
    }
  } catch {
    // runners that cannot boot are reported by the pool
  } finally {
    runner?.kill();
    await runner?.exited;
  }
}

/**
 * A Deno cache shared read-only by the runners, filled once with the runner's compiled
 * modules so each boot skips transpiling them.
 */
async function prepareCache(launch: RunnerLaunch): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "faas-js-cache-" });
  await Deno.chmod(dir, 0o755);
  const { success, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "cache",
      "--no-config",
      "--no-lock",
      "--quiet",
      RUNNER_ENTRY.pathname,
      WORKER_ENTRY.pathname,
      // A self-launched runner starts from the service's entry (its service imports are
      // dynamic and never taken in runner mode).
      ...(launch === "self" ? [SERVICE_ENTRY.pathname] : []),
    ],
    env: { DENO_DIR: dir },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new Error(
      `could not prepare the runner's module cache: ${new TextDecoder().decode(stderr)}`,
    );
  }
  return dir;
}
