import { assert, assertEquals, assertStringIncludes } from "./helpers/assert.ts";
import { EchoRuntime } from "./helpers/echo_runtime.ts";
import { startTestService } from "./helpers/test_service.ts";
import { schedulerStats, until, untilQueued } from "./helpers/wait.ts";
import { type ScheduledJob, Scheduler, SchedulerRejection } from "../src/scheduler.ts";
import { SandboxStartError } from "../src/runtime.ts";
import { withTimeout } from "../src/async.ts";

function run(code: string, extra: Record<string, unknown> = {}) {
  return { language: "javascript", code, ...extra };
}

Deno.test("queued runs start by priority: urgent, high, normal, low", async () => {
  await using s = await startTestService({ FAAS_MAX_INSTANCES: "1" });
  const blocker = s.post("/run_code", run("gate hold"));
  await s.js.waitForStarts(1);
  const answers = [];
  for (const priority of ["low", "normal", "high", "urgent"]) {
    answers.push(s.post("/run_code", run(`print ${priority}`, { priority })));
    await untilQueued(s.url, answers.length); // arrival order is low first
  }
  s.js.open("hold");
  for (const answer of [blocker, ...answers]) assertEquals((await answer).status, 200);
  assertEquals(
    s.js.started.map((started) => started.job.code),
    ["gate hold", "print urgent", "print high", "print normal", "print low"],
  );
});

Deno.test("a late single run of tenant B overtakes most of tenant A's earlier burst", async () => {
  await using s = await startTestService({ FAAS_MAX_INSTANCES: "1" });
  const blocker = s.post("/run_code", run("gate hold", { ext: { space_id: "A" } }));
  await s.js.waitForStarts(1);
  const burst = Array.from(
    { length: 30 },
    (_, i) => s.post("/run_code", run(`print a${i}`, { ext: { space_id: "A" } })),
  );
  await untilQueued(s.url, 30);
  const late = s.post("/run_code", run("print b", { ext: { space_id: "B" } }));
  await untilQueued(s.url, 31);
  s.js.open("hold");
  const responses = await Promise.all([blocker, ...burst, late]);
  for (const response of responses) {
    assertEquals(response.status, 200);
    await response.body?.cancel();
  }
  const order = s.js.started.map((started) => started.job.code);
  const position = order.indexOf("print b");
  // Round-robin: B waits for at most one more run of A.
  assert(position >= 1 && position <= 2, `B started at ${position}: ${order.join(",")}`);
  const afterB = order.slice(position + 1).filter((code) => code.startsWith("print a")).length;
  assert(afterB >= 29, `${afterB} of A's runs started after B's`);
});

Deno.test("anonymous runs are each their own tenant", async () => {
  await using s = await startTestService({ FAAS_MAX_INSTANCES: "1" });
  const blocker = s.post("/run_code", run("gate hold", { ext: { space_id: "A" } }));
  await s.js.waitForStarts(1);
  const burst = Array.from(
    { length: 10 },
    (_, i) => s.post("/run_code", run(`print a${i}`, { ext: { space_id: "A" } })),
  );
  await untilQueued(s.url, 10);
  const anonymous = [s.post("/run_code", run("print x")), s.post("/run_code", run("print y"))];
  await untilQueued(s.url, 12);
  s.js.open("hold");
  for (const response of await Promise.all([blocker, ...burst, ...anonymous])) {
    await response.body?.cancel();
  }
  const order = s.js.started.map((started) => started.job.code);
  assert(order.indexOf("print x") <= 4 && order.indexOf("print y") <= 4, order.join(","));
});

Deno.test("a full queue answers 503 with Retry-After and every accepted run is answered", async () => {
  await using s = await startTestService({ FAAS_MAX_INSTANCES: "2", FAAS_QUEUE_LIMIT: "3" });
  const total = 25;
  const responses = Array.from(
    { length: total },
    (_, i) => s.post("/run_code", run(`gate hold\nprint ${i}`, { ext: { space_id: `t${i % 3}` } })),
  );
  // 2 running + 3 queued are accepted; the other 20 are refused at once.
  await until(async () => (await schedulerStats(s.url)).rejectedTasks === total - 5, {
    what: "rejections",
  });
  const stats = await schedulerStats(s.url);
  assertEquals(stats.runningTasks, 2);
  assertEquals(stats.queuedTasks, 3);
  s.js.open("hold");
  const answered = await Promise.all(responses);
  let ok = 0;
  for (const response of answered) {
    const body = await response.json();
    if (response.status === 200) {
      ok++;
      assertEquals(body.metadata.status, "success");
    } else {
      assertEquals(response.status, 503);
      assertEquals(response.headers.get("retry-after"), "1");
      assertStringIncludes(body.error, "queue is full");
    }
  }
  assertEquals(ok, 5);
  const after = await schedulerStats(s.url);
  assertEquals(after.totalTasks, 5);
  assertEquals(after.completedTasks, 5);
  const metrics = await (await fetch(s.url + "/metrics")).text();
  assertStringIncludes(metrics, 'faas_rejected_requests_total{reason="queue_full"} 20');
});

Deno.test("a client that disconnects while queued is dropped from the queue", async () => {
  await using s = await startTestService({ FAAS_MAX_INSTANCES: "1" });
  const blocker = s.post("/run_code", run("gate hold"));
  await s.js.waitForStarts(1);
  const controller = new AbortController();
  const gone = fetch(s.url + "/run_code", {
    method: "POST",
    body: JSON.stringify(run("print gone")),
    signal: controller.signal,
  }).catch((error) => error);
  const stays = s.post("/run_code", run("print stays"));
  await untilQueued(s.url, 2);
  controller.abort();
  assert((await gone) instanceof Error);
  await untilQueued(s.url, 1);
  assertEquals((await schedulerStats(s.url)).cancelledTasks, 1);
  s.js.open("hold");
  assertEquals((await blocker).status, 200);
  assertEquals((await (await stays).json()).output.stdout, "stays\n");
  assertEquals(s.js.started.map((started) => started.job.code), ["gate hold", "print stays"]);
});

Deno.test("draining answers in-flight and queued runs, refuses new ones, turns health 503", async () => {
  const s = await startTestService({ FAAS_MAX_INSTANCES: "1", FAAS_DRAIN_TIMEOUT: "10000" });
  const running = s.post("/run_code", run("gate hold\nprint first"));
  await s.js.waitForStarts(1);
  const queued = s.post("/run_code", run("print second"));
  await untilQueued(s.url, 1);
  const stopped = s.service.shutdown();
  const health = await fetch(s.url + "/health");
  assertEquals(health.status, 503);
  assertEquals((await health.json()).status, "unhealthy");
  const refused = await s.post("/run_code", run("print third"));
  assertEquals(refused.status, 503);
  assert(Number(refused.headers.get("retry-after")) > 0);
  await refused.body?.cancel();
  s.js.open("hold");
  assertEquals((await (await running).json()).output.stdout, "first\n");
  assertEquals((await (await queued).json()).output.stdout, "second\n");
  await stopped;
  assertEquals(s.js.state, "stopped");
  assertEquals(s.py.state, "stopped");
});

Deno.test("past the drain timeout queued runs get 503 and running ones are cut short", async () => {
  const s = await startTestService({ FAAS_MAX_INSTANCES: "1", FAAS_DRAIN_TIMEOUT: "50" });
  const running = s.post("/run_code", run("gate never"));
  await s.js.waitForStarts(1);
  const queued = s.post("/run_code", run("print late"));
  await untilQueued(s.url, 1);
  await s.service.shutdown();
  const cut = await running;
  assertEquals(cut.status, 200);
  const body = await cut.json();
  assertEquals(body.metadata.status, "crashed");
  assert(body.error.length > 0);
  const late = await queued;
  assertEquals(late.status, 503);
  assert(late.headers.get("retry-after"));
  await late.body?.cancel();
});

function job(taskId: string, code: string, extra: Partial<ScheduledJob> = {}): ScheduledJob {
  return { taskId, language: "javascript", code, timeoutMs: 1000, priority: "normal", ...extra };
}

Deno.test("a runtime that never answers is answered as a timeout after the grace period", async () => {
  const runtime = new EchoRuntime(["javascript"]);
  const events: string[] = [];
  const scheduler = new Scheduler({
    maxConcurrent: 1,
    queueLimit: 10,
    runtimeFor: () => runtime,
    graceMs: 20,
    onEvent: (event) => events.push(event.kind),
  });
  const result = await scheduler.submit(job("t1", "hang", { timeoutMs: 10 }));
  assertEquals(result.outcome.status, "timeout");
  assertEquals(result.outcome.error, "execution timed out after 10 ms");
  assertEquals(events, ["overdue"]);
  // The slot is free again.
  assertEquals((await scheduler.submit(job("t2", "print ok"))).outcome.stdout, "ok\n");
});

Deno.test("a runtime bug is answered as crashed without a retry", async () => {
  let calls = 0;
  const runtime = new EchoRuntime(["javascript"]);
  runtime.run = () => {
    calls++;
    return Promise.reject(new TypeError("oops"));
  };
  const scheduler = new Scheduler({ maxConcurrent: 1, queueLimit: 0, runtimeFor: () => runtime });
  const result = await scheduler.submit(job("t1", "print x"));
  assertEquals(result.outcome.status, "crashed");
  assertEquals(calls, 1);
  assertEquals(scheduler.stats().failedTasks, 1);
});

Deno.test("a start failure is retried exactly once", async () => {
  let calls = 0;
  const runtime = new EchoRuntime(["javascript"]);
  runtime.run = () => {
    calls++;
    return Promise.reject(new SandboxStartError("no boot"));
  };
  const scheduler = new Scheduler({ maxConcurrent: 1, queueLimit: 0, runtimeFor: () => runtime });
  const result = await scheduler.submit(job("t1", "print x"));
  assertEquals(result.outcome.status, "crashed");
  assertEquals(result.attempts, 2);
  assertEquals(calls, 2);
});

Deno.test("a closed scheduler refuses runs with kind draining", async () => {
  const runtime = new EchoRuntime(["javascript"]);
  const scheduler = new Scheduler({ maxConcurrent: 1, queueLimit: 0, runtimeFor: () => runtime });
  scheduler.close();
  let caught: unknown;
  await scheduler.submit(job("t1", "print x")).catch((error) => caught = error);
  assert(caught instanceof SchedulerRejection);
  assertEquals(caught.kind, "draining");
  await scheduler.idle();
});

Deno.test("a burst of 10,000 runs of one tenant does not starve another tenant's run", async () => {
  const runtime = new EchoRuntime(["javascript"]);
  const scheduler = new Scheduler({
    maxConcurrent: 1,
    queueLimit: 20_000,
    runtimeFor: () => runtime,
  });
  const blocker = scheduler.submit(job("blocker", "gate hold", { tenant: "A" }));
  const burst = Array.from(
    { length: 10_000 },
    (_, i) => scheduler.submit(job(`a${i}`, "print a", { tenant: "A" })),
  );
  const late = scheduler.submit(job("b", "print b", { tenant: "B" }));
  assertEquals(scheduler.stats().queuedTasks, 10_001);
  runtime.open("hold");
  await late;
  // B started right after the blocker and at most one run of A.
  const position = runtime.started.findIndex((run) => run.job.taskId === "b");
  assert(position >= 1 && position <= 2, `B started at ${position}`);
  await Promise.all([blocker, ...burst]);
  assertEquals(scheduler.stats().completedTasks, 10_002);
});

/** A runtime whose runs wait for `sandboxReady` before they get a sandbox and start. */
function slowSandboxRuntime(sandboxReady: Promise<void>) {
  const runtime = new EchoRuntime(["javascript"]);
  const echo = runtime.run.bind(runtime);
  let ran = 0;
  runtime.run = async (job) => {
    await sandboxReady;
    if (job.onStart?.() === false) throw new SandboxStartError("answered before a sandbox");
    ran++;
    return echo({ ...job, onStart: undefined });
  };
  return { runtime, ran: () => ran };
}

Deno.test("waiting for a sandbox is queue time: the deadline counts from the start", async () => {
  const ready = Promise.withResolvers<void>();
  const { runtime, ran } = slowSandboxRuntime(ready.promise);
  const scheduler = new Scheduler({
    maxConcurrent: 1,
    queueLimit: 10,
    runtimeFor: () => runtime,
    graceMs: 20,
  });
  const answer = scheduler.submit(job("t1", "print ok", { timeoutMs: 10 }));
  // Far past timeout + grace, the run still waits for its sandbox instead of failing.
  setTimeout(() => ready.resolve(), 200);
  const result = await answer;
  assertEquals([result.outcome.status, result.outcome.stdout], ["success", "ok\n"]);
  assert(result.queueTimeMs >= 150, `queue time ${result.queueTimeMs} counts the wait`);
  assertEquals(ran(), 1);
});

Deno.test("a run answered before a sandbox was free is never run afterwards", async () => {
  const ready = Promise.withResolvers<void>();
  const { runtime, ran } = slowSandboxRuntime(ready.promise);
  const scheduler = new Scheduler({
    maxConcurrent: 1,
    queueLimit: 10,
    runtimeFor: () => runtime,
    graceMs: 20,
    startBudgetMs: 30,
  });
  const result = await scheduler.submit(job("t1", "print late", { timeoutMs: 10 }));
  assertEquals(result.outcome.status, "timeout");
  assertStringIncludes(result.outcome.error ?? "", "did not run");
  ready.resolve();
  await new Promise((resolve) => setTimeout(resolve, 20));
  assertEquals(ran(), 0);
});

Deno.test("one tenant's burst of slow runs leaves a slot for another tenant's quick run", async () => {
  const runtime = new EchoRuntime(["javascript"]);
  const scheduler = new Scheduler({
    maxConcurrent: 50,
    queueLimit: 1_000,
    runtimeFor: () => runtime,
  });
  const burst = Array.from(
    { length: 60 },
    (_, i) => scheduler.submit(job(`a${i}`, "gate slow", { tenant: "A", timeoutMs: 60_000 })),
  );
  const held = scheduler.stats();
  // One slot in eight is never one tenant's: A holds 44, the rest of its burst waits.
  assertEquals([held.runningTasks, held.queuedTasks], [44, 16]);
  const quick = await withTimeout(scheduler.submit(job("b", "print b", { tenant: "B" })), 5_000);
  assert(quick, "B's run started within 5 s while A's runs held their slots");
  assertEquals(quick.outcome.stdout, "b\n");
  assertEquals(scheduler.stats().completedTasks, 1, "none of A's runs had to end first");
  runtime.open("slow");
  await Promise.all(burst);
  assertEquals(scheduler.stats().completedTasks, 61);
});

Deno.test("while another tenant waits, a tenant past its share of slots gets no further slot", async () => {
  const runtime = new EchoRuntime(["javascript"]);
  const scheduler = new Scheduler({ maxConcurrent: 4, queueLimit: 100, runtimeFor: () => runtime });
  // A alone takes every slot (4 is too few for a reserve), and queues two more.
  const a = Array.from(
    { length: 6 },
    (_, i) => scheduler.submit(job(`a${i}`, `gate a${i}`, { tenant: "A" })),
  );
  const b = Array.from(
    { length: 3 },
    (_, i) => scheduler.submit(job(`b${i}`, `gate b${i}`, { tenant: "B" })),
  );
  assertEquals(scheduler.stats().runningTasks, 4);
  // Two tenants: a share is 2 slots. Each slot A frees goes to B until B holds its share...
  runtime.open("a0");
  await runtime.waitForStarts(5);
  runtime.open("a1");
  await runtime.waitForStarts(6);
  assertEquals(runtime.started.slice(4).map((run) => run.job.taskId), ["b0", "b1"]);
  // ...and then back to A, whose share it is, though B still waits.
  runtime.open("a2");
  await runtime.waitForStarts(7);
  assertEquals(runtime.started[6].job.taskId, "a4");
  for (let i = 3; i < 6; i++) runtime.open(`a${i}`);
  for (let i = 0; i < 3; i++) runtime.open(`b${i}`);
  await Promise.all([...a, ...b]);
  assertEquals(scheduler.stats().completedTasks, 9);
});

Deno.test("syntax checks run at most maxValidations at once, in arrival order", async () => {
  const runtime = new EchoRuntime(["python"]);
  const gate = Promise.withResolvers<void>();
  let active = 0;
  let most = 0;
  const order: string[] = [];
  runtime.validate = async (code) => {
    order.push(code);
    most = Math.max(most, ++active);
    await gate.promise;
    active--;
    return { valid: true, error: null };
  };
  const scheduler = new Scheduler({
    maxConcurrent: 1,
    queueLimit: 500,
    maxValidations: 2,
    runtimeFor: () => runtime,
  });
  const checks = Array.from(
    { length: 200 },
    (_, i) => scheduler.validate({ language: "python", code: `c${i}` }),
  );
  const stats = scheduler.stats();
  assertEquals([stats.runningValidations, stats.queuedValidations], [2, 198]);
  gate.resolve();
  for (const verdict of await Promise.all(checks)) assertEquals(verdict.valid, true);
  assertEquals(most, 2);
  assertEquals(order, checks.map((_, i) => `c${i}`));
  await scheduler.idle();
});

Deno.test("a full lane of syntax checks refuses with queue_full; a silent check fails at its deadline", async () => {
  const runtime = new EchoRuntime(["python"]);
  runtime.validate = () => new Promise(() => {});
  const scheduler = new Scheduler({
    maxConcurrent: 1,
    queueLimit: 1,
    maxValidations: 1,
    validationTimeoutMs: 20,
    graceMs: 10,
    runtimeFor: () => runtime,
  });
  const first = scheduler.validate({ language: "python", code: "x" });
  const second = scheduler.validate({ language: "python", code: "y" });
  let refused: unknown;
  await scheduler.validate({ language: "python", code: "z" }).catch((error) => refused = error);
  assert(refused instanceof SchedulerRejection);
  assertEquals(refused.kind, "queue_full");
  for (const check of [first, second]) {
    let caught: unknown;
    await check.catch((error) => caught = error);
    assert(caught instanceof Error && !(caught instanceof SchedulerRejection));
    assertStringIncludes(caught.message, "did not answer within 30 ms");
  }
  await scheduler.idle();
});

Deno.test("the snapshot counts a runtime serving two languages once", () => {
  const js = new EchoRuntime(["javascript", "typescript"]);
  js.settings = { poolSize: 3 } as typeof js.settings;
  const scheduler = new Scheduler({
    maxConcurrent: 1,
    queueLimit: 0,
    languages: ["javascript", "typescript"],
    runtimeFor: () => js,
  });
  const snapshot = scheduler.snapshot();
  assertEquals(snapshot.pool, { totalInstances: 3, idleInstances: 3, activeInstances: 0 });
  assertEquals(Object.keys(snapshot.languages), ["javascript", "typescript"]);
  assertEquals(snapshot.languages.typescript?.info.version, "echo 1.0");
});
