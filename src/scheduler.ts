/**
 * The scheduler: the only way from the HTTP edge to the runtimes. It admits runs, queues them
 * by priority and, within a priority, round-robin across tenants, so one tenant's burst cannot
 * starve another tenant's single request. It keeps at most `maxConcurrent` runs in flight and
 * shares those slots between tenants; rejects new runs when the queue is full or the service is
 * draining; retries once a run whose sandbox failed before user code started; and answers every
 * accepted run even when a runtime fails to settle in time (outcome.ts has the timer ladder).
 *
 * Syntax checks go through it too, in a lane of their own with a small concurrency limit
 * (`maxValidations`), so a burst of them cannot fork an unbounded number of parsers. It also
 * owns the snapshot of the runtimes' instance counts that `/health` and `pool_stats` show.
 *
 * ## Slot shares
 *
 * A tenant holding `ceil(usable / active tenants)` slots or more (its share; at least 1) gets no
 * further slot while another tenant has runs queued; the free slot goes to a tenant under its
 * share, even one of lower priority, so priority orders runs within what each tenant may hold.
 * When every queued tenant is at its share, a free slot still goes to one of them rather than
 * idle. `usable` is `maxConcurrent` less a reserve of one slot in eight: no single tenant ever
 * holds those, so another tenant's run starts at once even while one tenant's burst of slow
 * runs holds every other slot (without a reserve it would wait for one of them to end).
 *
 * @module
 */

import { withTimeout } from "./async.ts";
import { errorMessage } from "./errors.ts";
import { notStarted, type RunOutcome, runtimeFailed, startFailed, timedOut } from "./outcome.ts";
import {
  type Language,
  type PoolStats,
  type RunJob,
  type Runtime,
  type RuntimeInfo,
  SandboxStartError,
  type ValidationResult,
} from "./runtime.ts";

/** Scheduling priorities, most urgent first. */
export const PRIORITIES = ["urgent", "high", "normal", "low"] as const;

/** A scheduling priority. */
export type Priority = typeof PRIORITIES[number];

/** A run as submitted to the scheduler. */
export interface ScheduledJob extends RunJob {
  /** Queue priority. */
  priority: Priority;
  /** Id of the HTTP request, carried into the scheduler's events for the logs. */
  requestId?: string;
}

/** A syntax check as submitted to the scheduler. */
export interface ValidationJob {
  /** Canonical language. */
  language: Language;
  /** The code to check. */
  code: string;
  /** Id of the HTTP request, for the logs. */
  requestId?: string;
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
   * When the code started (the runtime's `onStart`), on the `performance.now()` clock;
   * undefined when it never did. Queue time ends here, execution begins (for traces).
   */
  startedAt?: number;
  /**
   * The runtime's instance counts taken when it started the code (its `onStart`), so while
   * the run held its sandbox; taken when the run was answered if the code never started.
   */
  poolStats: PoolStats;
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
  /** Accepted runs whose client went away: dropped from the queue, or ended early while running. */
  cancelledTasks: number;
  /** Mean execution time of finished runs, whole ms. */
  averageExecutionTime: number;
  /** Syntax checks under way now. */
  runningValidations: number;
  /** Syntax checks waiting for a slot of their own now. */
  queuedValidations: number;
}

/** What the runtimes look like now, as `/health` shows it. */
export interface SchedulerSnapshot {
  /** Queue and run counters. */
  scheduler: SchedulerStats;
  /** Instance counts summed over the runtimes (a runtime serving two languages counted once). */
  pool: PoolStats;
  /** Per enabled language: its runtime's instance counts and what it says about itself. */
  languages: Partial<Record<Language, { pool: PoolStats; info: RuntimeInfo }>>;
}

/** Something the scheduler wants logged. */
export interface SchedulerEvent {
  /** What happened. */
  kind: "overdue" | "start_retry" | "runtime_error";
  /** The run concerned. */
  taskId: string;
  /** The HTTP request of the run, when known. */
  requestId?: string;
  /** Details, one line. */
  message: string;
}

/** Tuning of a {@link Scheduler}. */
export interface SchedulerOptions {
  /** Most runs in flight at once. */
  maxConcurrent: number;
  /** Most runs waiting; beyond it new runs are rejected with `queue_full`. Syntax checks too. */
  queueLimit: number;
  /** The runtime serving a language. */
  runtimeFor: (language: Language) => Runtime | undefined;
  /** Languages the snapshot reports, in order; default none. */
  languages?: readonly Language[];
  /** Most syntax checks at once; default the number of CPU cores. */
  maxValidations?: number;
  /**
   * Time a syntax check may take, past which (plus `graceMs`) it is answered as failed;
   * default 30 000 ms.
   */
  validationTimeoutMs?: number;
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
  started: boolean;
  /** Fires when the client went away: in the queue the entry leaves it, running the run ends. */
  signal?: AbortSignal;
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

  /**
   * Takes the next run of the first tenant in turn that `may` start one, then moves that tenant
   * to the back; tenants passed over keep their turn.
   */
  shift(may: (tenantKey: string) => boolean): Entry | undefined {
    for (const [key, queue] of this.#queues) {
      if (!may(key)) continue;
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

/** Runs and queued runs of one tenant; a tenant with neither is forgotten. */
interface TenantLoad {
  running: number;
  queued: number;
}

interface Validation {
  job: ValidationJob;
  resolve: (result: ValidationResult) => void;
  reject: (error: Error) => void;
  detach: () => void;
}

const DEFAULT_GRACE_MS = 2_000;
const DEFAULT_START_BUDGET_MS = 20_000;
const DEFAULT_VALIDATION_TIMEOUT_MS = 30_000;
/** One slot in this many is kept from any single tenant (see the module doc). */
const RESERVE_DIVISOR = 8;

/** Admits, queues and runs jobs; see the module doc. */
export class Scheduler {
  #options: SchedulerOptions;
  #levels = PRIORITIES.map(() => new TenantRing());
  #tenants = new Map<string, TenantLoad>();
  #queued = 0;
  #running = 0;
  #validations: Validation[] = [];
  #validating = 0;
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
    const refused = this.#refusal(signal);
    if (refused) return Promise.reject(refused);
    const { promise, resolve, reject } = Promise.withResolvers<ScheduledResult>();
    const entry: Entry = {
      job,
      tenantKey: job.tenant === undefined ? `anonymous:${job.taskId}` : `tenant:${job.tenant}`,
      level: PRIORITIES.indexOf(job.priority),
      enqueuedAt: performance.now(),
      started: false,
      signal,
      resolve,
      reject,
      detach: () => {},
    };
    this.#enqueue(entry);
    this.#pump();
    if (!entry.started && this.#queued > this.#options.queueLimit) {
      this.#dequeue(entry);
      this.#stats.rejected++;
      return Promise.reject(this.#queueFull());
    }
    this.#stats.total++;
    if (!entry.started && signal) {
      const onAbort = () => this.#cancel(entry);
      signal.addEventListener("abort", onAbort, { once: true });
      entry.detach = () => signal.removeEventListener("abort", onAbort);
    }
    return promise;
  }

  /**
   * Checks syntax in the lane of syntax checks: at most `maxValidations` at once, the rest
   * waiting in arrival order. Rejects with a {@link SchedulerRejection} as {@link submit} does,
   * and with an `Error` when the runtime gives no verdict within its deadline.
   */
  validate(job: ValidationJob, options: { signal?: AbortSignal } = {}): Promise<ValidationResult> {
    const { signal } = options;
    const refused = this.#refusal(signal);
    if (refused) return Promise.reject(refused);
    const waiting = this.#validating >= this.#maxValidations() || this.#validations.length > 0;
    if (waiting && this.#validations.length >= this.#options.queueLimit) {
      this.#stats.rejected++;
      return Promise.reject(this.#queueFull());
    }
    const { promise, resolve, reject } = Promise.withResolvers<ValidationResult>();
    const validation: Validation = { job, resolve, reject, detach: () => {} };
    if (signal) {
      const onAbort = () => this.#cancelValidation(validation);
      signal.addEventListener("abort", onAbort, { once: true });
      validation.detach = () => signal.removeEventListener("abort", onAbort);
    }
    this.#validations.push(validation);
    this.#pumpValidations();
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
      runningValidations: this.#validating,
      queuedValidations: this.#validations.length,
    };
  }

  /** Counters, instance counts and runtime info of every enabled language, taken now. */
  snapshot(): SchedulerSnapshot {
    const pool = { totalInstances: 0, idleInstances: 0, activeInstances: 0 };
    const languages: SchedulerSnapshot["languages"] = {};
    const counted = new Set<Runtime>();
    for (const language of this.#options.languages ?? []) {
      const runtime = this.#options.runtimeFor(language);
      if (!runtime) continue;
      const stats = poolStatsOf(runtime);
      languages[language] = { pool: stats, info: runtime.info() };
      if (counted.has(runtime)) continue;
      counted.add(runtime);
      pool.totalInstances += stats.totalInstances;
      pool.idleInstances += stats.idleInstances;
      pool.activeInstances += stats.activeInstances;
    }
    return { scheduler: this.stats(), pool, languages };
  }

  /** Instance counts of the runtime serving `language` (zeros when none does). */
  poolStats(language: Language): PoolStats {
    const runtime = this.#options.runtimeFor(language);
    return runtime ? poolStatsOf(runtime) : emptyPoolStats();
  }

  /** True once {@link Scheduler.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Stops accepting runs and syntax checks; queued and running ones continue. */
  close(): void {
    this.#closed = true;
  }

  /** Resolves when no run and no syntax check is queued or under way. */
  idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#idleWaiters.push(resolve);
    return promise;
  }

  /** Rejects every queued run and syntax check with `draining`; returns how many runs there were. */
  abandonQueued(): number {
    const entries = this.#levels.flatMap((ring) => ring.drain());
    for (const entry of entries) {
      this.#load(entry.tenantKey).queued--;
      this.#forget(entry.tenantKey);
      entry.detach();
      entry.reject(
        new SchedulerRejection("draining", "the service shut down before the run started"),
      );
    }
    this.#queued -= entries.length;
    for (const validation of this.#validations.splice(0)) {
      validation.detach();
      validation.reject(
        new SchedulerRejection("draining", "the service shut down before the check started"),
      );
    }
    this.#checkIdle();
    return entries.length;
  }

  #refusal(signal: AbortSignal | undefined): SchedulerRejection | undefined {
    if (this.#closed) {
      this.#stats.rejected++;
      return new SchedulerRejection("draining", "the service is shutting down; retry on another");
    }
    if (signal?.aborted) return new SchedulerRejection("cancelled", "the client went away");
    return undefined;
  }

  #queueFull(): SchedulerRejection {
    return new SchedulerRejection(
      "queue_full",
      `the queue is full (${this.#options.queueLimit} runs waiting); retry later`,
    );
  }

  #enqueue(entry: Entry): void {
    this.#levels[entry.level].push(entry);
    this.#load(entry.tenantKey).queued++;
    this.#queued++;
  }

  #dequeue(entry: Entry): boolean {
    if (!this.#levels[entry.level].remove(entry)) return false;
    this.#load(entry.tenantKey).queued--;
    this.#forget(entry.tenantKey);
    this.#queued--;
    return true;
  }

  #cancel(entry: Entry): void {
    if (!this.#dequeue(entry)) return;
    this.#stats.cancelled++;
    entry.reject(new SchedulerRejection("cancelled", "the client went away while queued"));
    this.#checkIdle();
  }

  #pump(): void {
    while (this.#running < this.#options.maxConcurrent && this.#queued > 0) {
      const entry = this.#next();
      if (!entry) break;
      const load = this.#load(entry.tenantKey);
      load.queued--;
      load.running++;
      this.#queued--;
      this.#running++;
      entry.started = true;
      entry.detach();
      this.#execute(entry).then(entry.resolve, (error) => {
        if (error instanceof SchedulerRejection) return entry.reject(error);
        // Nothing else rejects #execute; this only guards against a bug turning into a hang.
        entry.resolve({
          outcome: runtimeFailed(`internal error: ${errorMessage(error)}`, 0),
          queueTimeMs: 0,
          attempts: 0,
          poolStats: this.poolStats(entry.job.language),
        });
      }).finally(() => {
        this.#running--;
        this.#load(entry.tenantKey).running--;
        this.#forget(entry.tenantKey);
        this.#pump();
        this.#checkIdle();
      });
    }
  }

  /** The next run to start under the slot shares (see the module doc). */
  #next(): Entry | undefined {
    const usable = this.#options.maxConcurrent -
      Math.floor(this.#options.maxConcurrent / RESERVE_DIVISOR);
    const share = Math.max(1, Math.ceil(usable / this.#tenants.size));
    const underShare = (key: string) => {
      const load = this.#load(key);
      const othersWaiting = this.#queued > load.queued;
      return load.running < (othersWaiting ? share : usable);
    };
    const underUsable = (key: string) => this.#load(key).running < usable;
    for (const may of [underShare, underUsable]) {
      for (const ring of this.#levels) {
        const entry = ring.empty ? undefined : ring.shift(may);
        if (entry) return entry;
      }
    }
    return undefined;
  }

  #load(key: string): TenantLoad {
    let load = this.#tenants.get(key);
    if (!load) {
      load = { running: 0, queued: 0 };
      this.#tenants.set(key, load);
    }
    return load;
  }

  #forget(key: string): void {
    const load = this.#tenants.get(key);
    if (load && load.running === 0 && load.queued === 0) this.#tenants.delete(key);
  }

  async #execute(entry: Entry): Promise<ScheduledResult> {
    const { job } = entry;
    let queueTimeMs = Math.round(performance.now() - entry.enqueuedAt);
    let poolStats: PoolStats | undefined;
    let startedAt: number | undefined;
    const started = (stats: PoolStats) => {
      startedAt = performance.now();
      queueTimeMs = Math.round(startedAt - entry.enqueuedAt);
      poolStats = stats;
    };
    let attempts = 0;
    let outcome: RunOutcome | undefined;
    while (outcome === undefined) {
      attempts++;
      const startedAt = performance.now();
      try {
        outcome = await this.#attempt(job, entry.signal, started);
      } catch (error) {
        const durationMs = performance.now() - startedAt;
        if (error instanceof SandboxStartError && attempts < 2) {
          this.#event(
            "start_retry",
            job,
            `sandbox failed to start, retrying: ${errorMessage(error)}`,
          );
          continue;
        }
        outcome = error instanceof SandboxStartError
          ? startFailed(errorMessage(error), durationMs)
          : runtimeFailed(errorMessage(error), durationMs);
        this.#event("runtime_error", job, outcome.error ?? "");
      }
    }
    if (entry.signal?.aborted) {
      // The runtime ended the run early; its outcome is nobody's answer.
      this.#stats.cancelled++;
      throw new SchedulerRejection("cancelled", "the client went away during the run");
    }
    this.#record(outcome);
    return {
      outcome,
      queueTimeMs,
      attempts,
      poolStats: poolStats ?? this.poolStats(job.language),
      startedAt,
    };
  }

  /**
   * One attempt. Waiting for a sandbox is queue time: the deadline (timeout plus grace)
   * counts from the runtime's `onStart`, and before it the wait is bounded by the start
   * budget. A run answered here is never started afterwards: `onStart` then says no.
   */
  #attempt(
    job: ScheduledJob,
    signal: AbortSignal | undefined,
    started: (stats: PoolStats) => void,
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
      return notStarted(waited);
    });
    const onStart = () => {
      if (answered) return false;
      // Taken now, while the runtime holds the run's sandbox: once the run is over its
      // sandbox is back (or gone) and the counts no longer include the run.
      started(poolStatsOf(runtime));
      arm(deadlineMs, () => {
        this.#event("overdue", job, `runtime did not answer within ${deadlineMs} ms`);
        return timedOut(job.timeoutMs, { durationMs: deadlineMs });
      });
      return true;
    };
    const run = Promise.resolve().then(() => runtime.run({ ...job, onStart, signal }));
    return Promise.race([run, promise]).finally(() => {
      answered = true;
      clearTimeout(timer);
    });
  }

  #pumpValidations(): void {
    while (this.#validating < this.#maxValidations() && this.#validations.length > 0) {
      const validation = this.#validations.shift()!;
      validation.detach();
      this.#validating++;
      // The slot stays taken until the runtime is done with the check (or its deadline
      // passed), so no more parsers run at once than the limit.
      this.#check(validation.job).then(validation.resolve, validation.reject).finally(() => {
        this.#validating--;
        this.#pumpValidations();
        this.#checkIdle();
      });
    }
  }

  async #check(job: ValidationJob): Promise<ValidationResult> {
    const runtime = this.#options.runtimeFor(job.language);
    if (!runtime) throw new Error(`no runtime serves ${job.language}`);
    const deadlineMs = this.#validationDeadlineMs();
    const verdict = await withTimeout(
      Promise.resolve().then(() => runtime.validate(job.code, job.language)),
      deadlineMs,
    );
    if (verdict === undefined) {
      throw new Error(`the ${job.language} syntax check did not answer within ${deadlineMs} ms`);
    }
    return verdict;
  }

  #maxValidations(): number {
    return this.#options.maxValidations ?? Math.max(1, navigator.hardwareConcurrency || 1);
  }

  #validationDeadlineMs(): number {
    return (this.#options.validationTimeoutMs ?? DEFAULT_VALIDATION_TIMEOUT_MS) +
      (this.#options.graceMs ?? DEFAULT_GRACE_MS);
  }

  #cancelValidation(validation: Validation): void {
    const index = this.#validations.indexOf(validation);
    if (index < 0) return;
    this.#validations.splice(index, 1);
    validation.reject(new SchedulerRejection("cancelled", "the client went away while queued"));
    this.#checkIdle();
  }

  #record(outcome: RunOutcome): void {
    const s = this.#stats;
    if (outcome.status === "success") s.completed++;
    else s.failed++;
    s.finished++;
    s.durationSum += outcome.durationMs;
  }

  #isIdle(): boolean {
    return this.#queued === 0 && this.#running === 0 && this.#validating === 0 &&
      this.#validations.length === 0;
  }

  #checkIdle(): void {
    if (!this.#isIdle()) return;
    for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }

  #event(kind: SchedulerEvent["kind"], job: ScheduledJob, text: string): void {
    this.#options.onEvent?.({
      kind,
      taskId: job.taskId,
      requestId: job.requestId,
      message: text,
    });
  }
}

/** The runtime's counts as integers, zeros should it fail: a snapshot must not break a run. */
function poolStatsOf(runtime: Runtime): PoolStats {
  try {
    const { totalInstances, idleInstances, activeInstances } = runtime.stats();
    return {
      totalInstances: count(totalInstances),
      idleInstances: count(idleInstances),
      activeInstances: count(activeInstances),
    };
  } catch {
    return emptyPoolStats();
  }
}

function emptyPoolStats(): PoolStats {
  return { totalInstances: 0, idleInstances: 0, activeInstances: 0 };
}

/** A finite, non-negative integer; 0 for anything else. */
function count(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) ? Math.max(0, Math.round(value)) : 0;
}
