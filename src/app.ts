/**
 * The HTTP app: routes of the wire contract over the scheduler and runtimes, request
 * validation and error mapping. It runs nothing itself.
 *
 * @module
 */

import { createRoute, OpenAPIHono, type z } from "@hono/zod-openapi";
import { swaggerUI } from "@hono/swagger-ui";
import type { MiddlewareHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import { bodyLimitBytes, type Config } from "./config.ts";
import { canonicalLanguage } from "./languages.ts";
import type { Logger } from "./log.ts";
import type { RejectionReason, ServiceMetrics } from "./metrics.ts";
import type { Language, RunOutcome } from "./runtime.ts";
import type { RuntimeSet } from "./runtimes.ts";
import { type RejectionKind, type Scheduler, SchedulerRejection } from "./scheduler.ts";
import {
  type ErrorDetail,
  errorDetails,
  ErrorResponseSchema,
  HealthResponseSchema,
  type RequestLimits,
  runRequestSchema,
  type RunResponse,
  RunResponseSchema,
  validateRequestSchema,
  ValidateResponseSchema,
} from "./schemas.ts";

/** What the app serves from. */
export interface AppOptions {
  /** The service configuration. */
  config: Config;
  /** Runtimes of the enabled languages. */
  runtimes: RuntimeSet;
  /** The run scheduler. */
  scheduler: Scheduler;
  /** Metrics registry and recorders. */
  metrics: ServiceMetrics;
  /** Where request lines go. */
  logger: Logger;
  /** Service version for /health. */
  version: string;
  /** True once the service is shutting down. */
  isDraining: () => boolean;
}

/** Paths served without an API key. */
const OPEN_PATHS = new Set(["/health", "/openapi.json", "/docs"]);

/** Seconds a client should wait before retrying a 503. */
const RETRY_AFTER_S: Record<RejectionKind, number> = {
  queue_full: 1,
  draining: 5,
  cancelled: 1,
};

/** Time past `FAAS_TIMEOUT` a syntax check may take before it is a 500. */
const VALIDATE_GRACE_MS = 2_000;

/** Resolves with the value of `promise`, or `undefined` when it takes longer than `ms`. */
async function deadline<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** A request the app refuses; turned into a JSON error answer in one place. */
class RequestError extends Error {
  readonly status: 400 | 401 | 413 | 503;
  readonly reason: RejectionReason;
  readonly details?: ErrorDetail[];
  readonly headers: Record<string, string>;

  constructor(
    status: 400 | 401 | 413 | 503,
    message: string,
    options: { reason: RejectionReason; details?: ErrorDetail[]; headers?: Record<string, string> },
  ) {
    super(message);
    this.status = status;
    this.reason = options.reason;
    this.details = options.details;
    this.headers = options.headers ?? {};
  }
}

interface RequestLog {
  taskId?: string;
  tenant?: string;
  language?: Language;
  status?: string;
  durationMs?: number;
  queueTimeMs?: number;
  attempts?: number;
  debug?: Record<string, unknown>;
}

type Env = { Variables: { log: RequestLog } };

/** Builds the Hono app. */
export function createApp(options: AppOptions): OpenAPIHono<Env> {
  const { config, runtimes, scheduler, metrics, logger } = options;
  const limits: RequestLimits = {
    maxCodeBytes: config.maxCodeBytes,
    maxTimeoutMs: config.maxTimeoutMs,
    languages: runtimes.languages,
  };
  const runSchema = runRequestSchema(limits);
  const validateSchema = validateRequestSchema(limits);
  const bodyLimit = bodyLimitBytes(config);
  const app = new OpenAPIHono<Env>();

  app.use("*", requestLogger(logger));
  if (config.apiKey !== undefined) app.use("*", apiKeyGuard(config.apiKey));

  app.post("/run_code", async (c) => {
    const body = parse(runSchema, await readJson(c.req.raw, bodyLimit));
    const language = canonicalLanguage(body.language)!;
    const tenant = body.ext?.space_id;
    const taskId = crypto.randomUUID();
    const log = c.get("log");
    Object.assign(log, { taskId, tenant, language });
    if (config.debug) log.debug = { code: body.code, input: body.input };
    const timeoutMs = body.timeout ?? config.timeoutMs;
    let result;
    try {
      result = await scheduler.submit({
        taskId,
        language,
        code: body.code,
        timeoutMs,
        input: body.input,
        tenant,
        priority: body.priority ?? "normal",
      }, { signal: c.req.raw.signal });
    } catch (error) {
      if (error instanceof SchedulerRejection) {
        throw new RequestError(503, error.message, {
          reason: error.kind,
          headers: { "Retry-After": String(RETRY_AFTER_S[error.kind]) },
        });
      }
      throw error;
    }
    const { outcome, queueTimeMs, attempts } = result;
    // The pool while the run held its sandbox (it counts the run); now only when it never ran.
    const stats = result.poolStats ?? runtimes.get(language)?.stats();
    metrics.recordRun(language, outcome.status, { durationMs: outcome.durationMs, queueTimeMs });
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
    return c.json(runResponse(outcome, {
      taskId,
      language,
      queueTimeMs,
      timeoutMs,
      config,
      poolStats: {
        totalInstances: integer(stats?.totalInstances),
        idleInstances: integer(stats?.idleInstances),
        activeInstances: integer(stats?.activeInstances),
      },
    }));
  });

  app.post("/validate_code", async (c) => {
    const body = parse(validateSchema, await readJson(c.req.raw, bodyLimit));
    const language = canonicalLanguage(body.language)!;
    c.get("log").language = language;
    const runtime = runtimes.get(language)!;
    const deadlineMs = config.timeoutMs + VALIDATE_GRACE_MS;
    const verdict = await deadline(runtime.validate(body.code, language), deadlineMs);
    if (verdict === undefined) {
      throw new Error(`the ${language} syntax check did not answer within ${deadlineMs} ms`);
    }
    return c.json(verdict);
  });

  app.get("/health", (c) => {
    const languages: Record<string, { available: boolean; version: string }> = {};
    const sandbox: Record<string, { isolation: Record<string, boolean> }> = {};
    const perLanguage: Record<string, ReturnType<RuntimeSet["poolStats"]>[number][1]> = {};
    let available = true;
    for (const [language, stats] of runtimes.poolStats()) {
      const info = runtimes.get(language)!.info();
      languages[language] = { available: info.available, version: info.version };
      sandbox[language] = { isolation: info.isolation };
      perLanguage[language] = stats;
      available &&= info.available;
    }
    const pool = { totalInstances: 0, idleInstances: 0, activeInstances: 0 };
    for (const runtime of runtimes.runtimes) {
      const stats = runtime.stats();
      pool.totalInstances += integer(stats.totalInstances);
      pool.idleInstances += integer(stats.idleInstances);
      pool.activeInstances += integer(stats.activeInstances);
    }
    const draining = options.isDraining();
    const healthy = available && !draining;
    return c.json({
      status: healthy ? "healthy" : "unhealthy",
      timestamp: new Date().toISOString(),
      version: options.version,
      uptime_s: Math.floor(performance.now() / 1000),
      pool: { ...pool, languages: perLanguage },
      scheduler: scheduler.stats(),
      languages,
      sandbox,
      draining,
    }, healthy ? 200 : 503);
  });

  app.get("/metrics", async (c) => {
    const { body, contentType } = await metrics.render();
    return c.body(body, 200, { "Content-Type": contentType });
  });

  documentRoutes(app);
  app.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: {
      title: "faas-sandbox",
      version: options.version,
      description: "Runs short JavaScript, TypeScript and Python snippets in sandboxes.",
    },
  });
  app.get("/docs", swaggerUI({ url: "/openapi.json" }));

  const allowed: Record<string, string> = {
    "/run_code": "POST",
    "/validate_code": "POST",
    "/health": "GET, HEAD",
    "/metrics": "GET, HEAD",
    "/openapi.json": "GET, HEAD",
    "/docs": "GET, HEAD",
  };
  for (const [path, allow] of Object.entries(allowed)) {
    app.all(
      path,
      (c) =>
        c.json({ error: `method ${c.req.method} is not allowed on ${path}; use ${allow}` }, 405, {
          Allow: allow,
        }),
    );
  }

  app.notFound((c) => c.json({ error: `no route ${c.req.method} ${c.req.path}` }, 404));
  app.onError((error, c) => {
    if (error instanceof RequestError) {
      metrics.recordRejection(error.reason);
      const body = error.details
        ? { error: error.message, details: error.details }
        : { error: error.message };
      return c.json(body, error.status, error.headers);
    }
    if (error instanceof HTTPException && error.status < 500) {
      return c.json({ error: error.message || "bad request" }, error.status);
    }
    logger.error({
      msg: "internal_error",
      method: c.req.method,
      path: c.req.path,
      error: error instanceof Error ? error.stack ?? error.message : String(error),
    });
    return c.json({ error: "internal error; see the service log" }, 500);
  });
  return app;
}

function requestLogger(logger: Logger): MiddlewareHandler<Env> {
  return async (c, next) => {
    const startedAt = performance.now();
    const log: RequestLog = {};
    c.set("log", log);
    await next();
    logger.info({
      msg: "request",
      method: c.req.method,
      path: c.req.path,
      http_status: c.res.status,
      elapsed_ms: Math.round(performance.now() - startedAt),
      task_id: log.taskId,
      tenant: log.tenant,
      language: log.language,
      status: log.status,
      duration_ms: log.durationMs,
      queue_time_ms: log.queueTimeMs,
      attempts: log.attempts,
      ...(log.debug ? { debug: log.debug } : {}),
    });
  };
}

function apiKeyGuard(apiKey: string): MiddlewareHandler<Env> {
  const expected = digest(apiKey);
  return async (c, next) => {
    if (OPEN_PATHS.has(c.req.path)) return next();
    const authorization = c.req.header("Authorization") ?? "";
    const bearer = /^Bearer\s+(.+)$/i.exec(authorization)?.[1]?.trim();
    const candidates = [bearer, c.req.header("X-API-Key")?.trim()];
    let ok = false;
    for (const candidate of candidates) {
      // Evaluate both candidates always, so timing says nothing about which header matched.
      if (candidate !== undefined && constantTimeEqual(await digest(candidate), await expected)) {
        ok = true;
      }
    }
    if (!ok) {
      throw new RequestError(
        401,
        "missing or wrong API key; send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        { reason: "unauthorized", headers: { "WWW-Authenticate": "Bearer" } },
      );
    }
    return next();
  };
}

async function digest(text: string): Promise<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** Compares two digests of equal length without an early exit. */
function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let difference = a.length ^ b.length;
  for (let i = 0; i < Math.min(a.length, b.length); i++) difference |= a[i] ^ b[i];
  return difference === 0;
}

/** Reads a JSON body of at most `limit` bytes, whatever the content type says. */
async function readJson(request: Request, limit: number): Promise<unknown> {
  const tooLarge = () =>
    new RequestError(413, `request body is larger than the limit of ${limit} bytes`, {
      reason: "body_too_large",
    });
  const declared = Number(request.headers.get("Content-Length") ?? "0");
  if (declared > limit) throw tooLarge();
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (request.body) {
    const reader = request.body.getReader();
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        await reader.cancel().catch(() => {});
        throw tooLarge();
      }
      chunks.push(value);
    }
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  const invalid = (message: string) =>
    new RequestError(400, `invalid JSON body: ${message}`, {
      reason: "invalid_request",
      details: [{ field: "body", message }],
    });
  if (size === 0) throw invalid("the body is empty; expected a JSON object");
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw invalid("the body is not valid UTF-8");
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw invalid(error instanceof Error ? error.message : String(error));
  }
}

function parse<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const details = errorDetails(result.error);
  const first = details[0];
  throw new RequestError(400, `invalid request: ${first.field}: ${first.message}`, {
    reason: "invalid_request",
    details,
  });
}

/** A finite integer, 0 for anything else. */
function integer(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) ? Math.round(value) : 0;
}

function runResponse(
  outcome: RunOutcome,
  context: {
    taskId: string;
    language: Language;
    queueTimeMs: number;
    timeoutMs: number;
    config: Config;
    poolStats: RunResponse["metadata"]["pool_stats"];
  },
): RunResponse {
  const status = outcome.status;
  const error = status === "success" || status === "error"
    ? ""
    : oneLine(outcome.error || defaultError(status, context));
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
      status,
      exit_code: integer(outcome.exitCode),
      duration: Math.max(0, integer(outcome.durationMs)),
      queue_time: Math.max(0, integer(context.queueTimeMs)),
      truncated: Boolean(outcome.truncated),
      pool_stats: context.poolStats,
    },
    error,
  };
}

function defaultError(
  status: "timeout" | "memory_limit" | "output_limit" | "crashed",
  context: { timeoutMs: number; config: Config },
): string {
  switch (status) {
    case "timeout":
      return `execution timed out after ${context.timeoutMs} ms`;
    case "memory_limit":
      return `memory limit of ${context.config.memoryLimitMb} MiB exceeded`;
    case "output_limit":
      return `output limit of ${context.config.maxOutputBytes} bytes exceeded`;
    case "crashed":
      return "the sandbox crashed";
  }
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}

/** Registers the routes in the OpenAPI document from the same schemas that validate them. */
function documentRoutes(app: OpenAPIHono<Env>): void {
  const json = <T extends z.ZodType>(schema: T, description: string) => ({
    content: { "application/json": { schema } },
    description,
  });
  const errors = {
    400: json(
      ErrorResponseSchema,
      "Invalid JSON or a field that breaks a rule (named in details).",
    ),
    401: json(ErrorResponseSchema, "Missing or wrong API key (when one is configured)."),
    413: json(ErrorResponseSchema, "Body larger than the limit."),
  };
  // The limits only change bounds, not shapes: document with the widest ones.
  const limits: RequestLimits = {
    maxCodeBytes: Number.MAX_SAFE_INTEGER,
    maxTimeoutMs: Number.MAX_SAFE_INTEGER,
    languages: ["javascript", "typescript", "python"],
  };
  app.openAPIRegistry.registerPath(createRoute({
    method: "post",
    path: "/run_code",
    summary: "Run code in a sandbox",
    request: { body: { ...json(runRequestSchema(limits), "The run."), required: true } },
    responses: {
      200: json(RunResponseSchema, "The code was run (whatever it did)."),
      ...errors,
      503: json(ErrorResponseSchema, "Queue full or shutting down; see Retry-After."),
    },
  }));
  app.openAPIRegistry.registerPath(createRoute({
    method: "post",
    path: "/validate_code",
    summary: "Check syntax without running",
    request: {
      body: { ...json(validateRequestSchema(limits), "The code to check."), required: true },
    },
    responses: { 200: json(ValidateResponseSchema, "The verdict."), ...errors },
  }));
  app.openAPIRegistry.registerPath(createRoute({
    method: "get",
    path: "/health",
    summary: "Health of the service",
    responses: {
      200: json(HealthResponseSchema, "Healthy."),
      503: json(HealthResponseSchema, "Unhealthy (shutting down or a runtime is broken)."),
    },
  }));
  app.openAPIRegistry.registerPath(createRoute({
    method: "get",
    path: "/metrics",
    summary: "Prometheus metrics",
    responses: {
      200: { content: { "text/plain": { schema: { type: "string" } } }, description: "Metrics." },
      401: errors[401],
    },
  }));
}
