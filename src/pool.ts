/**
 * The generic sandbox pool, and the one place where tenant policy lives: it boots sandboxes
 * ahead of demand, leases each to one run at a time, and keeps a used sandbox either for the
 * tenant that used it (a sandbox whose process carries one tenant's runs) or for anyone (a
 * sandbox that gives every run a fresh process of its own). Kept tenant sandboxes are the most
 * recently used ones within a budget; they are recycled after N runs or an age, and whatever
 * dies is replaced. A tenant's runs go to its most recently used sandbox, and a tenant that
 * holds its share waits for its own rather than boot more. Boots go to waiting runs first;
 * spares are booted only while the service is idle. It knows nothing of languages or protocols.
 *
 * @module
 */

import { type PoolStats, SandboxStartError } from "./runtime.ts";

/** What the pool needs of a sandbox. */
export interface Sandbox {
  /** Unique id, reported as `metadata.instance_id`. */
  readonly id: string;
  /** Settles once the sandbox's processes are gone, whatever the reason. */
  readonly exited: Promise<unknown>;
  /** Ends the sandbox at once (kills its whole process group). Idempotent. */
  kill(): void;
}

/** Tuning of a {@link SandboxPool}. */
export interface PoolOptions<S extends Sandbox> {
  /** Boots one sandbox; rejects when it could not be started. */
  create: () => Promise<S>;
  /** Fresh (never used) sandboxes kept booted ahead of demand. */
  size: number;
  /** Most sandboxes alive at once, booting ones included. */
  max: number;
  /** Runs one sandbox may serve (for one tenant) before it is recycled. */
  maxRuns: number;
  /** Age after which a sandbox is recycled instead of reused, in ms. */
  maxAgeMs: number;
  /** How long a used sandbox waits idle for its tenant's next run, in ms. */
  idleTtlMs: number;
  /**
   * Who a used sandbox may serve next: only the tenant that used it (`"tenant"`, the default),
   * or any run (`"any"`, for sandboxes that run each job in a fresh process of their own).
   */
  reuse?: "tenant" | "any";
  /** Most idle sandboxes kept for their tenants; beyond it the least recently used go. */
  maxIdleKept?: number;
  /** Spares (sandboxes for no waiting run) boot only while this says the service is idle. */
  idle?: () => boolean;
  /**
   * Sandboxes a tenant alone may hold before its further runs wait for one of them to come
   * free rather than boot another, up to {@link PoolOptions.ownWaitMs}; among other tenants,
   * this times its share of the recent runs (at least one). Unset: no such wait.
   */
  tenantShare?: number;
  /** Longest such wait, in ms, before a boot is started for the run after all. */
  ownWaitMs?: number;
  /**
   * Longest such wait while {@link PoolOptions.busy} says the machine is busy, in ms; defaults
   * to `ownWaitMs`. A boot then takes its CPU from the runs under way, and one more process of
   * the tenant would only share the same busy cores.
   */
  busyOwnWaitMs?: number;
  /** Whether the machine's CPUs are busy now (see {@link PoolOptions.busyOwnWaitMs}). */
  busy?: () => boolean;
  /** Boots under way at once; defaults to 2. */
  bootConcurrency?: number;
  /** Called after every boot attempt with its duration and, when it failed, why. */
  onBoot?: (durationMs: number, ok: boolean, failure?: string) => void;
}

interface Entry<S> {
  sandbox: S;
  state: "idle" | "active";
  /** The tenant this sandbox is bound to; `undefined` while fresh. */
  tenant?: string;
  /** True once a run was leased, even for an anonymous tenant. */
  used: boolean;
  runs: number;
  bornAt: number;
  lastUsedAt: number;
}

interface Waiter<S> {
  tenant?: string;
  /**
   * Since when (on the clock of `performance.now()`) the waiter takes only its tenant's own
   * sandboxes, for `ownWaitMs` (`busyOwnWaitMs` while the machine is busy); unset: any.
   */
  ownSince?: number;
  resolve: (sandbox: S) => void;
  reject: (error: Error) => void;
}

const MAX_BOOT_BACKOFF_MS = 5_000;
/** Runs over which a tenant's share of the demand is measured. */
const RECENT_RUNS = 64;

/** A pool of sandboxes; see the module doc for its rules. */
export class SandboxPool<S extends Sandbox> {
  #options: PoolOptions<S>;
  #entries = new Map<S, Entry<S>>();
  #waiters: Waiter<S>[] = [];
  #booting = 0;
  #bootFailures = 0;
  #nextBootAt = 0;
  #closed = false;
  #sweeper: ReturnType<typeof setInterval>;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #ownWaitTimer: { timer: ReturnType<typeof setTimeout>; at: number } | undefined;
  #inFlight = new Set<Promise<unknown>>();
  /** Tenants of the last {@link RECENT_RUNS} runs, a ring. */
  #recent: (string | undefined)[] = [];
  #recentCount = 0;

  /** Creates the pool; call {@link SandboxPool.start} to prewarm it. */
  constructor(options: PoolOptions<S>) {
    this.#options = { bootConcurrency: 2, ...options };
    this.#sweeper = setInterval(() => this.#sweep(), 1_000);
    Deno.unrefTimer(this.#sweeper);
  }

  /** Boots the first sandbox and waits for it, so a broken runtime fails at start. */
  async start(): Promise<void> {
    const sandbox = await this.#options.create();
    this.#adopt(sandbox);
    this.#pump();
  }

  /**
   * Leases a sandbox for one run of `tenant`: one already bound to that tenant, else a fresh
   * one. Waits for a boot only when no fresh sandbox is warm.
   */
  acquire(tenant?: string): Promise<S> {
    if (this.#closed) return Promise.reject(new SandboxStartError("the pool is shut down"));
    this.#recent[this.#recentCount++ % RECENT_RUNS] = tenant;
    const ownSince = this.#waitsForOwn(tenant) ? performance.now() : undefined;
    const entry = this.#findIdle(tenant, ownSince === undefined);
    if (entry) {
      this.#lease(entry, tenant);
      this.#pump();
      return Promise.resolve(entry.sandbox);
    }
    const { promise, resolve, reject } = Promise.withResolvers<S>();
    this.#waiters.push({ tenant, ownSince, resolve, reject });
    this.#pump();
    return promise;
  }

  /**
   * Returns a leased sandbox. It is kept for its tenant only when `reusable` is true, the
   * tenant is known, and it is under its run and age limits; otherwise it is killed.
   */
  release(sandbox: S, reusable: boolean): void {
    const entry = this.#entries.get(sandbox);
    if (!entry) return;
    entry.runs++;
    entry.lastUsedAt = performance.now();
    const shared = this.#options.reuse === "any";
    const keep = reusable && !this.#closed && (shared || entry.tenant !== undefined) &&
      entry.runs < this.#options.maxRuns &&
      performance.now() - entry.bornAt < this.#options.maxAgeMs;
    if (keep) {
      entry.state = "idle";
      if (shared) entry.tenant = undefined;
      else this.#keepWithinBudget();
    } else this.#discard(entry);
    this.#pump();
  }

  /** Instance counts for `pool_stats` and /health. */
  stats(): PoolStats & { bootingInstances: number } {
    let idle = 0;
    let active = 0;
    for (const entry of this.#entries.values()) {
      if (entry.state === "idle") idle++;
      else active++;
    }
    return {
      totalInstances: idle + active + this.#booting,
      idleInstances: idle,
      activeInstances: active,
      bootingInstances: this.#booting,
    };
  }

  /** Sandboxes leased to runs now. */
  get active(): number {
    let active = 0;
    for (const entry of this.#entries.values()) if (entry.state === "active") active++;
    return active;
  }

  /** Sandboxes bound to `tenant` now, leased or idle. */
  heldBy(tenant: string): number {
    let held = 0;
    for (const entry of this.#entries.values()) if (entry.tenant === tenant) held++;
    return held;
  }

  /** True unless the last boots kept failing. */
  healthy(): boolean {
    return !this.#closed && this.#bootFailures < 3;
  }

  /** Stops booting, fails waiters, kills every sandbox and waits for them to exit. */
  async shutdown(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    clearTimeout(this.#ownWaitTimer?.timer);
    for (const waiter of this.#waiters.splice(0)) {
      waiter.reject(new SandboxStartError("the pool is shut down"));
    }
    const exits = [...this.#entries.values()].map((entry) => {
      entry.sandbox.kill();
      return entry.sandbox.exited.catch(() => {});
    });
    this.#entries.clear();
    // Boots under way end by killing what they started (the pool is closed): wait for them.
    await Promise.all([...exits, ...this.#inFlight]);
  }

  /**
   * Whether a run of `tenant` first waits for one of the tenant's own sandboxes: when the
   * tenant holds its share of them (see {@link PoolOptions.tenantShare}), all busy. Its runs
   * then queue behind its own runs a little: a run of short CPU-bound code (the usual kind)
   * ends long before a boot would, and more processes for one tenant only share the same
   * cores. Runs that wait on timers get their boot after the wait.
   */
  #waitsForOwn(tenant: string | undefined): boolean {
    const { tenantShare } = this.#options;
    if (tenant === undefined || tenantShare === undefined) return false;
    const share = Math.max(1, Math.ceil(tenantShare * this.#recentShare(tenant)));
    return this.heldBy(tenant) >= share;
  }

  /** When the own-sandbox wait of `waiter` ends (0: it has none). */
  #ownWaitEnd(waiter: Waiter<S>, busy: boolean): number {
    if (waiter.ownSince === undefined) return 0;
    const { ownWaitMs = 0, busyOwnWaitMs = ownWaitMs } = this.#options;
    return waiter.ownSince + (busy ? Math.max(ownWaitMs, busyOwnWaitMs) : ownWaitMs);
  }

  /** The share of the recent runs that were `tenant`'s. */
  #recentShare(tenant: string): number {
    const seen = Math.min(this.#recentCount, RECENT_RUNS);
    let own = 0;
    for (let i = 0; i < seen; i++) if (this.#recent[i] === tenant) own++;
    return own / seen;
  }

  /**
   * The tenant's most recently used idle sandbox (runs gather on the fewest, warmest
   * processes; the others age out), else, when `othersToo`, a fresh or shared one.
   */
  #findIdle(tenant: string | undefined, othersToo = true): Entry<S> | undefined {
    let own: Entry<S> | undefined;
    let warm: Entry<S> | undefined;
    let fresh: Entry<S> | undefined;
    const shared = this.#options.reuse === "any";
    for (const entry of this.#entries.values()) {
      if (entry.state !== "idle") continue;
      if (tenant !== undefined && entry.tenant === tenant) {
        if (!own || entry.lastUsedAt > own.lastUsedAt) own = entry;
        continue;
      }
      if (!othersToo) continue;
      // A shared sandbox that served a run is as good as fresh, and warmer.
      if (shared && entry.used) warm ??= entry;
      else if (!entry.used) fresh ??= entry;
    }
    return own ?? warm ?? fresh;
  }

  /** Ends the least recently used idle tenant sandboxes beyond the budget. */
  #keepWithinBudget(): void {
    const budget = this.#options.maxIdleKept;
    if (budget === undefined) return;
    const kept = [...this.#entries.values()].filter((entry) =>
      entry.state === "idle" && entry.used
    );
    if (kept.length <= budget) return;
    kept.sort((a, b) => a.lastUsedAt - b.lastUsedAt);
    for (const entry of kept.slice(0, kept.length - budget)) this.#discard(entry);
  }

  #lease(entry: Entry<S>, tenant: string | undefined): void {
    entry.state = "active";
    entry.used = true;
    entry.tenant = tenant;
  }

  #adopt(sandbox: S): void {
    const now = performance.now();
    const entry: Entry<S> = {
      sandbox,
      state: "idle",
      used: false,
      runs: 0,
      bornAt: now,
      lastUsedAt: now,
    };
    this.#entries.set(sandbox, entry);
    sandbox.exited.finally(() => {
      if (this.#entries.get(sandbox) !== entry) return;
      this.#entries.delete(sandbox);
      this.#pump();
    });
  }

  #discard(entry: Entry<S>): void {
    this.#entries.delete(entry.sandbox);
    entry.sandbox.kill();
  }

  /** Serves waiters from idle sandboxes, then boots or evicts to meet demand. */
  #pump(): void {
    if (this.#closed) return;
    const now = performance.now();
    let ownWaitEnds = Infinity;
    let bootFor = 0;
    const busy = this.#options.busy?.() === true;
    for (let i = 0; i < this.#waiters.length;) {
      const waiter = this.#waiters[i];
      const until = this.#ownWaitEnd(waiter, busy);
      const othersToo = until <= now;
      const entry = this.#findIdle(waiter.tenant, othersToo);
      if (!entry) {
        if (othersToo) bootFor++;
        else ownWaitEnds = Math.min(ownWaitEnds, until);
        i++;
        continue;
      }
      this.#waiters.splice(i, 1);
      this.#lease(entry, waiter.tenant);
      waiter.resolve(entry.sandbox);
    }
    if (ownWaitEnds < Infinity) this.#pumpAt(ownWaitEnds);
    let freshIdle = 0;
    for (const entry of this.#entries.values()) {
      if (entry.state === "idle" && !entry.used) freshIdle++;
    }
    // Boots for waiting runs come first; spares only while the service is idle.
    const spares = this.#options.idle?.() === false ? 0 : this.#options.size - freshIdle;
    const wanted = bootFor + Math.max(0, spares);
    const concurrency = this.#options.bootConcurrency ?? 2;
    while (this.#booting < wanted && this.#booting < concurrency) {
      if (this.#entries.size + this.#booting >= this.#options.max && !this.#evictIdle()) break;
      if (performance.now() < this.#nextBootAt) {
        this.#scheduleRetry();
        break;
      }
      this.#boot();
    }
  }

  /** Kills the least recently used tenant-bound idle sandbox to make room for a boot. */
  #evictIdle(): boolean {
    let victim: Entry<S> | undefined;
    for (const entry of this.#entries.values()) {
      if (entry.state !== "idle" || !entry.used) continue;
      if (!victim || entry.lastUsedAt < victim.lastUsedAt) victim = entry;
    }
    if (!victim) return false;
    this.#discard(victim);
    return true;
  }

  #boot(): void {
    this.#booting++;
    const startedAt = performance.now();
    const boot = this.#options.create().then(
      (sandbox): Promise<unknown> | undefined => {
        this.#booting--;
        this.#bootFailures = 0;
        this.#nextBootAt = 0;
        this.#options.onBoot?.(performance.now() - startedAt, true);
        if (this.#closed) {
          sandbox.kill();
          return sandbox.exited.catch(() => {});
        }
        this.#adopt(sandbox);
        this.#pump();
      },
      (error: unknown) => {
        this.#booting--;
        this.#bootFailures++;
        this.#nextBootAt = performance.now() +
          Math.min(MAX_BOOT_BACKOFF_MS, 50 * 2 ** this.#bootFailures);
        const reason = error instanceof Error ? error.message : String(error);
        // A boot cut short by the shutdown is no failure of the sandbox.
        if (!this.#closed) this.#options.onBoot?.(performance.now() - startedAt, false, reason);
        const waiter = this.#waiters.shift();
        waiter?.reject(new SandboxStartError(`sandbox failed to start: ${reason}`));
        this.#pump();
      },
    );
    this.#inFlight.add(boot);
    boot.finally(() => this.#inFlight.delete(boot));
  }

  /** Pumps again at `at` (on the clock of `performance.now()`), when a waiter's own-sandbox wait ends. */
  #pumpAt(at: number): void {
    if (this.#ownWaitTimer && this.#ownWaitTimer.at <= at) return;
    if (this.#ownWaitTimer) clearTimeout(this.#ownWaitTimer.timer);
    const timer = setTimeout(() => {
      this.#ownWaitTimer = undefined;
      this.#pump();
    }, Math.max(0, at - performance.now()));
    this.#ownWaitTimer = { timer, at };
  }

  #scheduleRetry(): void {
    if (this.#retryTimer !== undefined) return;
    const timer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#pump();
    }, Math.max(0, this.#nextBootAt - performance.now()));
    // Someone waits for this boot: the process must stay alive for it.
    if (this.#waiters.length === 0) Deno.unrefTimer(timer);
    this.#retryTimer = timer;
  }

  /** Recycles tenant-bound sandboxes idle past their TTL or age; refills spares if idle. */
  #sweep(): void {
    const now = performance.now();
    let changed = false;
    for (const entry of [...this.#entries.values()]) {
      if (entry.state !== "idle") continue;
      const stale = entry.used && now - entry.lastUsedAt > this.#options.idleTtlMs;
      const old = now - entry.bornAt > this.#options.maxAgeMs;
      if (stale || old) {
        this.#discard(entry);
        changed = true;
      }
    }
    // Also the moment to boot spares the service was too busy to boot earlier, and to end the
    // own waits of a machine no longer busy.
    if (changed || this.#options.idle || this.#options.busy) this.#pump();
  }
}
