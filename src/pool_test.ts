/**
 * The generic sandbox pool, with real (cheap) sandboxes: each is a `sleep` subprocess in its
 * own process group, killed with its group like a real runner.
 */

import nodeAssert from "node:assert/strict";
import { type PoolOptions, SandboxPool } from "./pool.ts";
import { SandboxStartError } from "./runtime.ts";

class SleepSandbox {
  readonly id: string;
  readonly exited: Promise<Deno.CommandStatus>;
  readonly pid: number;
  #child: Deno.ChildProcess;
  #killed = false;

  constructor(id: string) {
    this.id = id;
    this.#child = new Deno.Command("sleep", {
      args: ["600"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
      detached: true,
    }).spawn();
    this.pid = this.#child.pid;
    this.exited = this.#child.status;
  }

  kill(): void {
    if (this.#killed) return;
    this.#killed = true;
    try {
      Deno.kill(-this.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

interface Harness {
  pool: SandboxPool<SleepSandbox>;
  created: SleepSandbox[];
  boots: { ms: number; ok: boolean; failure?: string }[];
  /** Makes the next `n` boots fail. */
  failNext(n: number): void;
}

function harness(options: Partial<PoolOptions<SleepSandbox>> = {}): Harness {
  const created: SleepSandbox[] = [];
  const boots: { ms: number; ok: boolean; failure?: string }[] = [];
  let failures = 0;
  const pool = new SandboxPool<SleepSandbox>({
    create: () => {
      if (failures > 0) {
        failures--;
        return Promise.reject(new Error("boot refused by the test"));
      }
      const sandbox = new SleepSandbox(`sleep-${created.length + 1}`);
      created.push(sandbox);
      return Promise.resolve(sandbox);
    },
    size: 2,
    max: 4,
    maxRuns: 3,
    maxAgeMs: 60_000,
    idleTtlMs: 60_000,
    onBoot: (ms, ok, failure) => boots.push({ ms, ok, failure }),
    ...options,
  });
  return { pool, created, boots, failNext: (n) => failures = n };
}

function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

/** Waits until `condition` holds, driven by the pool's own background work. */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function closeAll(h: Harness): Promise<void> {
  await h.pool.shutdown();
  await Promise.all(h.created.map((sandbox) => sandbox.exited));
  for (const sandbox of h.created) nodeAssert.equal(alive(sandbox.pid), false);
}

Deno.test("pool: start boots one sandbox, then prewarms up to size", async () => {
  const h = harness();
  await h.pool.start();
  await until(() => h.pool.stats().idleInstances === 2, "two warm sandboxes");
  nodeAssert.equal(h.pool.stats().totalInstances, 2);
  nodeAssert.equal(h.boots.every((boot) => boot.ok), true);
  await closeAll(h);
});

Deno.test("pool: start rejects when the first boot fails", async () => {
  const h = harness();
  h.failNext(1);
  await nodeAssert.rejects(h.pool.start(), /boot refused/);
  await closeAll(h);
});

Deno.test("pool: a tenant gets its own sandbox back; others never get it", async () => {
  const h = harness();
  await h.pool.start();
  const first = await h.pool.acquire("a");
  h.pool.release(first, true);
  const again = await h.pool.acquire("a");
  nodeAssert.equal(again, first);
  h.pool.release(again, true);
  const other = await h.pool.acquire("b");
  nodeAssert.notEqual(other, first);
  h.pool.release(other, true);
  await closeAll(h);
});

/**
 * Tenant a leases a sandbox, then asks for a second one: the second run must wait for a's own
 * while tenant `other` still gets a sandbox at once.
 */
async function assertWaitsForOwn(h: Harness, other: string): Promise<void> {
  const first = await h.pool.acquire("a");
  let second: SleepSandbox | undefined;
  const waiting = h.pool.acquire("a").then((sandbox) => second = sandbox);
  const others = await h.pool.acquire(other);
  nodeAssert.notEqual(others, first);
  nodeAssert.equal(second, undefined);
  h.pool.release(first, true);
  nodeAssert.equal(await waiting, first);
  h.pool.release(first, true);
  h.pool.release(others, true);
}

Deno.test("pool: a tenant at its share waits for its own sandbox; others still get spares", async () => {
  const h = harness({ tenantShare: 1, ownWaitMs: 60_000 });
  await h.pool.start();
  await until(() => h.pool.stats().idleInstances === 2, "two warm sandboxes");
  await assertWaitsForOwn(h, "b");
  await closeAll(h);
});

Deno.test("pool: a tenant's share is its share of the recent runs", async () => {
  const h = harness({ tenantShare: 2, ownWaitMs: 60_000, size: 2, max: 8 });
  await h.pool.start();
  await until(() => h.pool.stats().idleInstances === 2, "two warm sandboxes");
  // Alone, tenant x may hold two at once.
  const first = await h.pool.acquire("x");
  const second = await h.pool.acquire("x");
  nodeAssert.notEqual(second, first);
  h.pool.release(first, true);
  h.pool.release(second, true);
  // Once tenant b sent most recent runs, a's share is one: its second run waits for its own.
  h.pool.release(await h.pool.acquire("a"), true);
  for (let i = 0; i < 64; i++) h.pool.release(await h.pool.acquire("b"), true);
  await until(() => h.pool.stats().idleInstances >= 5, "a spare besides the kept sandboxes");
  await assertWaitsForOwn(h, "c");
  await closeAll(h);
});

Deno.test("pool: one-off tenants filling the kept budget make no tenant under its share wait", async () => {
  const h = harness({ tenantShare: 4, ownWaitMs: 60_000, maxIdleKept: 2, size: 3, max: 10 });
  await h.pool.start();
  await until(() => h.pool.stats().idleInstances === 3, "three warm sandboxes");
  for (let i = 0; i < 10; i++) h.pool.release(await h.pool.acquire("a"), true);
  const first = await h.pool.acquire("a");
  // Two tenants of one run each fill the budget of kept sandboxes.
  for (const tenant of ["x0", "x1"]) h.pool.release(await h.pool.acquire(tenant), true);
  await until(() => h.pool.stats().idleInstances >= 3, "a spare besides the kept ones");
  // Tenant a, far under its share, takes a spare at once: it does not wait for its own.
  const second = h.pool.acquire("a");
  h.pool.release(first, true);
  nodeAssert.notEqual(await second, first);
  h.pool.release(await second, true);
  await closeAll(h);
});

Deno.test("pool: a tenant's own wait goes on while the service is busy", async () => {
  let busy = true;
  const h = harness({
    tenantShare: 1,
    ownWaitMs: 0,
    busyOwnWaitMs: 60_000,
    size: 1,
    busy: () => busy,
  });
  await h.pool.start();
  // Busy: the wait outlasts ownWaitMs, and a's second run gets a's own sandbox.
  await assertWaitsForOwn(h, "b");
  // Idle again: the wait ends at the next pump, in a sandbox of its own.
  const first = await h.pool.acquire("a");
  const second = h.pool.acquire("a");
  busy = false;
  nodeAssert.notEqual(await second, first);
  h.pool.release(first, true);
  h.pool.release(await second, true);
  await closeAll(h);
});

Deno.test("pool: a tenant's runs go to its most recently used sandbox", async () => {
  const h = harness({ size: 2, maxRuns: 10 });
  await h.pool.start();
  await until(() => h.pool.stats().idleInstances === 2, "two warm sandboxes");
  const older = await h.pool.acquire("a");
  const newer = await h.pool.acquire("a");
  h.pool.release(older, true);
  h.pool.release(newer, true);
  for (let i = 0; i < 3; i++) {
    const next = await h.pool.acquire("a");
    nodeAssert.equal(next, newer);
    h.pool.release(next, true);
  }
  await closeAll(h);
});

Deno.test("pool: a tenant's wait for its own sandbox ends in a boot", async () => {
  const h = harness({ tenantShare: 1, ownWaitMs: 30, size: 0 });
  await h.pool.start();
  const first = await h.pool.acquire("a");
  const booted = h.created.length;
  const second = await h.pool.acquire("a");
  nodeAssert.notEqual(second, first);
  nodeAssert.equal(h.created.length, booted + 1);
  h.pool.release(first, true);
  h.pool.release(second, true);
  await closeAll(h);
});

Deno.test("pool: an anonymous run's sandbox is killed after one use", async () => {
  const h = harness();
  await h.pool.start();
  const sandbox = await h.pool.acquire(undefined);
  h.pool.release(sandbox, true);
  await sandbox.exited;
  nodeAssert.equal(alive(sandbox.pid), false);
  const next = await h.pool.acquire(undefined);
  nodeAssert.notEqual(next, sandbox);
  h.pool.release(next, true);
  await closeAll(h);
});

Deno.test("pool: a sandbox released as not reusable is killed and replaced", async () => {
  const h = harness();
  await h.pool.start();
  const sandbox = await h.pool.acquire("a");
  h.pool.release(sandbox, false);
  await sandbox.exited;
  await until(() => h.pool.stats().idleInstances === 2, "the pool to refill");
  const again = await h.pool.acquire("a");
  nodeAssert.notEqual(again, sandbox);
  h.pool.release(again, true);
  await closeAll(h);
});

Deno.test("pool: a sandbox is recycled after maxRuns", async () => {
  const h = harness({ maxRuns: 2 });
  await h.pool.start();
  const first = await h.pool.acquire("a");
  h.pool.release(first, true);
  nodeAssert.equal(await h.pool.acquire("a"), first);
  h.pool.release(first, true);
  await first.exited;
  const third = await h.pool.acquire("a");
  nodeAssert.notEqual(third, first);
  h.pool.release(third, true);
  await closeAll(h);
});

Deno.test("pool: a sandbox that dies while idle is dropped and replaced", async () => {
  const h = harness();
  await h.pool.start();
  await until(() => h.pool.stats().idleInstances === 2, "two warm sandboxes");
  const victim = h.created[0];
  Deno.kill(-victim.pid, "SIGKILL");
  await victim.exited;
  await until(() => h.created.length === 3 && h.pool.stats().idleInstances === 2, "a replacement");
  const leased = [await h.pool.acquire("x"), await h.pool.acquire("y")];
  nodeAssert.equal(leased.includes(victim), false);
  for (const sandbox of leased) h.pool.release(sandbox, true);
  await closeAll(h);
});

Deno.test("pool: waiters beyond the warm sandboxes are served by boots, up to max", async () => {
  const h = harness({ size: 1, max: 3 });
  await h.pool.start();
  const leases = await Promise.all(["a", "b", "c"].map((tenant) => h.pool.acquire(tenant)));
  nodeAssert.equal(new Set(leases).size, 3);
  nodeAssert.equal(h.pool.stats().activeInstances, 3);
  // A fourth waits until a sandbox frees up.
  const fourth = h.pool.acquire("a");
  h.pool.release(leases[0], true);
  nodeAssert.equal(await fourth, leases[0]);
  h.pool.release(leases[0], true);
  h.pool.release(leases[1], true);
  h.pool.release(leases[2], true);
  nodeAssert.equal(h.pool.stats().totalInstances <= 3, true);
  await closeAll(h);
});

Deno.test("pool: an idle sandbox of another tenant is evicted to make room", async () => {
  const h = harness({ size: 0, max: 1 });
  await h.pool.start();
  const a = await h.pool.acquire("a");
  h.pool.release(a, true);
  const b = await h.pool.acquire("b");
  nodeAssert.notEqual(b, a);
  await a.exited;
  h.pool.release(b, true);
  await closeAll(h);
});

Deno.test("pool: a failed boot rejects a waiter with SandboxStartError", async () => {
  const h = harness({ size: 0, max: 2 });
  await h.pool.start();
  const first = await h.pool.acquire("a");
  h.failNext(1);
  await nodeAssert.rejects(h.pool.acquire("b"), SandboxStartError);
  // The failure is reported with its reason (the service logs it).
  nodeAssert.deepEqual(h.boots.filter((boot) => !boot.ok).map((boot) => boot.failure), [
    "boot refused by the test",
  ]);
  h.pool.release(first, true);
  await closeAll(h);
});

Deno.test("pool: shutdown kills every sandbox and rejects waiters", async () => {
  const h = harness({ size: 1, max: 1 });
  await h.pool.start();
  const busy = await h.pool.acquire("a");
  const waiting = nodeAssert.rejects(h.pool.acquire("b"), SandboxStartError);
  await h.pool.shutdown();
  await waiting;
  await busy.exited;
  await nodeAssert.rejects(h.pool.acquire("c"), SandboxStartError);
  nodeAssert.equal(h.pool.healthy(), false);
  await closeAll(h);
});
