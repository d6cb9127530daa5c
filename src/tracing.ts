/**
 * Traces of runs, through Deno's built-in OpenTelemetry (`OTEL_DENO=true`; the exporter's
 * endpoint, protocol and headers come from the standard `OTEL_EXPORTER_OTLP_*` variables).
 *
 * Deno itself opens a server span for every request, continuing the caller's W3C
 * `traceparent`, and keeps it active while the app handles the request. This module adds what
 * only the service knows: the run's attributes on that span, and two child spans, the wait in
 * the queue and the run in its sandbox. They are recorded once the run is answered, with the
 * times the scheduler measured, so nothing on a run's path waits for tracing. It also names the
 * active span for log lines, so a log line and its trace can be joined.
 *
 * The tenant (`ext.space_id`) appears only as a keyed hash (HMAC-SHA-256, 16 hex digits): an
 * unkeyed hash of a short numeric id is reversed by trying every id. The key is
 * `FAAS_TENANT_HASH_KEY`; without it, a random key of this process, so a tenant's runs can be
 * grouped within one process only. Code, input and output are never recorded.
 *
 * Without `OTEL_DENO=true` the service uses {@link DISABLED_TRACING}: every call is an empty
 * function, and the app adds no middleware for it.
 *
 * `@opentelemetry/api` is the interface: Deno registers its own tracer provider and context
 * behind it when telemetry is on, and it is a no-op otherwise.
 *
 * @module
 */

import { createHmac, randomBytes } from "node:crypto";
import {
  type Attributes,
  context,
  isSpanContextValid,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import type { Priority } from "./scheduler.ts";
import type { Language, RunOutcome } from "./runtime.ts";

/** Name of the tracer, the instrumentation scope of the service's own spans. */
export const TRACER_NAME = "faas-sandbox";

/** Names of the spans the service adds below Deno's server span. */
export const SPAN_NAMES = {
  /** From the request's arrival at the scheduler until a sandbox started the code. */
  queue: "sandbox.queue",
  /** From the start of the code until the run was answered. */
  run: "sandbox.run",
} as const;

/** What a run's trace records, all known once it is answered. */
export interface RunTrace {
  /** The run's task id. */
  taskId: string;
  /** Canonical language. */
  language: Language;
  /** Queue priority. */
  priority: Priority;
  /** The tenant (`ext.space_id`), hashed before it is recorded; undefined without one. */
  tenant?: string;
  /** How the run ended. */
  outcome: RunOutcome;
  /** Queue time, whole ms, as answered. */
  queueTimeMs: number;
  /** Sandboxes tried. */
  attempts: number;
  /** When the run was handed to the scheduler (`performance.now()` clock). */
  submittedAt: number;
  /** When the code started; undefined when it never did (no run span then). */
  startedAt?: number;
  /** When the scheduler answered. */
  answeredAt: number;
}

/** The service's tracing: real with Deno's telemetry on, empty functions otherwise. */
export interface Tracing {
  /** True when spans are exported. */
  readonly enabled: boolean;
  /** The active span's ids, for a log line; undefined when no span is active. */
  logFields(): { trace_id: string; span_id: string } | undefined;
  /** Names the active server span `METHOD route` and records its route (`http.route`). */
  nameRequestSpan(method: string, route: string): void;
  /** Records a run on the active server span, with its queue and run spans below it. */
  recordRun(run: RunTrace): void;
}

/** Tracing that records nothing. */
export const DISABLED_TRACING: Tracing = {
  enabled: false,
  logFields: () => undefined,
  nameRequestSpan: () => {},
  recordRun: () => {},
};

/**
 * True when Deno exports telemetry for this process: `OTEL_DENO` is `true` (Deno accepts only
 * `true` and `false`; it warns about any other value and exports nothing).
 */
export function telemetryEnabled(env: { get(name: string): string | undefined }): boolean {
  return env.get("OTEL_DENO") === "true";
}

/**
 * The service's tracing: {@link DISABLED_TRACING} unless `options.enabled`. `tenantHashKey`
 * keys the tenant's hash; a random key of this process when undefined.
 */
export function createTracing(
  options: { enabled: boolean; tenantHashKey?: string },
): Tracing {
  if (!options.enabled) return DISABLED_TRACING;
  const tracer = trace.getTracer(TRACER_NAME);
  const key = options.tenantHashKey ?? randomBytes(32).toString("hex");
  return {
    enabled: true,
    logFields() {
      const spanContext = trace.getActiveSpan()?.spanContext();
      if (!spanContext || !isSpanContextValid(spanContext)) return undefined;
      return { trace_id: spanContext.traceId, span_id: spanContext.spanId };
    },
    nameRequestSpan(method, route) {
      const span = trace.getActiveSpan();
      if (!span) return;
      span.updateName(`${method} ${route}`);
      span.setAttribute("http.route", route);
    },
    recordRun(run) {
      const { outcome } = run;
      const attributes: Attributes = {
        "sandbox.task_id": run.taskId,
        "sandbox.language": run.language,
        "sandbox.priority": run.priority,
        "sandbox.status": outcome.status,
        "sandbox.exit_code": outcome.exitCode,
        "sandbox.duration_ms": outcome.durationMs,
        "sandbox.queue_time_ms": run.queueTimeMs,
        "sandbox.attempts": run.attempts,
      };
      if (run.tenant !== undefined) {
        attributes["sandbox.tenant_hash"] = tenantHash(run.tenant, key);
      }
      trace.getActiveSpan()?.setAttributes(attributes);
      const parent = context.active();
      const queueEnd = run.startedAt ?? run.answeredAt;
      tracer.startSpan(SPAN_NAMES.queue, {
        startTime: epochMs(run.submittedAt),
        attributes: {
          "sandbox.language": run.language,
          "sandbox.priority": run.priority,
          "sandbox.queue_time_ms": run.queueTimeMs,
        },
      }, parent).end(epochMs(queueEnd));
      if (run.startedAt === undefined) return;
      const span = tracer.startSpan(SPAN_NAMES.run, {
        startTime: epochMs(run.startedAt),
        attributes: {
          "sandbox.language": run.language,
          "sandbox.status": outcome.status,
          "sandbox.exit_code": outcome.exitCode,
          "sandbox.duration_ms": outcome.durationMs,
          "sandbox.instance_id": outcome.instanceId,
          "sandbox.attempts": run.attempts,
          "sandbox.truncated": outcome.truncated,
        },
      }, parent);
      if (outcome.status !== "success") {
        span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.error ?? outcome.status });
      }
      span.end(epochMs(run.answeredAt));
    },
  };
}

/** The tenant as recorded in traces: HMAC-SHA-256 under `key`, its first 16 hex digits. */
export function tenantHash(tenant: string, key: string): string {
  return createHmac("sha256", key).update(tenant).digest("hex").slice(0, 16);
}

/** A `performance.now()` time as milliseconds since the epoch, as span times are given. */
function epochMs(time: number): number {
  return performance.timeOrigin + time;
}
