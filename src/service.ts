/**
 * The service: configuration → runtimes → scheduler → app → HTTP server, and its orderly
 * shutdown (stop accepting, drain, stop every sandbox, close the server).
 *
 * @module
 */

import { createApp } from "./app.ts";
import { settlesWithin } from "./async.ts";
import type { Config } from "./config.ts";
import { createJsonLogger, type Logger } from "./log.ts";
import { ServiceMetrics } from "./metrics.ts";
import { DEFAULT_REGISTRATIONS, type RuntimeRegistration, RuntimeSet } from "./runtimes.ts";
import {
  type ConnectionServer,
  defaultMaxConnections,
  raiseOpenFileLimit,
  serveConnections,
} from "./http/server.ts";
import { Scheduler } from "./scheduler.ts";
import { createTracing, telemetryEnabled, type Tracing } from "./tracing.ts";

/** Version reported by /health and /openapi.json. */
export const VERSION = "0.1.0";

/** Extra time, past the drain timeout, given to runs cut short by the runtime shutdown. */
const SHUTDOWN_GRACE_MS = 3_000;

/** How the service is put together. */
export interface ServiceOptions {
  /** Runtime factories; defaults to the ones this build ships. */
  registrations?: readonly RuntimeRegistration[];
  /**
   * Where logs go; defaults to JSON lines on stdout/stderr, holding the active trace's ids when
   * tracing is on.
   */
  logger?: Logger;
  /** Where runs are traced; defaults to Deno's telemetry when `OTEL_DENO=true`, else nowhere. */
  tracing?: Tracing;
  /** Aborts a startup under way: the runtimes are shut down and the start rejects. */
  signal?: AbortSignal;
}

/** A running service. */
export interface Service {
  /** Base URL, e.g. `http://127.0.0.1:8000`. */
  readonly url: string;
  /** The port actually bound. */
  readonly port: number;
  /**
   * Drains and stops: /health turns 503, new runs get 503, in-flight and queued runs get up
   * to the drain timeout, then every runtime is shut down and the server closed. Idempotent.
   */
  shutdown(): Promise<void>;
}

/** Starts the runtimes and serves the app; rejects when a runtime cannot start. */
export async function startService(config: Config, options: ServiceOptions = {}): Promise<Service> {
  const tracing = options.tracing ??
    createTracing({ enabled: telemetryEnabled(Deno.env), tenantHashKey: config.tenantHashKey });
  const logger = options.logger ??
    createJsonLogger(tracing.enabled ? { context: () => tracing.logFields() } : {});
  const metrics = new ServiceMetrics();
  // Before any sandbox starts: they need descriptors too.
  const fileLimits = await raiseOpenFileLimit();
  const runtimes = new RuntimeSet(config.languages, {
    registrations: options.registrations ?? DEFAULT_REGISTRATIONS,
    config,
    onSandboxBoot: (language, durationMs, ok, failure) => {
      metrics.recordSandboxBoot(language, durationMs, ok);
      if (!ok) logger.error({ msg: "sandbox_boot_failed", language, detail: failure });
    },
  });
  await startRuntimes(runtimes, options.signal);
  const scheduler = new Scheduler({
    maxConcurrent: config.maxInstances,
    queueLimit: config.queueLimit,
    runtimeFor: (language) => runtimes.get(language),
    languages: runtimes.languages,
    maxValidations: config.maxValidations,
    validationTimeoutMs: config.timeoutMs,
    onEvent: (event) =>
      logger.error({
        msg: `scheduler_${event.kind}`,
        request_id: event.requestId,
        task_id: event.taskId,
        detail: event.message,
      }),
  });
  let draining = false;
  const app = createApp({
    config,
    scheduler,
    metrics,
    logger,
    version: VERSION,
    isDraining: () => draining,
    tracing,
  });
  const maxConnections = config.maxConnections ??
    defaultMaxConnections(fileLimits?.soft, {
      sandboxes: config.maxInstances + config.poolSize * runtimes.runtimes.length,
    });
  let server: ConnectionServer;
  try {
    server = serveConnections(app.fetch, {
      hostname: config.host,
      port: config.port,
      maxConnections,
      idleTimeoutMs: config.idleTimeoutMs,
      onEvent: (event) => {
        if (event.kind === "closed") return metrics.recordConnectionClosed(event.reason);
        if (event.kind === "unlimited") {
          return logger.error({ msg: "connections_unlimited", detail: event.message });
        }
        metrics.recordAcceptError();
        logger.error({ msg: "accept_error", detail: event.message, retry_in_ms: event.retryInMs });
      },
    });
  } catch (error) {
    await runtimes.shutdown();
    throw error;
  }
  metrics.setSources({
    queueLength: () => scheduler.stats().queuedTasks,
    instances: () =>
      runtimes.languages.map((language) => [language, scheduler.poolStats(language)]),
    connections: () => server.stats(),
    executionsInFlight: () => scheduler.stats().runningTasks,
    limits: { executionSlots: config.maxInstances, queueCapacity: config.queueLimit },
  });
  const address = server.addr;
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  logger.info({
    msg: "listening",
    url: `http://${host}:${address.port}`,
    languages: config.languages,
    max_connections: maxConnections,
    open_files: fileLimits?.soft,
  });

  let stopped: Promise<void> | undefined;
  async function stop(): Promise<void> {
    draining = true;
    scheduler.close();
    const before = scheduler.stats();
    logger.info({ msg: "draining", queued: before.queuedTasks, running: before.runningTasks });
    const drained = await settlesWithin(scheduler.idle(), config.drainTimeoutMs);
    const abandoned = drained ? 0 : scheduler.abandonQueued();
    await runtimes.shutdown();
    // Runs cut short by the shutdown are answered by their runtimes (or the scheduler's
    // deadline); give their answers a moment to leave before closing connections.
    await settlesWithin(scheduler.idle(), SHUTDOWN_GRACE_MS);
    await server.shutdown({ graceMs: SHUTDOWN_GRACE_MS });
    logger.info({ msg: "stopped", drained, abandoned });
  }
  return {
    url: `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${address.port}`,
    port: address.port,
    shutdown() {
      stopped ??= stop();
      return stopped;
    },
  };
}

/** Starts the runtimes; when `signal` fires first, shuts them down and rejects. */
async function startRuntimes(runtimes: RuntimeSet, signal?: AbortSignal): Promise<void> {
  const started = runtimes.start();
  if (!signal) return started;
  const { promise: aborted, reject } = Promise.withResolvers<never>();
  const onAbort = () => reject(new Error("startup was interrupted by a shutdown request"));
  if (signal.aborted) onAbort();
  else signal.addEventListener("abort", onAbort, { once: true });
  try {
    await Promise.race([started, aborted]);
  } catch (error) {
    if (signal.aborted) await runtimes.shutdown();
    throw error;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}
