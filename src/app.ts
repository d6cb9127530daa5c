/**
 * The HTTP app: the routes of the wire contract (declared once, in http/routes.ts) over the
 * scheduler, with the cross-cutting concerns as middleware (http/). Its handlers only turn a
 * request into a call of the scheduler and the scheduler's answer into a response; it never
 * reaches a runtime itself.
 *
 * @module
 */

import { OpenAPIHono, type RouteHandler } from "@hono/zod-openapi";
import type { Context } from "hono";
import { methodNotAllowed } from "hono/method-not-allowed";
import { requestId } from "hono/request-id";
import { bodyLimitBytes, type Config } from "./config.ts";
import { accessLog } from "./http/access_log.ts";
import { apiKey } from "./http/api_key.ts";
import type { AppEnv } from "./http/context.ts";
import {
  docsAssetResponse,
  loadDocs,
  PAGE_CACHE_CONTROL,
  PAGE_CONTENT_SECURITY_POLICY,
} from "./http/docs.ts";
import { errorHandler, HttpError, invalidRequest } from "./http/errors.ts";
import { jsonBody } from "./http/json_body.ts";
import { requestSpan } from "./http/request_span.ts";
import { apiRoutes, isOpenPath } from "./http/routes.ts";
import { canonicalLanguage } from "./languages.ts";
import type { Logger } from "./log.ts";
import type { ServiceMetrics } from "./metrics.ts";
import { outcomeError } from "./outcome.ts";
import type { Language } from "./runtime.ts";
import {
  type RejectionKind,
  type ScheduledResult,
  type Scheduler,
  SchedulerRejection,
} from "./scheduler.ts";
import { errorDetails, type RunResponse } from "./schemas.ts";
import { DISABLED_TRACING, type Tracing } from "./tracing.ts";

/** What the app serves from. */
export interface AppOptions {
  /** The service configuration. */
  config: Config;
  /** The scheduler: the app's only way to the runtimes. */
  scheduler: Scheduler;
  /** Metrics registry and recorders. */
  metrics: ServiceMetrics;
  /** Where request lines go. */
  logger: Logger;
  /** Service version for /health. */
  version: string;
  /** True once the service is shutting down. */
  isDraining: () => boolean;
  /** Where runs are traced; default nowhere. */
  tracing?: Tracing;
}

type Routes = ReturnType<typeof apiRoutes>;

/** Seconds a client should wait before retrying a 503. */
const RETRY_AFTER_S: Record<RejectionKind, number> = {
  queue_full: 1,
  draining: 5,
  cancelled: 1,
};

/** Longest `X-Request-Id` taken from a caller; a longer (or odd) one is replaced. */
const REQUEST_ID_MAX_LENGTH = 128;

/** Builds the Hono app. */
export function createApp(options: AppOptions): OpenAPIHono<AppEnv> {
  const { config, logger, metrics } = options;
  const routes = apiRoutes({
    limits: {
      maxCodeBytes: config.maxCodeBytes,
      maxTimeoutMs: config.maxTimeoutMs,
      languages: config.languages,
    },
    body: jsonBody({ limitBytes: bodyLimitBytes(config), stallTimeoutMs: config.idleTimeoutMs }),
  });
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) throw invalidRequest(errorDetails(result.error));
    },
  });
  app.use(requestId({ limitLength: REQUEST_ID_MAX_LENGTH }), accessLog(logger));
  const tracing = options.tracing ?? DISABLED_TRACING;
  if (tracing.enabled) app.use(requestSpan(tracing));
  app.use(methodNotAllowed({ app, onMethodNotAllowed: wrongMethod }));
  if (config.apiKey !== undefined) app.use(apiKey(config.apiKey, { isOpen: isOpenPath }));

  app.openapi(routes.runCode, runCode(options));
  app.openapi(routes.validateCode, validateCode(options));
  app.openapi(routes.health, health(options));
  app.openapi(routes.metrics, async (c) => {
    const { body, contentType } = await metrics.render();
    return c.text(body, 200, { "Content-Type": contentType });
  });
  app.openapi(routes.openapi, (c) => c.json(openApiDocument(app, options.version), 200));
  app.openapi(routes.docs, docsPage());
  app.openapi(routes.docsAsset, docsAsset());

  app.notFound((c) => c.json({ error: `no route ${c.req.method} ${c.req.path}` }, 404));
  app.onError(errorHandler({ logger, onRejected: (reason) => metrics.recordRejection(reason) }));
  return app;
}

/** POST /run_code: the request to the scheduler, its result to the contract's answer. */
function runCode(options: AppOptions): RouteHandler<Routes["runCode"], AppEnv> {
  const { config, scheduler, metrics } = options;
  const tracing = options.tracing ?? DISABLED_TRACING;
  return async (c) => {
    const body = c.req.valid("json");
    const language = canonicalLanguage(body.language)!;
    const tenant = body.ext?.space_id;
    const taskId = crypto.randomUUID();
    const timeoutMs = body.timeout ?? config.timeoutMs;
    const priority = body.priority ?? "normal";
    const log = c.get("log");
    Object.assign(log, { taskId, tenant, language });
    if (config.debug) log.debug = { code: body.code, input: body.input };
    const submittedAt = performance.now();
    const result = await scheduler.submit({
      taskId,
      requestId: c.get("requestId"),
      language,
      code: body.code,
      timeoutMs,
      input: body.input,
      tenant,
      priority,
    }, { signal: c.req.raw.signal }).catch(refused);
    const { outcome, queueTimeMs, attempts } = result;
    metrics.recordRun(language, outcome.status, { durationMs: outcome.durationMs, queueTimeMs });
    tracing.recordRun({
      taskId,
      language,
      priority,
      tenant,
      outcome,
      queueTimeMs,
      attempts,
      submittedAt,
      startedAt: result.startedAt,
      answeredAt: performance.now(),
    });
    Object.assign(log, {
      status: outcome.status,
      durationMs: outcome.durationMs,
      queueTimeMs,
      attempts,
    });
    if (config.debug) {
      Object.assign(log.debug!, {
        stdout: outcome.stdout,
        stderr: outcome.stderr,
        ret_val: outcome.retVal,
      });
    }
    return c.json(runResponse(result, { taskId, language, timeoutMs, config }), 200);
  };
}

/** POST /validate_code: a syntax check through the scheduler's lane of checks. */
function validateCode(options: AppOptions): RouteHandler<Routes["validateCode"], AppEnv> {
  const { scheduler } = options;
  return async (c) => {
    const body = c.req.valid("json");
    const language = canonicalLanguage(body.language)!;
    c.get("log").language = language;
    const verdict = await scheduler.validate(
      { language, code: body.code, requestId: c.get("requestId") },
      { signal: c.req.raw.signal },
    ).catch(refused);
    return c.json(verdict, 200);
  };
}

/** GET /health: the scheduler's snapshot, healthy while every runtime is and not draining. */
function health(options: AppOptions): RouteHandler<Routes["health"], AppEnv> {
  return (c) => {
    const snapshot = options.scheduler.snapshot();
    const languages: Record<string, { available: boolean; version: string }> = {};
    const sandbox: Record<string, { isolation: Record<string, boolean> }> = {};
    const pools: Record<string, typeof snapshot.pool> = {};
    let available = true;
    for (const [language, { pool, info }] of Object.entries(snapshot.languages)) {
      languages[language] = { available: info.available, version: info.version };
      sandbox[language] = { isolation: info.isolation };
      pools[language] = pool;
      available &&= info.available;
    }
    const draining = options.isDraining();
    const healthy = available && !draining;
    return c.json({
      status: healthy ? "healthy" as const : "unhealthy" as const,
      timestamp: new Date().toISOString(),
      version: options.version,
      uptime_s: Math.floor(performance.now() / 1000),
      pool: { ...snapshot.pool, languages: pools },
      scheduler: snapshot.scheduler,
      languages,
      sandbox,
      draining,
    }, healthy ? 200 : 503);
  };
}

/** GET /docs: the Swagger UI page, which loads only what the service serves itself. */
function docsPage(): RouteHandler<Routes["docs"], AppEnv> {
  return async (c) => {
    const { page } = await loadDocs();
    return c.html(page, 200, {
      "Cache-Control": PAGE_CACHE_CONTROL,
      "Content-Security-Policy": PAGE_CONTENT_SECURITY_POLICY,
    });
  };
}

/** GET /docs/assets/{tag}/{file}: a file of the docs page, or 404 for one of another build. */
function docsAsset(): RouteHandler<Routes["docsAsset"], AppEnv> {
  return async (c) => {
    const { tag, file } = c.req.valid("param");
    const response = docsAssetResponse(await loadDocs(), {
      tag,
      file,
      acceptEncoding: c.req.header("Accept-Encoding"),
    });
    return response ?? c.json({ error: `no docs asset ${file} in this build` }, 404);
  };
}

/** The 405 answer, naming the methods the path allows (from the routes declared). */
function wrongMethod(c: Context, allowed: string[]): Response {
  const allow = allowed.join(", ");
  const error = `method ${c.req.method} is not allowed on ${c.req.path}; use ${allow}`;
  return c.json({ error }, 405, { Allow: allow });
}

/** A run or check the scheduler refused, as a 503 with `Retry-After`. */
function refused(error: unknown): never {
  if (error instanceof SchedulerRejection) {
    throw new HttpError(503, error.message, {
      reason: error.kind,
      headers: { "Retry-After": String(RETRY_AFTER_S[error.kind]) },
    });
  }
  throw error;
}

function runResponse(
  result: ScheduledResult,
  context: { taskId: string; language: Language; timeoutMs: number; config: Config },
): RunResponse {
  const { outcome, queueTimeMs, poolStats } = result;
  return {
    output: {
      stdout: String(outcome.stdout ?? ""),
      stderr: String(outcome.stderr ?? ""),
      ret_val: String(outcome.retVal ?? ""),
    },
    metadata: {
      task_id: context.taskId,
      instance_id: String(outcome.instanceId ?? ""),
      language: context.language,
      status: outcome.status,
      exit_code: integer(outcome.exitCode),
      duration: Math.max(0, integer(outcome.durationMs)),
      queue_time: Math.max(0, integer(queueTimeMs)),
      truncated: Boolean(outcome.truncated),
      pool_stats: poolStats,
    },
    error: outcomeError(outcome, {
      timeoutMs: context.timeoutMs,
      memoryLimitMb: context.config.memoryLimitMb,
      maxOutputBytes: context.config.maxOutputBytes,
    }),
  };
}

/** A finite integer, 0 for anything else. */
function integer(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) ? Math.round(value) : 0;
}

function openApiDocument(app: OpenAPIHono<AppEnv>, version: string) {
  return app.getOpenAPI31Document({
    openapi: "3.1.0",
    info: {
      title: "faas-sandbox",
      version,
      description: "Runs short JavaScript, TypeScript and Python snippets in sandboxes.",
    },
  });
}
