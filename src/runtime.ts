/**
 * The runtime interface: what a language sandbox offers the scheduler.
 *
 * Data flows one way: app → scheduler → runtime (pool → sandbox), results back.
 * A runtime never throws for anything user code does; it throws only
 * {@link SandboxStartError} when it could not get user code started at all.
 *
 * @module
 */

import type { RunOutcome } from "./outcome.ts";
import type { OutputPolicy } from "./output.ts";

/** Canonical language names of the wire contract. */
export const LANGUAGES = ["javascript", "typescript", "python"] as const;

/** A canonical language name. */
export type Language = typeof LANGUAGES[number];

/** How a run ended (see outcome.ts, which owns each ending). */
export type { RunOutcome, RunStatus } from "./outcome.ts";

/** One run, as handed to a runtime by the scheduler. */
export interface RunJob {
  /** Unique id of the request, echoed as `metadata.task_id`. */
  taskId: string;
  /** Canonical language. */
  language: Language;
  /** The user's source code. */
  code: string;
  /** Wall-clock budget of the run in milliseconds. */
  timeoutMs: number;
  /** Any JSON value, visible to the code as `input`; `undefined` when absent. */
  input?: unknown;
  /**
   * Tenant key (`ext.space_id`). `undefined` means an anonymous tenant of its own:
   * the sandbox that runs it must never serve another run.
   */
  tenant?: string;
  /**
   * Called by the runtime once it holds a sandbox and is about to hand it the code (again
   * for each sandbox it tries). The wait until then is queue time, and the run's deadline
   * counts from then. Returns false when the run was already answered without it: the
   * runtime then gives the sandbox back and does not run the code.
   */
  onStart?: () => boolean;
  /**
   * Fires when nobody waits for the answer any more (the client went away): the runtime ends
   * the run at once, as at its timeout, so its sandbox serves someone else. The outcome it
   * then resolves with is not reported to anyone.
   */
  signal?: AbortSignal;
}

/** Position of a syntax error, 1-based and relative to the submitted code. */
export interface SyntaxProblem {
  /** What the parser said. */
  message: string;
  /** 1-based line in the submitted code. */
  line: number;
  /** 1-based column in the submitted code. */
  column: number;
}

/** Answer of a syntax check. */
export type ValidationResult =
  | { valid: true; error: null }
  | { valid: false; error: SyntaxProblem };

/** Instance counts, as in the contract's `pool_stats`. */
export interface PoolStats {
  /** All live sandboxes (idle, active and booting). */
  totalInstances: number;
  /** Warm sandboxes ready for a run. */
  idleInstances: number;
  /** Sandboxes running user code now. */
  activeInstances: number;
}

/** What `/health` says about one runtime. */
export interface RuntimeInfo {
  /** True while the runtime can run code. */
  available: boolean;
  /** Version of the underlying engine (Deno/V8 or CPython). */
  version: string;
  /** Isolation layers active on this host, by name (e.g. `uid`, `netns`, `seccomp`). */
  isolation: Record<string, boolean>;
}

/** A language runtime: a pool of sandboxes for one or more languages. */
export interface Runtime {
  /** The canonical languages this runtime serves. */
  readonly languages: readonly Language[];
  /** Probes the host, prewarms the pool; rejects when the runtime cannot work here. */
  start(): Promise<void>;
  /** Runs one job; never rejects for anything the user code does. */
  run(job: RunJob): Promise<RunOutcome>;
  /** Checks syntax without running anything. */
  validate(code: string, language: Language): Promise<ValidationResult>;
  /** Current instance counts. */
  stats(): PoolStats;
  /** Availability, version and isolation layers. */
  info(): RuntimeInfo;
  /** Kills every sandbox process and stops booting new ones. */
  shutdown(): Promise<void>;
}

/**
 * Thrown by {@link Runtime.run} when the sandbox failed before user code started
 * (boot failure, runner died while idle). The scheduler retries such a job once on
 * a fresh sandbox; user code is never re-run.
 */
export class SandboxStartError extends Error {
  /** Creates the error with a message that says what failed. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SandboxStartError";
  }
}

/**
 * Settings every runtime factory receives (from the FAAS_* configuration): only what means the
 * same for every language. What one runtime alone needs (its executable, how it starts its
 * processes, what it preloads) is that factory's own options, passed by its registration.
 */
export interface RuntimeSettings {
  /** Fresh sandboxes booted ahead of demand (`FAAS_POOL_SIZE`). */
  poolSize: number;
  /** Most runs at once (`FAAS_MAX_INSTANCES`). */
  maxInstances: number;
  /** Memory budget of one sandbox in MiB (`FAAS_MEMORY_LIMIT_MB`). */
  memoryLimitMb: number;
  /** Cap on stdout and on stderr of one run, in bytes (`FAAS_MAX_OUTPUT_BYTES`). */
  maxOutputBytes: number;
  /** Past the output cap, keep head and tail (`truncate`) or stop the run (`stop`) (`FAAS_OUTPUT_POLICY`). */
  outputPolicy: OutputPolicy;
  /** Isolation layers that must be active or `start()` rejects (`FAAS_REQUIRE_ISOLATION`). */
  requireIsolation: readonly string[];
  /** Verbose logs (`FAAS_DEBUG`). */
  debug: boolean;
  /** Told after every sandbox boot attempt (with why, when it failed): metrics and logs. */
  onSandboxBoot?: (language: Language, durationMs: number, ok: boolean, failure?: string) => void;
}
