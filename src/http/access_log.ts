/**
 * The access log: one JSON line per request, written once the answer is ready, with what the
 * handler learned about the request (see {@link RequestLog}) and the request's id.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import type { Logger } from "../log.ts";
import type { AppEnv, RequestLog } from "./context.ts";

/** Logs one `{"msg": "request", …}` line per request; code and output only under `debug`. */
export function accessLog(logger: Logger): MiddlewareHandler<AppEnv> {
  return async function accessLog(c, next) {
    const startedAt = performance.now();
    const log: RequestLog = {};
    c.set("log", log);
    await next();
    logger.info({
      msg: "request",
      request_id: c.get("requestId"),
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
