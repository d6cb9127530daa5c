/**
 * The JavaScript/TypeScript runtime: a pool of runner processes, each in its own jail (the OS
 * layers of ../jail), each hosting workers with no permissions.
 *
 * A runner serves one tenant. Its first run runs in a fresh worker's own realm (no `node:vm`
 * to load: a new tenant pays no more than a process and a worker); the runner is then kept for
 * the tenant, and its later runs run in fresh vm contexts of a kept worker (context_worker.ts),
 * which no run can change. Runners stay warm for recent tenants within a budget (the pool's
 * LRU); a runner is killed on timeout, memory exhaustion, output past the cap with the stop
 * policy, or any anomaly, and replaced in the background.
 *
 * @module
 */

import vm from "node:vm";
import { SandboxPool } from "../../pool.ts";
import { MachineLoad } from "../../machine_load.ts";
import { finished } from "../../outcome.ts";
import {
  type Language,
  type PoolStats,
  type RunJob,
  type RunOutcome,
  type Runtime,
  type RuntimeInfo,
  type RuntimeSettings,
  SandboxStartError,
  type SyntaxProblem,
  type ValidationResult,
} from "../../runtime.ts";
import { Jail, JAIL_FILES_DIR, JAIL_LAYERS, JAIL_RUN_DIR, SOCKET_NAME } from "../jail/mod.ts";
import {
  copyFiles,
  createWorkdir,
  everyoneCanExecute,
  JAIL_PACKAGE,
  removeWorkdir,
  type Workdir,
} from "../jail/workdir.ts";
import {
  RUNNER_MODULES,
  runnerCommandLine,
  type RunnerLaunch,
  SERVICE_ENTRY,
} from "./runner_command.ts";
import { JsRunner, type RunnerSupervision } from "./runner_process.ts";
import { OWN_DENO_DIR, settleCache } from "./code_cache.ts";
import { MAX_FRAME_BYTES } from "./protocol.ts";
import { type PreparedSource, SyntaxService, type SyntaxServiceOptions } from "./syntax_service.ts";

export { runnerCommandLine } from "./runner_command.ts";
export type { CommandLine, RunnerCommandOptions, RunnerLaunch } from "./runner_command.ts";

/**
 * Virtual memory V8 reserves in a runner before any user allocation and that RLIMIT_DATA
 * counts. Measured on Deno 2.9.6: with a worker (two isolates) a runner boots at 1088 MiB and
 * fails at 1024; a kept worker may boot while the ended first worker still holds its
 * reservation (three isolates for a moment: "Failed to reserve virtual memory for CodeRange").
 */
const DATA_BASE_MB = 1728;
/** Resident memory of a runner beyond its heap budget (process, two workers), in MiB. */
const RUNNER_OVERHEAD_MB = 192;
/** Default of {@link JavaScriptRuntimeOptions.idleTtlMs}. */
const IDLE_TTL_MS = 60_000;
/** Boots tried for one job when they fail before its code started. */
const BOOT_ATTEMPTS = 3;
/** Share of the machine's memory that idle runners kept for their tenants may use. */
const KEPT_MEMORY_SHARE = 0.25;
/**
 * What an idle kept runner is counted as, in MiB: its resident memory with both workers booted
 * (about 60-80 MiB measured here), with room for what its runs left on its heap.
 */
const KEPT_RUNNER_MB = 128;
/**
 * How long a tenant's run waits for one of the tenant's own busy runners before another boots
 * for it, once the tenant holds its share (see the pool's `tenantShare`), in ms: longer than a
 * short evaluator takes under load, much shorter than a boot.
 */
const OWN_WAIT_MS = 100;
/**
 * The same wait while the machine is busy, in ms: a boot would take its CPU (that of dozens of
 * short runs) from the runs under way, for one more process sharing the same busy cores. It
 * still ends, for a tenant whose runs wait on timers, and bounds what a flood of other tenants
 * (which shrinks a tenant's share of the recent runs) can add to a tenant's runs.
 */
const BUSY_OWN_WAIT_MS = 500;
/**
 * Below this busy share of its CPUs the machine counts as idle: only then do spares boot, and
 * kept runners of tenants that are not bursting boot the worker for their next run.
 */
const IDLE_MACHINE_BUSY = 0.75;

/** Tuning of the runner pool beyond {@link RuntimeSettings}. */
export interface JavaScriptRuntimeOptions {
  /** The Python interpreter that runs the jailer (`FAAS_PYTHON`); default `python3`. */
  python?: string;
  /** Runs one runner may serve for its tenant before it is recycled (default 10 000). */
  maxRunsPerRunner?: number;
  /** Age after which a runner is recycled, in ms (default 10 minutes). */
  maxRunnerAgeMs?: number;
  /** How long a used runner waits for its tenant's next run, in ms (default 60 s). */
  idleTtlMs?: number;
  /** Most idle runners kept for their tenants (default: a quarter of the machine's memory). */
  maxKeptRunners?: number;
  /** Runner boots under way at once (default: 2 per CPU core, at least 2). */
  bootConcurrency?: number;
  /**
   * Runners a tenant alone holds before its further runs first wait for one of them rather
   * than boot another (default: 2 per CPU core); among other tenants, this times its share of
   * the recent runs, at least one.
   */
  tenantShare?: number;
  /**
   * How runner processes are started: `"self"` (the service's executable in runner mode, the
   * only way in a compiled binary) or `"deno"` (`deno run` on the runner module)
   * (`FAAS_RUNNER_MODE`). Default: `"self"` in a compiled binary and `"deno"` otherwise.
   */
  launch?: RunnerLaunch;
  /** Jail layers to leave off (to exercise the fallbacks). */
  layersOff?: readonly string[];
  /** Settings of the processes that parse and type-strip the code (see syntax_service.ts). */
  syntax?: SyntaxServiceOptions;
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
  #load: MachineLoad | undefined;
  #syntax: SyntaxService | undefined;
  #jail: Jail | undefined;
  #workdir: Workdir | undefined;
  #layers: Record<string, boolean> = {};
  #started = false;

  constructor(settings: RuntimeSettings, options: JavaScriptRuntimeOptions) {
    this.#settings = settings;
    this.#options = options;
  }

  async start(): Promise<void> {
    if (this.#started) return;
    try {
      await this.#start();
    } catch (error) {
      await this.shutdown();
      throw error;
    }
    this.#started = true;
  }

  async #start(): Promise<void> {
    const settings = this.#settings;
    // Code is parsed in syntax processes, never in this thread; they boot while runners do.
    this.#syntax = new SyntaxService({
      launch: this.#launch(),
      dataLimit: true,
      ...this.#options.syntax,
    });
    const syntaxStarted = this.#syntax.start();
    syntaxStarted.catch(() => {}); // awaited below; a failure before that must not go unhandled
    const workdir = this.#workdir = await createWorkdir("js");
    await copyFiles(workdir, "js", RUNNER_MODULES);
    const packageDir = await copyFiles(workdir, "py", []);
    await copyFiles(workdir, "py/faas_jail", JAIL_PACKAGE);
    await Deno.mkdir(`${workdir.files}/cache`, { mode: 0o755 });
    const launch = this.#launch();
    const jail = this.#jail = await Jail.start(
      { runDir: workdir.runDir, mountPoint: workdir.mountPoint, packageDir },
      {
        python: this.#options.python ?? "python3",
        name: workdir.dir.slice(workdir.dir.lastIndexOf("/") + 1),
        maxSlots: Math.min(1024, 2 * settings.maxInstances + this.#keptRunners() + 8),
        memoryBytes: (settings.memoryLimitMb + RUNNER_OVERHEAD_MB) * 1024 * 1024,
        maxPids: 64 + 4 * (navigator.hardwareConcurrency ?? 1),
        cpuWeight: 100,
        tmpBytes: 8 * 1024 * 1024,
        tmpInodes: 256,
        limits: {
          DATA: (DATA_BASE_MB + settings.memoryLimitMb) * 1024 * 1024,
          NOFILE: 256,
          CORE: 0,
          FSIZE: 16 * 1024 * 1024,
        },
        binds: this.#binds(workdir),
        layersOff: this.#options.layersOff,
        debug: settings.debug,
      },
    );
    this.#layers = jail.layers;
    const missing = settings.requireIsolation.filter((name) => this.#isolation()[name] !== true);
    if (missing.length > 0) {
      throw new Error(
        `required isolation layers are not available on this host: ${missing.join(", ")}`,
      );
    }
    const paths = jail.layers.rootfs ? jailPaths() : await hostPaths(workdir, launch);
    const supervision: RunnerSupervision = {
      maxOutputBytes: settings.maxOutputBytes,
      outputPolicy: this.#settings.outputPolicy,
      memoryLimitMb: settings.memoryLimitMb,
      builtins: vm.runInContext("Object.getOwnPropertyNames(globalThis)", vm.createContext({})),
    };
    const cache = `${paths.files}/cache`;
    // Each runner starts from its own copy of the cache (see code_cache.ts); without a /tmp of
    // its own it reads the compiled modules only, and compiles them anew.
    const ownCache = !Deno.build.standalone && (jail.layers.rootfs || jail.layers.mountns);
    const spawn = async (trusted?: { writable: [string, string][] }) => {
      const own = ownCache && !trusted;
      const command = (token: string) =>
        runnerCommandLine({
          launch,
          modulesDir: `${paths.files}/js`,
          socketPath: paths.socket,
          token,
          memoryLimitMb: settings.memoryLimitMb,
          denoDir: own ? OWN_DENO_DIR : cache,
          executable: paths.executable,
          entry: paths.entry,
        });
      const process = await jail.spawn({
        kind: "program",
        argv: (token) => command(token).argv,
        env: command("").env,
        trusted,
        ownDir: own ? [cache, OWN_DENO_DIR] : undefined,
      });
      const runner = new JsRunner(process, supervision);
      try {
        await runner.boot();
      } catch (error) {
        runner.kill();
        throw error;
      }
      return runner;
    };
    // One trusted runner first: it writes the transpiled modules and V8's code cache that
    // every runner starts from (without it every boot compiles all of it anew, 10-20 % of a
    // boot's CPU).
    if (!Deno.build.standalone) {
      await warmUp(await spawn({ writable: [[`${workdir.files}/cache`, cache]] }));
      await settleCache(`${workdir.files}/cache`);
    }
    const cores = navigator.hardwareConcurrency ?? 1;
    this.#load = new MachineLoad();
    const busy = () => this.#machineBusy();
    const pool: SandboxPool<JsRunner> = new SandboxPool<JsRunner>({
      create: () => spawn(),
      size: settings.poolSize,
      max: Math.max(settings.maxInstances, 1) + this.#keptRunners(),
      maxRuns: this.#options.maxRunsPerRunner ?? 10_000,
      maxAgeMs: this.#options.maxRunnerAgeMs ?? 10 * 60_000,
      idleTtlMs: this.#options.idleTtlMs ?? IDLE_TTL_MS,
      maxIdleKept: this.#keptRunners(),
      bootConcurrency: this.#options.bootConcurrency ?? Math.max(2, 2 * cores),
      tenantShare: this.#options.tenantShare ?? 2 * cores,
      ownWaitMs: OWN_WAIT_MS,
      busyOwnWaitMs: BUSY_OWN_WAIT_MS,
      idle: (): boolean => pool.active < cores && !busy(),
      busy,
      onBoot: (ms, ok, failure) => settings.onSandboxBoot?.("javascript", ms, ok, failure),
    });
    await Promise.all([pool.start(), syntaxStarted]);
    this.#pool = pool;
  }

  async run(job: RunJob): Promise<RunOutcome> {
    const pool = this.#requirePool();
    const file = job.language === "typescript" ? "main.ts" : "main.js";
    const source = await runnableSource(this.#syntax!, job.code, job.language);
    if (!source.ok) return syntaxOutcome(source.problem, file);
    const { code, positions } = source;
    const input = job.input === undefined ? undefined : JSON.stringify(job.input);
    if (tooLargeForFrame(code, input)) return tooLargeOutcome();
    const runnerJob = { code, file, input, timeoutMs: job.timeoutMs, signal: job.signal };
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
    pool.release(runner, result.reusable);
    // A runner that served its first run boots the worker for its tenant's next runs: at once
    // when the tenant keeps several runners busy (its next runs are coming), or when nothing
    // else runs and the CPUs are idle. Otherwise (many tenants, most of them one-off) the boot
    // waits for the tenant's next run: a worker booted for a tenant that never comes back is
    // half a runner boot's CPU, taken from the runs under way.
    const bursting = job.tenant !== undefined && pool.heldBy(job.tenant) > 1;
    const idle = pool.active === 0 && !this.#machineBusy();
    if (result.reusable && runner.runs === 1 && (bursting || idle)) runner.prepare();
    if (!positions) return result.outcome;
    // Transformed TypeScript ran on other lines: stack frames point back at the user's.
    const { stdout, stderr, retVal } = result.outcome;
    const mapped = await positions.rewrite([stdout, stderr, retVal], file);
    return { ...result.outcome, stdout: mapped[0], stderr: mapped[1], retVal: mapped[2] };
  }

  async validate(code: string, language: Language): Promise<ValidationResult> {
    if (language !== "javascript" && language !== "typescript") {
      throw new Error(`expected javascript or typescript, got ${language}`);
    }
    if (!this.#syntax) throw new Error("the javascript runtime is not started: call start() first");
    const source = await this.#syntax.prepare(code, { language, purpose: "validate" });
    return source.ok ? { valid: true, error: null } : { valid: false, error: source.problem };
  }

  stats(): PoolStats {
    if (!this.#pool) return { totalInstances: 0, idleInstances: 0, activeInstances: 0 };
    const { totalInstances, idleInstances, activeInstances } = this.#pool.stats();
    return { totalInstances, idleInstances, activeInstances };
  }

  info(): RuntimeInfo {
    return {
      available: this.#started && (this.#pool?.healthy() ?? false) &&
        (this.#jail?.alive ?? false) && (this.#syntax?.healthy() ?? false),
      version: `Deno ${Deno.version.deno} (V8 ${Deno.version.v8})`,
      isolation: this.#isolation(),
    };
  }

  async shutdown(): Promise<void> {
    this.#started = false;
    this.#load?.stop();
    await Promise.all([this.#pool?.shutdown(), this.#syntax?.shutdown()]);
    await this.#jail?.close();
    if (this.#workdir) await removeWorkdir(this.#workdir);
  }

  /** Whether the machine's CPUs are too busy for work that can wait (see IDLE_MACHINE_BUSY). */
  #machineBusy(): boolean {
    return (this.#load?.busyShare ?? 0) >= IDLE_MACHINE_BUSY;
  }

  #isolation(): Record<string, boolean> {
    const layers: Record<string, boolean> = { process: true, no_permissions_worker: true };
    for (const name of JAIL_LAYERS) layers[name] = this.#layers[name] === true;
    return layers;
  }

  /** Read-only binds of every runner's root (see {@link jailPaths}). */
  #binds(workdir: Workdir): [string, string][] {
    const binds: [string, string][] = [[workdir.files, JAIL_FILES_DIR]];
    binds.push([Deno.execPath(), JAIL_EXECUTABLE]);
    if (this.#launch() === "self" && !Deno.build.standalone) {
      // A self-started runner under `deno run` loads the service's entry and its modules.
      const root = new URL("./", SERVICE_ENTRY).pathname.replace(/\/$/, "");
      binds.push([root, JAIL_SERVICE_DIR]);
    }
    return binds;
  }

  #keptRunners(): number {
    if (this.#options.maxKeptRunners !== undefined) return this.#options.maxKeptRunners;
    // An idle runner holds what it needs between runs, not its whole budget: counting each at
    // its budget kept a dozen runners on 24 GiB, and a mix of 24 tenants rebooted all the time.
    const perRunner = Math.min(this.#settings.memoryLimitMb + RUNNER_OVERHEAD_MB, KEPT_RUNNER_MB) *
      1024 * 1024;
    const total = Deno.systemMemoryInfo().total;
    return Math.max(this.#settings.poolSize, Math.floor((total * KEPT_MEMORY_SHARE) / perRunner));
  }

  #launch(): RunnerLaunch {
    return this.#options.launch ?? (Deno.build.standalone ? "self" : "deno");
  }

  #requirePool(): SandboxPool<JsRunner> {
    if (!this.#pool) throw new Error("the javascript runtime is not started: call start() first");
    return this.#pool;
  }
}

/**
 * The JavaScript a runner runs for `code`, checked as an async function body in a syntax
 * process, or the syntax problem at the user's position (also when TypeScript had to be
 * transformed); a check that could not finish is a problem too, never an exception.
 */
function runnableSource(
  syntax: SyntaxService,
  code: string,
  language: Language,
): Promise<PreparedSource> {
  if (language !== "javascript" && language !== "typescript") {
    return Promise.reject(new Error(`expected javascript or typescript, got ${language}`));
  }
  return syntax.prepare(code, { language, purpose: "run" });
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
  const limit = MAX_FRAME_BYTES / 1024 / 1024;
  return finished(1, {
    stderr: `Uncaught RangeError: code and input together must stay under ${limit} MiB\n`,
    durationMs: 0,
    instanceId: "size-check",
  });
}

function syntaxOutcome(problem: SyntaxProblem, file: string): RunOutcome {
  return finished(1, {
    stderr:
      `Uncaught SyntaxError: ${problem.message}\n    at ${file}:${problem.line}:${problem.column}\n`,
    durationMs: 0,
    instanceId: "syntax-check",
  });
}

/** Where a runner finds its files: inside its root, or on the host without one. */
interface RunnerPaths {
  /** The work dir's files (modules under `js/`, the Deno cache under `cache/`). */
  files: string;
  /** The host's socket. */
  socket: string;
  /** The executable to start. */
  executable: string;
  /** The service's entry module (`self` launch under `deno run`). */
  entry: string;
}

/** Where this executable appears inside a runner's root. */
const JAIL_EXECUTABLE = "/sandbox/bin/deno";
/**
 * Where the service's own dir appears inside a runner's root (`self` launch under `deno run`):
 * never at its host path, which may lie under the /tmp a root replaces with its own.
 */
const JAIL_SERVICE_DIR = "/sandbox/service";

function jailPaths(): RunnerPaths {
  return {
    files: JAIL_FILES_DIR,
    socket: `${JAIL_RUN_DIR}/${SOCKET_NAME}`,
    executable: JAIL_EXECUTABLE,
    entry: `${JAIL_SERVICE_DIR}/main.ts`,
  };
}

/** Host paths, for a host without a root of its own per runner. */
async function hostPaths(workdir: Workdir, launch: RunnerLaunch): Promise<RunnerPaths> {
  const executable = launch === "self" || everyoneCanExecute(Deno.execPath())
    ? Deno.execPath()
    : await copyExecutable(workdir);
  return {
    files: workdir.files,
    socket: `${workdir.runDir}/${SOCKET_NAME}`,
    executable,
    entry: SERVICE_ENTRY.pathname,
  };
}

/** Runs a first and a later run in a trusted runner, then ends it (see its call). */
async function warmUp(runner: JsRunner): Promise<void> {
  try {
    for (let i = 0; i < 2; i++) {
      const { reusable } = await runner.run({
        code: "return 1",
        file: "warm.js",
        timeoutMs: 10_000,
      });
      if (!reusable) break;
    }
  } finally {
    runner.kill();
    await runner.exited;
  }
}

/** A copy of this executable that every uid may run (the original's dir is closed to them). */
async function copyExecutable(workdir: Workdir): Promise<string> {
  const target = `${workdir.files}/deno`;
  await Deno.copyFile(Deno.execPath(), target);
  await Deno.chmod(target, 0o755);
  return target;
}
