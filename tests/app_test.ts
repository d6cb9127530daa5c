import { assert, assertEquals, assertMatch, assertStringIncludes } from "./helpers/assert.ts";
import { EchoRuntime } from "./helpers/echo_runtime.ts";
import { startTestService } from "./helpers/test_service.ts";
import { MAX_JSON_DEPTH } from "../src/http/json_body.ts";
import { schedulerStats, until } from "./helpers/wait.ts";
import { parseConfig } from "../src/config.ts";
import type { PoolStats, RunJob, RunOutcome } from "../src/runtime.ts";
import { startService } from "../src/service.ts";

function assertRunShape(body: Record<string, unknown>) {
  const output = body.output as Record<string, unknown>;
  const metadata = body.metadata as Record<string, unknown>;
  for (const key of ["stdout", "stderr", "ret_val"]) assertEquals(typeof output[key], "string");
  for (const key of ["duration", "queue_time", "exit_code"]) {
    assert(Number.isInteger(metadata[key]), `${key} is an integer`);
  }
  for (const value of Object.values(metadata.pool_stats as Record<string, unknown>)) {
    assert(Number.isInteger(value), "pool_stats values are integers");
  }
  assertEquals(typeof metadata.task_id, "string");
  assertEquals(typeof metadata.instance_id, "string");
  assertEquals(typeof body.error, "string");
}

Deno.test("a successful run answers 200 with strings, integers and an empty error", async () => {
  await using s = await startTestService();
  const response = await s.post("/run_code", {
    language: "javascript",
    code: "print Hello World\nreturn 42",
    timeout: 5000,
    priority: "normal",
    ext: { space_id: "123" },
  });
  assertEquals(response.status, 200);
  const body = await response.json();
  assertRunShape(body);
  assertEquals(body.output, { stdout: "Hello World\n", stderr: "", ret_val: "42" });
  assertEquals(body.metadata.status, "success");
  assertEquals(body.metadata.language, "javascript");
  assertEquals(body.metadata.exit_code, 0);
  assertEquals(body.metadata.truncated, false);
  assertEquals(body.error, "");
});

Deno.test("language aliases are case-insensitive and map to canonical names", async () => {
  await using s = await startTestService();
  const cases: [string, string][] = [
    ["JS", "javascript"],
    ["Javascript", "javascript"],
    ["ts", "typescript"],
    ["TypeScript", "typescript"],
    ["PY", "python"],
    ["python3", "python"],
    ["Python", "python"],
  ];
  for (const [alias, canonical] of cases) {
    const response = await s.post("/run_code", { language: alias, code: "print x" });
    assertEquals(response.status, 200, alias);
    assertEquals((await response.json()).metadata.language, canonical, alias);
  }
  assertEquals(s.js.started.length, 4);
  assertEquals(s.py.started.length, 3);
});

Deno.test("Go zero values are accepted: empty priority, null ext, input and timeout", async () => {
  await using s = await startTestService({ FAAS_TIMEOUT: "777" });
  const response = await s.post("/run_code", {
    language: "js",
    code: "print x",
    priority: "",
    ext: null,
    input: null,
    timeout: null,
  });
  assertEquals(response.status, 200);
  await response.body?.cancel();
  const upper = await s.post("/run_code", { language: "js", code: "print y", priority: "HIGH" });
  assertEquals(upper.status, 200);
  await upper.body?.cancel();
  assertEquals(s.js.started[0].job.timeoutMs, 777);
  assertEquals(s.js.started.length, 2);
});

Deno.test("input reaches the runtime and timeout defaults to FAAS_TIMEOUT", async () => {
  await using s = await startTestService({ FAAS_TIMEOUT: "1234" });
  const response = await s.post("/run_code", {
    language: "python",
    code: "input",
    input: { a: [1, "b"] },
  });
  const body = await response.json();
  assertEquals(body.output.stdout, '{"a":[1,"b"]}\n');
  assertEquals(s.py.started[0].job.timeoutMs, 1234);
  assertEquals(s.py.started[0].job.tenant, undefined);
});

Deno.test("an uncaught exception is a 200 with the trace in stderr and no error", async () => {
  await using s = await startTestService();
  const response = await s.post("/run_code", { language: "js", code: "print before\nthrow boom" });
  assertEquals(response.status, 200);
  const body = await response.json();
  assertRunShape(body);
  assertEquals(body.metadata.status, "error");
  assertEquals(body.metadata.exit_code, 1);
  assertStringIncludes(body.output.stderr, "Error: boom");
  assertEquals(body.output.stdout, "before\n");
  assertEquals(body.error, "");
});

Deno.test("timeout, crash and output limit carry a one-line error", async () => {
  await using s = await startTestService({ FAAS_MAX_OUTPUT_BYTES: "2048" });
  const timeout = await (await s.post("/run_code", {
    language: "js",
    code: "eprint partial\ngate never",
    timeout: 50,
  })).json();
  assertEquals(timeout.metadata.status, "timeout");
  assertEquals(timeout.error, "execution timed out after 50 ms");
  assertEquals(timeout.output.stderr, "partial\n");

  const crashed = await (await s.post("/run_code", { language: "js", code: "crash" })).json();
  assertEquals(crashed.metadata.status, "crashed");
  assertMatch(crashed.error, /^[^\n]+$/);

  const big = await (await s.post("/run_code", { language: "js", code: "bigout 5000" })).json();
  assertEquals(big.metadata.status, "output_limit");
  assertEquals(big.metadata.truncated, true);
  assertEquals(big.output.stdout.length, 2048);
  assertMatch(big.error, /exceeded/);
});

Deno.test("a sandbox that fails before start is retried once, then answered as crashed", async () => {
  await using s = await startTestService();
  const once = await (await s.post("/run_code", { language: "js", code: "startfail 1\nprint ok" }))
    .json();
  assertEquals(once.metadata.status, "success");
  assertEquals(once.output.stdout, "ok\n");
  assertEquals(s.js.attempts.get(once.metadata.task_id), 2);

  const twice = await (await s.post("/run_code", { language: "js", code: "startfail 2\nprint ok" }))
    .json();
  assertEquals(twice.metadata.status, "crashed");
  assertStringIncludes(twice.error, "failed to start");
  assertEquals(s.js.attempts.get(twice.metadata.task_id), 2);
  // User code never ran for the failed task.
  assert(!s.js.started.some((run) => run.job.taskId === twice.metadata.task_id));
});

/**
 * An echo runtime whose instance counts behave as the real pools' do: a run's sandbox is
 * leased (active) from before `onStart` until the run ends, and given back before the answer.
 */
class LeasingRuntime extends EchoRuntime {
  #leased = 0;

  override async run(job: RunJob): Promise<RunOutcome> {
    this.#leased++;
    try {
      return await super.run(job);
    } finally {
      this.#leased--;
    }
  }

  override stats(): PoolStats {
    const size = this.settings?.poolSize ?? 0;
    return {
      totalInstances: Math.max(size, this.#leased),
      idleInstances: Math.max(0, size - this.#leased),
      activeInstances: this.#leased,
    };
  }
}

Deno.test("pool_stats are the pool while the run held its sandbox, so they count the run", async () => {
  const js = new LeasingRuntime(["javascript", "typescript"]);
  const py = new LeasingRuntime(["python"]);
  const config = parseConfig({ FAAS_PORT: "0", FAAS_HOST: "127.0.0.1", FAAS_POOL_SIZE: "3" });
  const service = await startService(config, {
    registrations: [js.registration(), py.registration()],
    logger: { info: () => {}, error: () => {} },
  });
  try {
    const post = async (language: string, code: string) => {
      const response = await fetch(service.url + "/run_code", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ language, code }),
      });
      assertEquals(response.status, 200);
      const body = await response.json();
      assertRunShape(body);
      return body.metadata.pool_stats;
    };
    const alone = { totalInstances: 3, idleInstances: 2, activeInstances: 1 };
    assertEquals(await post("python", "print x"), alone);
    assertEquals(await post("javascript", "print x"), alone);
    // A second run while the first holds its sandbox sees both; each sees its own language.
    const held = post("javascript", "gate hold");
    await js.waitForStarts(2);
    assertEquals(await post("js", "print y"), {
      totalInstances: 3,
      idleInstances: 1,
      activeInstances: 2,
    });
    assertEquals(await post("python", "print y"), alone);
    js.open("hold");
    assertEquals(await held, alone);
  } finally {
    await service.shutdown();
  }
});

async function expectError(
  response: Response,
  status: number,
  field?: string,
): Promise<Record<string, unknown>> {
  assertEquals(response.status, status);
  assertStringIncludes(response.headers.get("content-type") ?? "", "application/json");
  const body = await response.json();
  assertEquals(typeof body.error, "string");
  assert(body.error.length > 0);
  assert(!/\bat .*:\d+:\d+/.test(JSON.stringify(body)), "no stack trace");
  if (field !== undefined) {
    assert(Array.isArray(body.details), "details is an array");
    assert(
      body.details.some((detail: { field: string }) => detail.field === field),
      `details name ${field}: ${JSON.stringify(body.details)}`,
    );
    assertStringIncludes(body.error, field);
  }
  return body;
}

Deno.test("every malformed request gets a 400 naming the field", async () => {
  await using s = await startTestService({
    FAAS_TIMEOUT: "5000",
    FAAS_MAX_TIMEOUT: "10000",
    FAAS_MAX_CODE_BYTES: "100",
  });
  const run = (body: unknown) => s.post("/run_code", body);
  await expectError(await run("{not json"), 400, "body");
  await expectError(await run(""), 400, "body");
  await expectError(await run("[1,2]"), 400, "body");
  await expectError(await run({ language: "js" }), 400, "code");
  await expectError(await run({ language: "js", code: "" }), 400, "code");
  await expectError(await run({ language: "js", code: 42 }), 400, "code");
  await expectError(await run({ language: "js", code: "é".repeat(51) }), 400, "code");
  await expectError(await run({ code: "print x" }), 400, "language");
  const unknown = await expectError(await run({ language: "cobol", code: "x" }), 400, "language");
  assertStringIncludes(String(unknown.error), "cobol");
  await expectError(await run({ language: "js", code: "x", timeout: 0 }), 400, "timeout");
  await expectError(await run({ language: "js", code: "x", timeout: 10001 }), 400, "timeout");
  await expectError(await run({ language: "js", code: "x", timeout: 1.5 }), 400, "timeout");
  await expectError(await run({ language: "js", code: "x", timeout: "5000" }), 400, "timeout");
  await expectError(await run({ language: "js", code: "x", priority: "asap" }), 400, "priority");
  await expectError(
    await run({ language: "js", code: "x", ext: { space_id: 1 } }),
    400,
    "ext.space_id",
  );
  await expectError(await s.post("/validate_code", { language: "js" }), 400, "code");
  // Unknown fields are ignored; a timeout at the maximum is fine.
  const ok = await run({ language: "js", code: "x", timeout: 10000, extra: true });
  assertEquals(ok.status, 200);
  await ok.body?.cancel();
  assertEquals(s.js.started.length, 1);
});

Deno.test("a language that is not enabled is a 400 naming it", async () => {
  await using s = await startTestService({ FAAS_LANGUAGES: "python" });
  const body = await expectError(
    await s.post("/run_code", { language: "JS", code: "print x" }),
    400,
    "language",
  );
  assertStringIncludes(String(body.error), "javascript");
  assertStringIncludes(String(body.error), "not enabled");
  const health = await (await fetch(s.url + "/health")).json();
  assertEquals(Object.keys(health.languages), ["python"]);
});

Deno.test("a body over the limit is a 413, with or without Content-Length", async () => {
  await using s = await startTestService({ FAAS_MAX_CODE_BYTES: "1000" });
  const limit = 1000 * 2 + 1024 * 1024;
  const big = JSON.stringify({ language: "js", code: "x", input: "y".repeat(limit) });
  await expectError(await s.post("/run_code", big), 413);
  // Chunked: no Content-Length, the limit applies while reading.
  const stream = new Blob([big]).stream();
  const chunked = await fetch(s.url + "/run_code", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: stream,
  });
  await expectError(chunked, 413);
  // Just under the limit is accepted.
  const fits = JSON.stringify({ language: "js", code: "x", input: "" });
  const padded = fits.slice(0, -1) + " ".repeat(limit - fits.length) + "}";
  assertEquals(new TextEncoder().encode(padded).length, limit);
  const ok = await s.post("/run_code", padded);
  assertEquals(ok.status, 200);
  await ok.body?.cancel();
});

Deno.test("a body nested deeper than the limit is a 400 naming body, at once, however deep", async () => {
  await using s = await startTestService();
  const nested = (levels: number) => "[".repeat(levels) + "]".repeat(levels);
  // The body is level 1: input may nest MAX_JSON_DEPTH - 1 levels.
  const fits = await s.post(
    "/run_code",
    `{"language":"js","code":"x","input":${nested(MAX_JSON_DEPTH - 1)}}`,
  );
  assertEquals(fits.status, 200);
  await fits.body?.cancel();
  assertEquals(s.js.started.at(-1)!.job.input, JSON.parse(nested(MAX_JSON_DEPTH - 1)));
  for (const levels of [MAX_JSON_DEPTH, 3_000_000]) {
    const started = performance.now();
    const deep = `{"language":"js","code":"x","input":${nested(levels)}}`;
    const body = await expectError(await s.post("/run_code", deep), 400, "body");
    assertStringIncludes(String(body.error), `deeper than ${MAX_JSON_DEPTH} levels`);
    // Parsing three million levels takes V8 seconds; the refusal must not wait for it.
    assert(performance.now() - started < 2_000, `${levels} levels refused in under 2 s`);
  }
  const inExt = `{"language":"js","code":"x","ext":{"a":${nested(MAX_JSON_DEPTH)}}}`;
  await expectError(await s.post("/run_code", inExt), 400, "body");
  // Brackets inside strings are text, not nesting.
  const quoted = JSON.stringify({ language: "js", code: "[".repeat(100_000) + '\\"{{' });
  assertEquals((await s.post("/run_code", quoted)).status, 200);
  assertEquals(s.js.started.length, 2);
});

Deno.test("unknown routes are 404 JSON and wrong methods 405 JSON", async () => {
  await using s = await startTestService();
  await expectError(await fetch(s.url + "/nope"), 404);
  const wrong = await fetch(s.url + "/run_code");
  await expectError(wrong, 405);
  assertEquals(wrong.headers.get("allow"), "POST");
  await expectError(await s.post("/health", {}), 405);
});

Deno.test("a bug of ours is a 500 without internals", async () => {
  await using s = await startTestService();
  const response = await s.post("/validate_code", { language: "js", code: "validator_bug" });
  const body = await expectError(response, 500);
  assert(!JSON.stringify(body).includes("secret.ts"));
  assert(s.errors.some((record) => String(record.error).includes("secret.ts")), "logged");
  const metrics = await (await fetch(s.url + "/metrics")).text();
  assertStringIncludes(metrics, 'faas_rejected_requests_total{reason="internal_error"} 1');
});

Deno.test("validate_code answers valid or the position of the problem", async () => {
  await using s = await startTestService();
  const valid = await s.post("/validate_code", { language: "python", code: "print x" });
  assertEquals(await valid.json(), { valid: true, error: null });
  const invalid = await s.post("/validate_code", { language: "TS", code: "ok\n  !! here" });
  assertEquals(await invalid.json(), {
    valid: false,
    error: { message: "unexpected '!!'", line: 2, column: 3 },
  });
  assertEquals(s.js.started.length, 0, "nothing ran");
});

Deno.test("health reports pools, scheduler, languages and isolation; 503 when a runtime is down", async () => {
  await using s = await startTestService();
  const ok = await fetch(s.url + "/health");
  assertEquals(ok.status, 200);
  const body = await ok.json();
  assertEquals(body.status, "healthy");
  assert(!Number.isNaN(Date.parse(body.timestamp)));
  assertEquals(body.languages.python, { available: true, version: "echo 1.0" });
  assertEquals(body.sandbox.javascript, { isolation: { test: true } });
  assertEquals(body.pool.languages.python.idleInstances, 2);
  for (
    const key of [
      "totalTasks",
      "completedTasks",
      "failedTasks",
      "queuedTasks",
      "averageExecutionTime",
    ]
  ) {
    assert(Number.isInteger(body.scheduler[key]), key);
  }
  s.py.available = false;
  const down = await fetch(s.url + "/health");
  assertEquals(down.status, 503);
  const downBody = await down.json();
  assertEquals(downBody.status, "unhealthy");
  assertEquals(downBody.languages.python.available, false);
});

Deno.test("the API key guards every route but /health, in either header", async () => {
  await using s = await startTestService({ FAAS_API_KEY: "s3cret-key" });
  const run = { language: "js", code: "print x" };
  await expectError(await s.post("/run_code", run), 401);
  await expectError(await s.post("/run_code", run, { Authorization: "Bearer wrong" }), 401);
  await expectError(await s.post("/run_code", run, { "X-API-Key": "s3cret-ke" }), 401);
  await expectError(await s.post("/run_code", run, { Authorization: "s3cret-key" }), 401);
  await expectError(await s.post("/validate_code", run), 401);
  await expectError(await fetch(s.url + "/metrics"), 401);
  assertEquals(s.js.started.length, 0);

  const bearer = await s.post("/run_code", run, { Authorization: "Bearer s3cret-key" });
  assertEquals(bearer.status, 200);
  await bearer.body?.cancel();
  const header = await s.post("/run_code", run, { "X-API-Key": "s3cret-key" });
  assertEquals(header.status, 200);
  await header.body?.cancel();
  const metrics = await fetch(s.url + "/metrics", { headers: { "X-API-Key": "s3cret-key" } });
  assertEquals(metrics.status, 200);
  await metrics.body?.cancel();

  const health = await fetch(s.url + "/health");
  assertEquals(health.status, 200);
  await health.body?.cancel();
  const docs = await fetch(s.url + "/openapi.json");
  assertEquals(docs.status, 200);
  await docs.body?.cancel();
});

Deno.test("one JSON log line per request, without code or output unless debugging", async () => {
  {
    await using s = await startTestService();
    await (await s.post("/run_code", {
      language: "js",
      code: "print very-private-output\nreturn 1",
      input: "private-input",
      ext: { space_id: "tenant-7" },
    })).json();
    await (await fetch(s.url + "/nope")).body?.cancel();
    await (await s.post("/run_code", { language: "js", code: "" })).body?.cancel();
    const requests = s.logs.filter((record) => record.msg === "request");
    assertEquals(requests.length, 3);
    const [run, missing, invalid] = requests;
    assertEquals(invalid.http_status, 400);
    assertEquals(run.tenant, "tenant-7");
    assertEquals(run.language, "javascript");
    assertEquals(run.status, "success");
    assertEquals(typeof run.task_id, "string");
    assert(Number.isInteger(run.duration_ms) && Number.isInteger(run.queue_time_ms));
    assertEquals(missing.http_status, 404);
    const text = JSON.stringify(s.logs);
    assert(!text.includes("very-private-output"), "no code or output");
    assert(!text.includes("private-input"), "no input");
  }
  {
    await using s = await startTestService({ FAAS_DEBUG: "true" });
    await (await s.post("/run_code", { language: "js", code: "print shown" })).json();
    assertStringIncludes(JSON.stringify(s.logs), "print shown");
  }
});

Deno.test("metrics expose runs, rejections, instances and process metrics", async () => {
  await using s = await startTestService();
  await (await s.post("/run_code", { language: "python", code: "throw x" })).json();
  await (await s.post("/run_code", { language: "python", code: "" })).json();
  const response = await fetch(s.url + "/metrics");
  assertEquals(response.status, 200);
  assertStringIncludes(response.headers.get("content-type") ?? "", "text/plain");
  const text = await response.text();
  assertStringIncludes(text, 'faas_executions_total{language="python",status="error"} 1');
  assertStringIncludes(text, 'faas_rejected_requests_total{reason="invalid_request"} 1');
  assertStringIncludes(text, 'faas_execution_duration_seconds_count{language="python"} 1');
  assertStringIncludes(text, 'faas_queue_time_seconds_count{language="python"} 1');
  assertStringIncludes(text, 'faas_instances{language="python",state="idle"} 2');
  assertStringIncludes(text, "faas_queue_length 0");
  assertStringIncludes(text, 'faas_sandbox_start_seconds_count{language="python",outcome="ok"} 1');
  assertStringIncludes(text, "process_resident_memory_bytes");
  assert(!text.includes("tenant"), "no tenant label");
});

Deno.test("metrics show the execution slots and the queue beside their bounds", async () => {
  await using s = await startTestService({ FAAS_MAX_INSTANCES: "3", FAAS_QUEUE_LIMIT: "7" });
  const scrape = async () => await (await fetch(s.url + "/metrics")).text();
  const idle = await scrape();
  assertStringIncludes(idle, "faas_execution_slots 3");
  assertStringIncludes(idle, "faas_queue_capacity 7");
  assertStringIncludes(idle, "faas_executions_in_flight 0");
  const held = s.post("/run_code", { language: "js", code: "gate hold" });
  await s.js.waitForStarts(1);
  assertStringIncludes(await scrape(), "faas_executions_in_flight 1");
  s.js.open("hold");
  await (await held).body?.cancel();
  assertStringIncludes(await scrape(), "faas_executions_in_flight 0");
});

Deno.test("openapi.json is a valid 3.1 document generated from the request schemas", async () => {
  await using s = await startTestService();
  const response = await fetch(s.url + "/openapi.json");
  assertEquals(response.status, 200);
  const doc = await response.json();
  assertMatch(doc.openapi, /^3\.1\./);
  assertEquals(typeof doc.info.title, "string");
  assertEquals(typeof doc.info.version, "string");
  for (const path of ["/run_code", "/validate_code"]) {
    const operation = doc.paths[path]?.post;
    assert(operation, `${path} documented`);
    assert(operation.requestBody.required);
    assert(operation.responses["200"] && operation.responses["400"]);
  }
  assert(doc.paths["/health"]?.get && doc.paths["/metrics"]?.get);
  const request = doc.components.schemas.RunRequest;
  assertEquals([...request.required].sort(), ["code", "language"]);
  const priorities = JSON.stringify(request.properties.priority);
  for (const priority of ["urgent", "high", "normal", "low"]) {
    assertStringIncludes(priorities, `"${priority}"`);
  }
  // Every $ref points at an existing component.
  const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g) ?? [];
  assert(refs.length > 0);
  for (const ref of refs) {
    const name = ref.match(/#\/components\/schemas\/([^"]+)"/)?.[1];
    assert(name && doc.components.schemas[name], `${ref} resolves`);
  }
  const docs = await fetch(s.url + "/docs");
  assertEquals(docs.status, 200);
  assertStringIncludes(await docs.text(), 'data-spec="openapi.json"');
});

Deno.test("every answer carries X-Request-Id: the caller's when sane, else a new one", async () => {
  await using s = await startTestService({
    FAAS_API_KEY: "k",
    FAAS_MAX_CODE_BYTES: "10",
    FAAS_MAX_INSTANCES: "1",
    FAAS_QUEUE_LIMIT: "0",
  });
  const key = { "X-API-Key": "k" };
  const held = s.post("/run_code", { language: "js", code: "gate hold" }, key);
  await s.js.waitForStarts(1);
  const answers: [string, Response][] = [
    ["200", await fetch(s.url + "/health")],
    ["400", await s.post("/run_code", { language: "js", code: "" }, key)],
    ["401", await s.post("/run_code", { language: "js", code: "print x" })],
    ["404", await fetch(s.url + "/nope", { headers: key })],
    ["405", await fetch(s.url + "/run_code", { headers: key })],
    ["413", await s.post("/run_code", "x".repeat(2 * 10 + 1024 * 1024 + 1), key)],
    ["503", await s.post("/run_code", { language: "js", code: "print y" }, key)],
  ];
  const ids = new Set<string>();
  for (const [status, response] of answers) {
    assertEquals(String(response.status), status);
    const id = response.headers.get("x-request-id");
    assert(id && /^[0-9a-f-]{36}$/.test(id), `${status}: a generated id, got ${id}`);
    ids.add(id);
    await response.body?.cancel();
  }
  assertEquals(ids.size, answers.length, "each request its own id");
  s.js.open("hold");
  await (await held).body?.cancel();

  const sane = "trace-4bf92f3577b34da6a3ce929d0e0e4736";
  const echoed = await fetch(s.url + "/health", { headers: { "X-Request-Id": sane } });
  await echoed.body?.cancel();
  assertEquals(echoed.headers.get("x-request-id"), sane);
  for (const odd of ["x".repeat(129), "two words", "semi;colon", 'quote"d']) {
    const replaced = await fetch(s.url + "/health", { headers: { "X-Request-Id": odd } });
    await replaced.body?.cancel();
    const id = replaced.headers.get("x-request-id");
    assert(id && id !== odd && /^[0-9a-f-]{36}$/.test(id), `${odd} replaced by ${id}`);
  }
});

Deno.test("the request's log lines all carry its id, the scheduler's included", async () => {
  await using s = await startTestService();
  const id = "req-startfail-1";
  const response = await s.post(
    "/run_code",
    { language: "js", code: "startfail 1\nprint ok" },
    { "X-Request-Id": id },
  );
  assertEquals((await response.json()).output.stdout, "ok\n");
  const lines = [...s.logs, ...s.errors].filter((record) => record.request_id === id);
  assertEquals(lines.map((record) => record.msg).sort(), ["request", "scheduler_start_retry"]);
  const bug = await s.post("/validate_code", { language: "js", code: "validator_bug" }, {
    "X-Request-Id": "req-bug-2",
  });
  assertEquals(bug.status, 500);
  await bug.body?.cancel();
  const bugLines = [...s.logs, ...s.errors].filter((record) => record.request_id === "req-bug-2");
  assertEquals(bugLines.map((record) => record.msg).sort(), ["internal_error", "request"]);
});

Deno.test("validate_code goes through the scheduler: at most FAAS_MAX_VALIDATIONS at once", async () => {
  await using s = await startTestService({ FAAS_MAX_VALIDATIONS: "2" });
  const gate = Promise.withResolvers<void>();
  let active = 0;
  let most = 0;
  s.py.validate = async () => {
    most = Math.max(most, ++active);
    await gate.promise;
    active--;
    return { valid: true, error: null };
  };
  const answers = Array.from(
    { length: 200 },
    (_, i) => s.post("/validate_code", { language: "python", code: `x = ${i}` }),
  );
  await until(async () => {
    const stats = await schedulerStats(s.url);
    return stats.runningValidations === 2 && stats.queuedValidations === 198;
  }, { what: "200 checks admitted, 2 of them running" });
  gate.resolve();
  for (const answer of await Promise.all(answers)) {
    assertEquals(answer.status, 200);
    assertEquals(await answer.json(), { valid: true, error: null });
  }
  assertEquals(most, 2);
});

Deno.test("a full lane of syntax checks is a 503 with Retry-After", async () => {
  await using s = await startTestService({ FAAS_MAX_VALIDATIONS: "1", FAAS_QUEUE_LIMIT: "1" });
  const gate = Promise.withResolvers<void>();
  s.py.validate = async () => {
    await gate.promise;
    return { valid: true, error: null };
  };
  const admitted = [1, 2].map(() => s.post("/validate_code", { language: "py", code: "x" }));
  await until(async () => (await schedulerStats(s.url)).queuedValidations === 1, {
    what: "a queued check",
  });
  const refused = await s.post("/validate_code", { language: "py", code: "x" });
  await expectError(refused, 503);
  assertEquals(refused.headers.get("retry-after"), "1");
  gate.resolve();
  for (const answer of await Promise.all(admitted)) {
    assertEquals(answer.status, 200);
    await answer.body?.cancel();
  }
});

Deno.test("ext is bounded: a space_id over 256 bytes, long values, many keys are 400s", async () => {
  await using s = await startTestService();
  const run = (ext: Record<string, unknown>) =>
    s.post("/run_code", { language: "js", code: "x", ext });
  const ok = await run({ space_id: "t".repeat(256), other: "v".repeat(1024) });
  assertEquals(ok.status, 200);
  await ok.body?.cancel();
  await expectError(await run({ space_id: "t".repeat(257) }), 400, "ext.space_id");
  // Bytes of UTF-8, not characters: 129 × "é" is 258 bytes.
  await expectError(await run({ space_id: "é".repeat(129) }), 400, "ext.space_id");
  await expectError(await run({ space_id: "t".repeat(1024 * 1024) }), 400, "ext.space_id");
  await expectError(await run({ trace: "v".repeat(1025) }), 400, "ext.trace");
  const many = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, "v"]));
  await expectError(await run(many), 400, "ext");
  await expectError(await run({ ["k".repeat(129)]: "v" }), 400, "ext");
  assertEquals(s.js.started.length, 1, "only the bounded run ran");
  assertEquals(s.js.started[0].job.tenant, "t".repeat(256));
});

Deno.test("a body without Content-Length is read whole; one that stalls is a 408", async () => {
  await using s = await startTestService({ FAAS_IDLE_TIMEOUT: "200" });
  const json = new TextEncoder().encode(
    JSON.stringify({ language: "js", code: "print " + "é".repeat(100_000) }),
  );
  const pieces = [json.subarray(0, 1), json.subarray(1, 70_001), json.subarray(70_001)];
  const chunked = await fetch(s.url + "/run_code", {
    method: "POST",
    body: ReadableStream.from(pieces),
  });
  assertEquals(chunked.status, 200);
  assertEquals((await chunked.json()).output.stdout, "é".repeat(100_000) + "\n");

  let stalled!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      stalled = controller;
      controller.enqueue(json.subarray(0, 10));
    },
  });
  const response = await fetch(s.url + "/run_code", { method: "POST", body });
  const answer = await expectError(response, 408);
  assertStringIncludes(String(answer.error), "200 ms");
  stalled.close();
  assertEquals(s.js.started.length, 1);
});
