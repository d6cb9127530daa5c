/**
 * The Python runtime: zygotes in the jail of ../jail, one per slot, each forked from the jailer
 * with the preloaded modules and forking a fresh, jailed process per run. A zygote serves any
 * tenant (a run shares nothing with the one before it but the zygote, which never held a run's
 * data); the pool keeps `poolSize` zygotes warm beyond those in use.
 *
 * @module
 */

import { SandboxPool } from "../../pool.ts";
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
import { Jail, JAIL_LAYERS } from "../jail/mod.ts";
import {
  copyFiles,
  createWorkdir,
  JAIL_PACKAGE,
  removeWorkdir,
  type Workdir,
} from "../jail/workdir.ts";
import { PythonZygote, type ZygoteSupervision } from "./zygote_process.ts";

/** The Python package of the zygote, file by file. */
const ZYGOTE_PACKAGE: readonly URL[] = [
  "__init__.py",
  "frames.py",
  "executor.py",
  "prefault.py",
  "validation.py",
  "zygote.py",
].map((name) => new URL(`./faas_python/${name}`, import.meta.url));

/** Tuning beyond {@link RuntimeSettings}. */
export interface PythonRuntimeOptions {
  /** The Python interpreter; default the settings' `pythonPath` (`FAAS_PYTHON`). */
  python?: string;
  /** Modules imported once at start, which every run inherits (`FAAS_PYTHON_PRELOAD`). */
  preload?: readonly string[];
  /** Jail layers to leave off (to exercise the fallbacks). */
  layersOff?: readonly string[];
  /** RLIMIT_FSIZE of a run and the size of its /tmp, in bytes; default 64 MiB. */
  fileSizeLimitBytes?: number;
  /** Processes and threads of a run; default 64. */
  maxProcesses?: number;
}

/** Time a syntax check may take. */
const VALIDATE_TIMEOUT_MS = 10_000;

/** Longest a zygote may take to have its next run child jailed before it is replaced. */
const SPARE_TIMEOUT_MS = 10_000;

/** Builds the Python runtime (languages `["python"]`); does not start it. */
export function createPythonRuntime(
  settings: RuntimeSettings,
  options: PythonRuntimeOptions = {},
): Runtime {
  return new PythonRuntime(settings, options);
}

class PythonRuntime implements Runtime {
  readonly languages: readonly Language[] = ["python"];
  #settings: RuntimeSettings;
  #options: PythonRuntimeOptions;
  #pool: SandboxPool<PythonZygote> | undefined;
  #jail: Jail | undefined;
  #workdir: Workdir | undefined;
  #version = "";
  #started = false;

  constructor(settings: RuntimeSettings, options: PythonRuntimeOptions) {
    this.#settings = settings;
    this.#options = options;
  }

  async start(): Promise<void> {
    try {
      await this.#start();
      // One real run proves the whole path (jail, imports, limits) before we say ready.
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

  async #start(): Promise<void> {
    const settings = this.#settings;
    const python = await resolvePython(
      this.#options.python ?? "python3",
    );
    this.#version = python.version;
    const workdir = this.#workdir = await createWorkdir("py");
    const packageDir = await copyFiles(workdir, "py", []);
    await copyFiles(workdir, "py/faas_jail", JAIL_PACKAGE);
    await copyFiles(workdir, "py/faas_python", ZYGOTE_PACKAGE);
    const fileSize = this.#options.fileSizeLimitBytes ?? 64 * 1024 * 1024;
    const maxProcesses = this.#options.maxProcesses ?? 64;
    const slots = Math.min(1024, settings.maxInstances + settings.poolSize + 8);
    const jail = this.#jail = await Jail.start(
      { runDir: workdir.runDir, mountPoint: workdir.mountPoint, packageDir },
      {
        python: python.executable,
        name: workdir.dir.slice(workdir.dir.lastIndexOf("/") + 1),
        maxSlots: slots,
        // The run's processes and its /tmp; the zygote's own pages are few (shared with the
        // jailer until written).
        memoryBytes: (settings.memoryLimitMb + 32) * 1024 * 1024 + fileSize,
        maxPids: maxProcesses + 2,
        cpuWeight: 100,
        tmpBytes: fileSize + 1024 * 1024,
        tmpInodes: 4096,
        limits: {},
        binds: [],
        layersOff: this.#options.layersOff,
        debug: settings.debug,
        netnsAhead: 2,
        zygote: {
          path: packageDir,
          preload: [...(this.#options.preload ?? [])],
          memory_limit_bytes: settings.memoryLimitMb * 1024 * 1024,
          limits: { FSIZE: fileSize, NOFILE: 256, NPROC: maxProcesses, CORE: 0 },
        },
      },
    );
    const missing = settings.requireIsolation.filter((name) => this.#isolation()[name] !== true);
    if (missing.length > 0) {
      throw new Error(
        `required isolation layer(s) ${missing.join(", ")} not available for python on this host`,
      );
    }
    const supervision: ZygoteSupervision = {
      maxOutputBytes: settings.maxOutputBytes,
      outputPolicy: this.#settings.outputPolicy,
      memoryLimitMb: settings.memoryLimitMb,
    };
    const pool: SandboxPool<PythonZygote> = new SandboxPool<PythonZygote>({
      create: async () => {
        const zygote = new PythonZygote(await jail.spawn({ kind: "zygote" }), supervision);
        try {
          await zygote.ready();
        } catch (error) {
          zygote.kill();
          throw error;
        }
        return zygote;
      },
      size: settings.poolSize,
      max: slots - 4,
      maxRuns: 100_000,
      maxAgeMs: 60 * 60_000,
      idleTtlMs: 10 * 60_000,
      reuse: "any",
      bootConcurrency: 4,
      onBoot: (ms, ok, failure) => settings.onSandboxBoot?.("python", ms, ok, failure),
    });
    await pool.start();
    this.#pool = pool;
  }

  async run(job: RunJob): Promise<RunOutcome> {
    const zygote = await this.#acquire(job.tenant);
    if (job.onStart?.() === false) {
      this.#pool!.release(zygote, true);
      throw new SandboxStartError("the run was answered before a sandbox was free");
    }
    try {
      const { outcome } = await zygote.run({
        mode: "run",
        code: job.code,
        input: job.input === undefined ? undefined : JSON.stringify(job.input),
        timeoutMs: job.timeoutMs,
        signal: job.signal,
      });
      this.#releaseWhenReady(zygote, outcome.status !== "crashed");
      return outcome;
    } catch (error) {
      this.#pool!.release(zygote, false);
      throw error;
    }
  }

  async validate(code: string, _language: Language): Promise<ValidationResult> {
    const zygote = await this.#acquire(undefined);
    let result;
    try {
      result = await zygote.run({ mode: "validate", code, timeoutMs: VALIDATE_TIMEOUT_MS });
    } catch (error) {
      this.#pool!.release(zygote, false);
      throw error;
    }
    this.#releaseWhenReady(zygote, result.outcome.status !== "crashed");
    const report = result.report;
    if (report?.ok === true) return { valid: true, error: null };
    if (report?.ok === false) {
      return {
        valid: false,
        error: {
          message: typeof report.message === "string" ? report.message : "invalid syntax",
          line: positive(report.line),
          column: positive(report.column),
        },
      };
    }
    throw new Error(
      `the python syntax check failed: ${result.outcome.error ?? result.outcome.status}`,
    );
  }

  /**
   * Gives a zygote back once its next run child is forked and jailed: until then it stays
   * leased, so the next run goes to a zygote whose child already waits, and neither the fork
   * nor the jail is ever on a run's path. Measured on this 2-core VM under load: handing a
   * zygote back at once put ≈ 40 ms of fork and jail setup on every sequential run.
   */
  #releaseWhenReady(zygote: PythonZygote, reusable: boolean): void {
    const pool = this.#pool!;
    if (!reusable) {
      pool.release(zygote, false);
      return;
    }
    const timer = setTimeout(() => zygote.kill(), SPARE_TIMEOUT_MS);
    zygote.ready().then(
      () => pool.release(zygote, true),
      () => pool.release(zygote, false),
    ).finally(() => clearTimeout(timer));
  }

  /** Leases a zygote with a live spare; dead ones are skipped. */
  async #acquire(tenant: string | undefined): Promise<PythonZygote> {
    const pool = this.#pool;
    if (!pool) throw new SandboxStartError("the python runtime is not started");
    let reason = "no live sandbox";
    for (let attempt = 0; attempt < 4; attempt++) {
      const zygote = await pool.acquire(tenant);
      try {
        await zygote.ready();
        return zygote;
      } catch (error) {
        reason = error instanceof Error ? error.message : String(error);
        pool.release(zygote, false);
      }
    }
    throw new SandboxStartError(`python sandbox failed to start: ${reason}`);
  }

  stats(): PoolStats {
    if (!this.#pool) return { totalInstances: 0, idleInstances: 0, activeInstances: 0 };
    const { totalInstances, idleInstances, activeInstances } = this.#pool.stats();
    return { totalInstances, idleInstances, activeInstances };
  }

  info(): RuntimeInfo {
    return {
      available: this.#started && (this.#pool?.healthy() ?? false) && (this.#jail?.alive ?? false),
      version: this.#version,
      isolation: this.#isolation(),
    };
  }

  async shutdown(): Promise<void> {
    this.#started = false;
    await this.#pool?.shutdown();
    await this.#jail?.close();
    if (this.#workdir) await removeWorkdir(this.#workdir);
  }

  #isolation(): Record<string, boolean> {
    const layers: Record<string, boolean> = { process: true };
    for (const name of JAIL_LAYERS) layers[name] = this.#jail?.layers[name] === true;
    return layers;
  }
}

function positive(value: unknown): number {
  return typeof value === "number" && Number.isInteger(value) && value > 0 ? value : 1;
}

/**
 * The configured python (a name on PATH, a shim, or a path) as the real interpreter, and its
 * version; rejects with a message naming the executable when it does not run or is too old.
 */
async function resolvePython(python: string): Promise<{ executable: string; version: string }> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(python, {
      args: [
        "-I",
        "-c",
        "import sys, os; print(sys.executable); print(sys.version.split()[0]); " +
        "print(sys.version_info >= (3, 10) and hasattr(os, 'splice'))",
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`expected a python executable at "${python}": ${reason}`);
  }
  const lines = new TextDecoder().decode(output.stdout).trim().split("\n");
  if (!output.success || lines.length < 3) {
    const stderr = new TextDecoder().decode(output.stderr).trim();
    throw new Error(`expected "${python}" to run python, it failed: ${stderr}`);
  }
  if (lines[2] !== "True") throw new Error(`expected python >= 3.10 at "${python}"`);
  return { executable: lines[0] || python, version: lines[1] };
}
