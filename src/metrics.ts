/**
 * Prometheus metrics of the service, in a registry of its own. Labels are bounded (language,
 * status, state, reason); there is no tenant label, as tenants are unbounded.
 *
 * @module
 */

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Language, PoolStats, RunStatus } from "./runtime.ts";

/** Why a request was refused without running. */
export type RejectionReason =
  | "invalid_request"
  | "body_too_large"
  | "body_timeout"
  | "unauthorized"
  | "queue_full"
  | "draining"
  | "cancelled"
  | "internal_error";

/** Where the collected gauges read their values at scrape time. */
export interface MetricSources {
  /** Runs waiting now. */
  queueLength: () => number;
  /** Instance counts per language. */
  instances: () => Iterable<[Language, PoolStats]>;
  /** HTTP connections open now, with a request under way (active) or not (idle). */
  connections?: () => { active: number; idle: number };
  /** Runs executing now. */
  executionsInFlight?: () => number;
  /** The configured bounds, so dashboards and alerts can show how full each is. */
  limits?: {
    /** Most runs executing at once (`FAAS_MAX_INSTANCES`). */
    executionSlots: number;
    /** Most runs waiting (`FAAS_QUEUE_LIMIT`). */
    queueCapacity: number;
  };
}

/** Why the HTTP server closed a connection itself. */
export type ConnectionCloseReason = "idle_timeout" | "evicted" | "over_limit";

const SECONDS_BUCKETS = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
];

/** The service's metrics. */
export class ServiceMetrics {
  /** The registry `/metrics` exposes. */
  readonly registry: Registry = new Registry();
  #sources: MetricSources = { queueLength: () => 0, instances: () => [] };
  #executions: Counter<"language" | "status">;
  #executionTime: Histogram<"language">;
  #queueTime: Histogram<"language">;
  #sandboxStart: Histogram<"language" | "outcome">;
  #rejected: Counter<"reason">;
  #connectionsClosed: Counter<"reason">;
  #acceptErrors: Counter;

  /** Creates the metrics, including the process metrics. */
  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.#executions = new Counter({
      name: "faas_executions_total",
      help: "Runs answered, by language and status.",
      labelNames: ["language", "status"],
      registers,
    });
    this.#executionTime = new Histogram({
      name: "faas_execution_duration_seconds",
      help: "Execution time of runs, by language.",
      labelNames: ["language"],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#queueTime = new Histogram({
      name: "faas_queue_time_seconds",
      help: "Time runs waited for a slot, by language.",
      labelNames: ["language"],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#sandboxStart = new Histogram({
      name: "faas_sandbox_start_seconds",
      help: "Time to boot a sandbox, by language and outcome (ok, failed).",
      labelNames: ["language", "outcome"],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#rejected = new Counter({
      name: "faas_rejected_requests_total",
      help: "Requests refused without running, by reason.",
      labelNames: ["reason"],
      registers,
    });
    this.#connectionsClosed = new Counter({
      name: "faas_http_connections_closed_total",
      help: "Connections the server closed itself: idle_timeout, evicted (the idle one longest, " +
        "to make room), over_limit (at the cap with none idle).",
      labelNames: ["reason"],
      registers,
    });
    this.#acceptErrors = new Counter({
      name: "faas_http_accept_errors_total",
      help: "Failed accepts of a connection (e.g. out of file descriptors); never fatal.",
      registers,
    });
    const sources = () => this.#sources;
    new Gauge({
      name: "faas_http_connections",
      help: "HTTP connections open, by state (active: a request under way; idle).",
      labelNames: ["state"],
      registers,
      collect() {
        const connections = sources().connections?.() ?? { active: 0, idle: 0 };
        this.set({ state: "active" }, connections.active);
        this.set({ state: "idle" }, connections.idle);
      },
    });
    new Gauge({
      name: "faas_queue_length",
      help: "Runs waiting for a slot.",
      registers,
      collect() {
        this.set(sources().queueLength());
      },
    });
    new Gauge({
      name: "faas_queue_capacity",
      help: "Most runs that may wait (FAAS_QUEUE_LIMIT); past it, new runs get 503.",
      registers,
      collect() {
        this.set(sources().limits?.queueCapacity ?? 0);
      },
    });
    new Gauge({
      name: "faas_executions_in_flight",
      help: "Runs executing now.",
      registers,
      collect() {
        this.set(sources().executionsInFlight?.() ?? 0);
      },
    });
    new Gauge({
      name: "faas_execution_slots",
      help: "Most runs executing at once (FAAS_MAX_INSTANCES); the rest wait in the queue.",
      registers,
      collect() {
        this.set(sources().limits?.executionSlots ?? 0);
      },
    });
    new Gauge({
      name: "faas_instances",
      help: "Sandbox instances, by language and state (idle, active, total).",
      labelNames: ["language", "state"],
      registers,
      collect() {
        this.reset();
        for (const [language, stats] of sources().instances()) {
          this.set({ language, state: "idle" }, stats.idleInstances);
          this.set({ language, state: "active" }, stats.activeInstances);
          this.set({ language, state: "total" }, stats.totalInstances);
        }
      },
    });
  }

  /** Sets where the queue and instance gauges read from. */
  setSources(sources: MetricSources): void {
    this.#sources = sources;
  }

  /** Records an answered run. */
  recordRun(
    language: Language,
    status: RunStatus,
    times: { durationMs: number; queueTimeMs: number },
  ): void {
    this.#executions.inc({ language, status });
    this.#executionTime.observe({ language }, times.durationMs / 1000);
    this.#queueTime.observe({ language }, times.queueTimeMs / 1000);
  }

  /** Records a refused request. */
  recordRejection(reason: RejectionReason): void {
    this.#rejected.inc({ reason });
  }

  /** Records a connection the server closed itself. */
  recordConnectionClosed(reason: ConnectionCloseReason): void {
    this.#connectionsClosed.inc({ reason });
  }

  /** Records a failed accept. */
  recordAcceptError(): void {
    this.#acceptErrors.inc();
  }

  /** Records a sandbox boot attempt (wired to `RuntimeSettings.onSandboxBoot`). */
  recordSandboxBoot(language: Language, durationMs: number, ok: boolean): void {
    this.#sandboxStart.observe({ language, outcome: ok ? "ok" : "failed" }, durationMs / 1000);
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ body: string; contentType: string }> {
    return { body: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}
