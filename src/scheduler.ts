/**
 * The scheduler: admits runs, queues them by priority and, within a priority, round-robin
 * across tenants, so one tenant's burst cannot starve another tenant's single request. It
 * keeps at most `maxConcurrent` runs in flight, rejects new runs when the queue is full or the
 * service is draining, retries once a run whose sandbox failed before user code started, and
 * answers every accepted run even when a runtime fails to settle in time.
 *
 * @module
 */

import {
  type Language,
  type PoolStats,
  type RunJob,
  type RunOutcome,
  type Runtime,
  SandboxStartError,
} from "./runtime.ts";
import { PRIORITIES, type Priority } from "./schemas.ts";

/** A run as submitted to the scheduler. */
export interface ScheduledJob extends RunJob {
  /** Queue priority. */
  priority: Priority;
}

/** Why a run was not accepted or left the queue without running. */
export type RejectionKind = "queue_full" | "draining" | "cancelled";

/** A run the scheduler did not run; `kind` decides the HTTP answer. */
export class SchedulerRejection extends Error {
  /** Why the run was not run. */
  readonly kind: RejectionKind;

  /** Creates the rejection of the given kind. */
  constructor(kind: RejectionKind, message: string) {
    super(message);
    this.name = "SchedulerRejection";
    this.kind = kind;
  }
}

/** The answer to an accepted run. */
export interface ScheduledResult {
  /** What the runtime reported, or what the scheduler decided when the runtime failed. */
  outcome: RunOutcome;
  /** Time before the code started (waiting for a slot, then for a sandbox), in whole ms. */
  queueTimeMs: number;
  /** Attempts made: 2 when the first sandbox failed before user code started. */
  attempts: number;
  /**
   * The runtime's instance counts taken when it started the code (its `onStart`), so while
   * the run held its sandbox; `undefined` when the code never started.
   */
  poolStats?: PoolStats;
}

/** Counters for `/health`. */
export interface SchedulerStats {
  /** Runs accepted since start. */
  totalTasks: number;
  /** Runs finished with status `success`. */
  completedTasks: number;
  /** Runs finished with any other status. */
  failedTasks: number;
  /** Runs waiting for a slot now. */
  queuedTasks: number;
  /** Runs executing now. */
  runningTasks: number;
  /** Runs refused (queue full or draining). */
  rejectedTasks: number;
  /** Accepted runs dropped from the queue because their client went away. */
  cancelledTasks: number;
  /** Mean execution time of finished runs, whole ms. */
  averageExecutionTime: number;
}

/** Something the scheduler wants logged. */
export interface SchedulerEvent {
  /** What happened. */
  kind: "overdue" | "start_retry" | "runtime_error";
  /** The run concerned. */
  taskId: string;
  /** Details, one line. */
  message: string;
}

/** Tuning of a {@link Scheduler}. */
export interface SchedulerOptions {
  /** Most runs in flight at once. */
  maxConcurrent: number;
  /** Most runs waiting; beyond it new runs are rejected with `queue_full`. */
  queueLimit: number;
  /** The runtime serving a language. */
  runtimeFor: (language: Language) => Runtime | undefined;
  /** Time past a run's timeout after which it is answered even if the runtime has not. */
  graceMs?: number;
  /**
   * Time a run may wait for a sandbox once it has a slot (booting one under load takes a
   * while) before it is answered without running; default 20 000 ms.
   */
  startBudgetMs?: number;
  /** Told about retries, overdue runs and runtime failures. */
  onEvent?: (event: SchedulerEvent) => void;
}

interface Entry {
  job: ScheduledJob;
  tenantKey: string;
  level: number;
  enqueuedAt: number;
  resolve: (result: ScheduledResult) => void;
  reject: (error: SchedulerRejection) => void;
  detach: () => void;
}

/** Queues of one priority level, one per tenant, served in round-robin order. */
class TenantRing {
  #queues = new Map<string, Entry[]>();

  get empty(): boolean {
    return this.#queues.size === 0;
  }

  push(entry: Entry): void {
    const queue = this.#queues.get(entry.tenantKey);
    if (queue) queue.push(entry);
    else this.#queues.set(entry.tenantKey, [entry]);
  }

  /** Takes the next run of the tenant first in turn, then moves that tenant to the back. */
  shift(): Entry | undefined {
    for (const [key, queue] of this.#queues) {
      const entry = queue.shift();
      this.#queues.delete(key);
      if (queue.length > 0) this.#queues.set(key, queue);
      if (entry) return entry;
    }
    return undefined;
  }

  remove(entry: Entry): boolean {
    const queue = this.#queues.get(entry.tenantKey);
    const index = queue?.indexOf(entry) ?? -1;
    if (!queue || index < 0) return false;
    queue.splice(index, 1);
    if (queue.length === 0) this.#queues.delete(entry.tenantKey);
    return true;
  }

  drain(): Entry[] {
    const all = [...this.#queues.values()].flat();
    this.#queues.clear();
    return all;
  }
}

const DEFAULT_GRACE_MS = 2_000;
const DEFAULT_START_BUDGET_MS = 20_000;

/** Admits, queues and runs jobs; see the module doc. */
export class Scheduler {
  #options: SchedulerOptions;
  #levels = PRIORITIES.map(() => new TenantRing());
  #queued = 0;
  #running = 0;
  #closed = false;
  #idleWaiters: (() => void)[] = [];
  #stats = {
    total: 0,
    completed: 0,
    failed: 0,
    rejected: 0,
    cancelled: 0,
    durationSum: 0,
    finished: 0,
  };

  /** Creates a scheduler; it accepts runs at once. */
  constructor(options: SchedulerOptions) {
    this.#options = options;
  }

  /**
   * Submits a run. Resolves with its result once run; rejects with a
   * {@link SchedulerRejection} when refused, or when `signal` fires while it is queued.
   */
  submit(job: ScheduledJob, options: { signal?: AbortSignal } = {}): Promise<ScheduledResult> {
    const { signal } = options;
    if (this.#closed) {
      this.#stats.rejected++;
      return Promise.reject(
        new SchedulerRejection("draining", "the service is shutting down; retry on another"),
      );
    }
    if (signal?.aborted) {
      return Promise.reject(new SchedulerRejection("cancelled", "the client went away"));
    }
    const hasSlot = this.#running < this.#options.maxConcurrent && this.#queued === 0;
    if (!hasSlot && this.#queued >= this.#options.queueLimit) {
      this.#stats.rejected++;
      return Promise.reject(
        new SchedulerRejection(
          "queue_full",
          `the queue is full (${this.#options.queueLimit} runs waiting); retry later`,
        ),
      );
    }
    this.#stats.total++;
    const { promise, resolve, reject } = Promise.withResolvers<ScheduledResult>();
    const entry: Entry = {
      job,
      tenantKey: job.tenant === undefined ? `anonymous:${job.taskId}` : `tenant:${job.tenant}`,
      level: PRIORITIES.indexOf(job.priority),
      enqueuedAt: performance.now(),
      resolve,
      reject,
      detach: () => {},
    };
    if (signal) {
      const onAbort = () => this.#cancel(entry);
      signal.addEventListener("abort", onAbort, { once: true });
      entry.detach = () => signal.removeEventListener("abort", onAbort);
    }
    this.#levels[entry.level].push(entry);
    this.#queued++;
    this.#pump();
    return promise;
  }

  /** Counters for `/health`. */
  stats(): SchedulerStats {
    const s = this.#stats;
    return {
      totalTasks: s.total,
      completedTasks: s.completed,
      failedTasks: s.failed,
      queuedTasks: this.#queued,
      runningTasks: this.#running,
      rejectedTasks: s.rejected,
      cancelledTasks: s.cancelled,
      averageExecutionTime: s.finished ? Math.round(s.durationSum / s.finished) : 0,
    };
  }

  /** True once {@link Scheduler.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Stops accepting runs; queued and running ones continue. */
  close(): void {
    this.#closed = true;
  }

  /** Resolves when nothing is queued or running. */
  idle(): Promise<void> {
    if (this.#queued === 0 && this.#running === 0) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#idleWaiters.push(resolve);
    return promise;
  }

  /** Rejects every queued run with `draining`; returns how many there were. */
  abandonQueued(): number {
    const entries = this.#levels.flatMap((ring) => ring.drain());
    for (const entry of entries) {
      entry.detach();
      entry.reject(
        new SchedulerRejection("draining", "the service shut down before the run started"),
      );
    }
    this.#queued -= entries.length;
    this.#checkIdle();
    return entries.length;
  }

  #cancel(entry: Entry): void {
    if (!this.#levels[entry.level].remove(entry)) return;
    this.#queued--;
    this.#stats.cancelled++;
    entry.reject(new SchedulerRejection("cancelled", "the client went away while queued"));
    this.#checkIdle();
  }

  #pump(): void {
    while (this.#running < this.#options.maxConcurrent && this.#queued > 0) {
      const entry = this.#next();
      if (!entry) break;
      this.#queued--;
      entry.detach();
      this.#running++;
      this.#execute(entry).then(entry.resolve, (error) => {
        // #execute never rejects; this only guards against a bug turning into a hang.
        entry.resolve({
          outcome: failedOutcome("crashed", `internal error: ${message(error)}`, 0),
          queueTimeMs: 0,
          attempts: 0,
        });
      }).finally(() => {
        this.#running--;
        this.#pump();
        this.#checkIdle();
      });
    }
  }

  #next(): Entry | undefined {
    for (const ring of this.#levels) {
      if (!ring.empty) return ring.shift();
    }
    return undefined;
  }

  async #execute(entry: Entry): Promise<ScheduledResult> {
    const { job } = entry;
    let queueTimeMs = Math.round(performance.now() - entry.enqueuedAt);
    let poolStats: PoolStats | undefined;
    const started = (stats: PoolStats | undefined) => {
      queueTimeMs = Math.round(performance.now() - entry.enqueuedAt);
      poolStats = stats;
    };
    let attempts = 0;
    let outcome: RunOutcome | undefined;
    while (outcome === undefined) {
      attempts++;
      const startedAt = performance.now();
      try {
        outcome = await this.#attempt(job, started);
      } catch (error) {
        const durationMs = Math.round(performance.now() - startedAt);
        if (error instanceof SandboxStartError && attempts < 2) {
          this.#event("start_retry", job, `sandbox failed to start, retrying: ${message(error)}`);
          continue;
        }
        const text = error instanceof SandboxStartError
          ? `sandbox failed to start: ${message(error)}`
          : `sandbox failed: ${message(error)}`;
        this.#event("runtime_error", job, text);
        outcome = failedOutcome("crashed", text, durationMs);
      }
    }
    this.#record(outcome);
    return { outcome, queueTimeMs, attempts, poolStats };
  }

  /**
   * One attempt. Waiting for a sandbox is queue time: the deadline (timeout plus grace)
   * counts from the runtime's `onStart`, and before it the wait is bounded by the start
   * budget. A run answered here is never started afterwards: `onStart` then says no.
   */
  #attempt(
    job: ScheduledJob,
    started: (stats: PoolStats | undefined) => void,
  ): Promise<RunOutcome> {
    const runtime = this.#options.runtimeFor(job.language);
    if (!runtime) {
      return Promise.reject(new Error(`no runtime serves ${job.language}`));
    }
    const graceMs = this.#options.graceMs ?? DEFAULT_GRACE_MS;
    const startBudgetMs = this.#options.startBudgetMs ?? DEFAULT_START_BUDGET_MS;
    const deadlineMs = job.timeoutMs + graceMs;
    const { promise, resolve } = Promise.withResolvers<RunOutcome>();
    let answered = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = (ms: number, overdue: () => RunOutcome) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        answered = true;
        resolve(overdue());
      }, ms);
    };
    arm(deadlineMs + startBudgetMs, () => {
      const waited = deadlineMs + startBudgetMs;
      this.#event("overdue", job, `no sandbox started the run within ${waited} ms`);
      return failedOutcome(
        "timeout",
        `no sandbox became free within ${waited} ms; the code did not run`,
        0,
      );
    });
    const onStart = () => {
      if (answered) return false;
      // Taken now, while the runtime holds the run's sandbox: once the run is over its
      // sandbox is back (or gone) and the counts no longer include the run.
      started(poolStatsOf(runtime));
      arm(deadlineMs, () => {
        this.#event("overdue", job, `runtime did not answer within ${deadlineMs} ms`);
        return failedOutcome(
          "timeout",
          `execution timed out after ${job.timeoutMs} ms`,
          deadlineMs,
        );
      });
      return true;
    };
    const run = Promise.resolve().then(() => runtime.run({ ...job, onStart }));
    return Promise.race([run, promise]).finally(() => {
      answered = true;
      clearTimeout(timer);
    });
  }

  #record(outcome: RunOutcome): void {
    const s = this.#stats;
    if (outcome.status === "success") s.completed++;
    else s.failed++;
    s.finished++;
    s.durationSum += outcome.durationMs;
  }

  #checkIdle(): void {
    if (this.#queued !== 0 || this.#running !== 0) return;
    for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }

  #event(kind: SchedulerEvent["kind"], job: RunJob, text: string): void {
    this.#options.onEvent?.({ kind, taskId: job.taskId, message: text });
  }
}

/** The runtime's counts, or `undefined` should it fail: a snapshot must not break the run. */
function poolStatsOf(runtime: Runtime): PoolStats | undefined {
  try {
    const { totalInstances, idleInstances, activeInstances } = runtime.stats();
    return { totalInstances, idleInstances, activeInstances };
  } catch {
    return undefined;
  }
}

function failedOutcome(
  status: "crashed" | "timeout",
  error: string,
  durationMs: number,
): RunOutcome {
  return {
    stdout: "",
    stderr: "",
    retVal: "",
    status,
    exitCode: -1,
    durationMs,
    truncated: false,
    instanceId: "",
    error,
  };
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
