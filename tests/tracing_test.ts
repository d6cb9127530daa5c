/**
 * Traces through Deno's built-in OpenTelemetry, seen by a local OTLP/HTTP receiver (JSON
 * encoding): the real service, started with `OTEL_DENO=true`, continues the caller's
 * `traceparent` with a server span named after the route, records the run on it, adds a queue
 * span and a run span below it, hashes the tenant, and writes the same trace and span ids in the
 * request's log line. Without `OTEL_DENO` nothing is exported and log lines carry no ids.
 *
 * @module
 */

import { createHmac } from "node:crypto";
import { assert, assertEquals } from "./helpers/assert.ts";
import { type RunAnswer, runCode, startRealService } from "./e2e_helpers.ts";
import {
  createTracing,
  DISABLED_TRACING,
  SPAN_NAMES,
  telemetryEnabled,
  tenantHash,
} from "../src/tracing.ts";

/** An OTLP attribute value, JSON-encoded. */
type AnyValue = {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
};

/** A span as OTLP/JSON carries it, with its attributes decoded. */
interface Span {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  status: { code?: number; message?: string };
  attributes: Record<string, string | number | boolean | undefined>;
  scope: string;
}

const SPAN_KIND_SERVER = 2;
const STATUS_ERROR = 2;

function decode(value: AnyValue): string | number | boolean | undefined {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  return value.boolValue;
}

/** A local OTLP/HTTP receiver: keeps every span posted to /v1/traces and every body posted. */
class Receiver implements AsyncDisposable {
  readonly spans: Span[] = [];
  /** Every body received, on any path, as text. */
  readonly bodies: string[] = [];
  readonly paths = new Set<string>();
  #server: Deno.HttpServer<Deno.NetAddr>;
  #waiters: (() => void)[] = [];

  constructor() {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      async (request) => {
        const path = new URL(request.url).pathname;
        const text = await request.text();
        this.paths.add(path);
        this.bodies.push(text);
        if (path === "/v1/traces") this.#collect(JSON.parse(text));
        for (const wake of this.#waiters.splice(0)) wake();
        return Response.json({});
      },
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  /** Resolves with the spans of `traceId` once `complete` says they are all there. */
  async waitForTrace(
    traceId: string,
    complete: (spans: Span[]) => boolean,
    options: { timeoutMs?: number } = {},
  ): Promise<Span[]> {
    const deadline = Date.now() + (options.timeoutMs ?? 20_000);
    while (true) {
      const spans = this.spans.filter((span) => span.traceId === traceId);
      if (complete(spans)) return spans;
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new Error(`trace ${traceId} incomplete: ${JSON.stringify(spans, null, 1)}`);
      }
      // Woken by the next export (an event), or given up at the deadline.
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#waiters.push(resolve);
      const timer = setTimeout(resolve, remaining);
      await promise;
      clearTimeout(timer);
    }
  }

  #collect(body: {
    resourceSpans?: {
      scopeSpans?: {
        scope?: { name?: string };
        spans?: (Omit<Span, "attributes" | "scope"> & {
          attributes?: { key: string; value: AnyValue }[];
        })[];
      }[];
    }[];
  }): void {
    for (const resource of body.resourceSpans ?? []) {
      for (const scope of resource.scopeSpans ?? []) {
        for (const span of scope.spans ?? []) {
          const attributes: Span["attributes"] = {};
          for (const { key, value } of span.attributes ?? []) attributes[key] = decode(value);
          this.spans.push({ ...span, attributes, scope: scope.scope?.name ?? "" });
        }
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#server.shutdown();
  }
}

function randomHex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** A W3C trace context of a caller: its trace id and the id of its (client) span. */
function callerContext(): { traceId: string; parentId: string; traceparent: string } {
  const traceId = randomHex(16);
  const parentId = randomHex(8);
  return { traceId, parentId, traceparent: `00-${traceId}-${parentId}-01` };
}

async function runTraced(
  url: string,
  request: Record<string, unknown>,
  options: { traceparent: string },
): Promise<RunAnswer> {
  const { traceparent } = options;
  const response = await fetch(url + "/run_code", {
    method: "POST",
    headers: { "Content-Type": "application/json", traceparent },
    body: JSON.stringify(request),
  });
  assertEquals(response.status, 200);
  return await response.json();
}

function nanos(value: string): bigint {
  return BigInt(value);
}

/** The trace of one run is complete once its server span and both child spans arrived. */
function runTraceComplete(spans: Span[]): boolean {
  const names = new Set(spans.map((span) => span.name));
  return names.has("POST /run_code") && names.has(SPAN_NAMES.queue) &&
    names.has(SPAN_NAMES.run);
}

const TENANT = "tenant-4242";
const HASH_KEY = "trace-test-key";

Deno.test("a run's trace continues the caller's traceparent, with queue and run spans", async () => {
  await using receiver = new Receiver();
  await using service = await startRealService({
    FAAS_LANGUAGES: "javascript",
    FAAS_POOL_SIZE: "1",
    FAAS_TENANT_HASH_KEY: HASH_KEY,
    OTEL_DENO: "true",
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_SERVICE_NAME: "faas-sandbox-test",
    // Export within 100 ms of a span's end instead of 5 s (the default schedule).
    OTEL_BSP_SCHEDULE_DELAY: "100",
  });
  // The first run of a tenant boots its runner: run once so the traced run's parts are typical.
  await runCode(service.url, { language: "js", code: "return 0", ext: { space_id: TENANT } });

  const ok = callerContext();
  const answer = await runTraced(service.url, {
    language: "js",
    code: "console.log('hi'); return 42",
    ext: { space_id: TENANT },
  }, { traceparent: ok.traceparent });
  assertEquals(answer.metadata.status, "success");
  const spans = await receiver.waitForTrace(ok.traceId, runTraceComplete);

  const server = spans.find((span) => span.name === "POST /run_code")!;
  assertEquals(server.kind, SPAN_KIND_SERVER);
  assertEquals(server.parentSpanId, ok.parentId, "the server span is the caller's span's child");
  assertEquals(server.attributes["http.route"], "/run_code");
  assertEquals(server.attributes["sandbox.task_id"], answer.metadata.task_id);
  assertEquals(server.attributes["sandbox.language"], "javascript");
  assertEquals(server.attributes["sandbox.status"], "success");
  assertEquals(server.attributes["sandbox.exit_code"], 0);
  assertEquals(server.attributes["sandbox.queue_time_ms"], answer.metadata.queue_time);
  assertEquals(server.attributes["sandbox.duration_ms"], answer.metadata.duration);
  assertEquals(server.attributes["sandbox.priority"], "normal");
  const expectedHash = createHmac("sha256", HASH_KEY).update(TENANT).digest("hex").slice(0, 16);
  assertEquals(server.attributes["sandbox.tenant_hash"], expectedHash);

  const queue = spans.find((span) => span.name === SPAN_NAMES.queue)!;
  const run = spans.find((span) => span.name === SPAN_NAMES.run)!;
  for (const child of [queue, run]) {
    assertEquals(child.parentSpanId, server.spanId, `${child.name} is the server span's child`);
    assertEquals(child.scope, "faas-sandbox");
    assert(nanos(child.startTimeUnixNano) >= nanos(server.startTimeUnixNano), child.name);
    assert(nanos(child.endTimeUnixNano) <= nanos(server.endTimeUnixNano), child.name);
  }
  assertEquals(queue.attributes["sandbox.queue_time_ms"], answer.metadata.queue_time);
  assert(nanos(queue.endTimeUnixNano) <= nanos(run.startTimeUnixNano), "the wait, then the run");
  assertEquals(run.attributes["sandbox.status"], "success");
  assertEquals(run.attributes["sandbox.exit_code"], 0);
  assertEquals(run.attributes["sandbox.instance_id"], answer.metadata.instance_id);
  assertEquals(run.status.code ?? 0, 0);

  // The request's log line names the same trace and the server span.
  const line = await service.process.stdout.waitFor(
    (text) => text.includes(`"task_id":"${answer.metadata.task_id}"`),
    "the run's log line",
  );
  const record = JSON.parse(line);
  assertEquals(record.msg, "request");
  assertEquals(record.trace_id, ok.traceId);
  assertEquals(record.span_id, server.spanId);

  // A run whose code throws: its run span is an error, its exit code 1.
  const failing = callerContext();
  const thrown = await runTraced(service.url, {
    language: "js",
    code: "throw new Error('boom')",
    ext: { space_id: TENANT },
  }, { traceparent: failing.traceparent });
  assertEquals(thrown.metadata.status, "error");
  const failed = await receiver.waitForTrace(failing.traceId, runTraceComplete);
  const failedRun = failed.find((span) => span.name === SPAN_NAMES.run)!;
  assertEquals(failedRun.status.code, STATUS_ERROR);
  assertEquals(failedRun.attributes["sandbox.status"], "error");
  assertEquals(failedRun.attributes["sandbox.exit_code"], 1);
  const failedServer = failed.find((span) => span.name === "POST /run_code")!;
  assertEquals(failedServer.parentSpanId, failing.parentId);
  assertEquals(failedServer.attributes["sandbox.exit_code"], 1);

  // The tenant never leaves the service in the clear, nor do the code or its output.
  const exported = receiver.bodies.join("\n");
  assert(!exported.includes(TENANT), "the raw tenant is not exported");
  assert(!exported.includes("boom") && !exported.includes("console.log"), "no code or output");
});

Deno.test("without OTEL_DENO nothing is exported and log lines carry no trace ids", async () => {
  await using receiver = new Receiver();
  const service = await startRealService({
    FAAS_LANGUAGES: "javascript",
    FAAS_POOL_SIZE: "1",
    OTEL_DENO: "false",
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_BSP_SCHEDULE_DELAY: "100",
  });
  let record;
  try {
    const caller = callerContext();
    const answer = await runTraced(
      service.url,
      { language: "js", code: "return 1" },
      { traceparent: caller.traceparent },
    );
    const line = await service.process.stdout.waitFor(
      (text) => text.includes(`"task_id":"${answer.metadata.task_id}"`),
      "the run's log line",
    );
    record = JSON.parse(line);
  } finally {
    // Stopped and gone: whatever it would have exported, it has (telemetry flushes at exit).
    await service[Symbol.asyncDispose]();
  }
  assertEquals(record.trace_id, undefined);
  assertEquals(record.span_id, undefined);
  assertEquals(receiver.paths.size, 0, `nothing exported, got ${[...receiver.paths]}`);
});

Deno.test("tracing is on only for OTEL_DENO=true, and is then the empty one otherwise", () => {
  const env = (value?: string) => ({ get: () => value });
  assertEquals(telemetryEnabled(env("true")), true);
  for (const value of [undefined, "", "false", "1", "TRUE"]) {
    assertEquals(telemetryEnabled(env(value)), false, String(value));
  }
  assertEquals(createTracing({ enabled: false }), DISABLED_TRACING);
  assertEquals(DISABLED_TRACING.logFields(), undefined);
});

Deno.test("the tenant's hash is keyed: stable under one key, different under another", () => {
  const hash = tenantHash("123", "key-a");
  assert(/^[0-9a-f]{16}$/.test(hash), hash);
  assertEquals(tenantHash("123", "key-a"), hash);
  assert(tenantHash("123", "key-b") !== hash);
  assert(tenantHash("124", "key-a") !== hash);
});
