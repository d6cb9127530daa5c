/**
 * Requests the service refuses, as values: each carries its HTTP status, the reason counted in
 * the metrics and what the JSON answer says. They are thrown anywhere in the edge and turned
 * into answers in one place, {@link errorHandler}.
 *
 * @module
 */

import type { ErrorHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Logger } from "../log.ts";
import type { RejectionReason } from "../metrics.ts";
import type { ErrorDetail } from "../schemas.ts";
import type { AppEnv } from "./context.ts";

/** A request the service refuses; answered `{"error": message, "details"?: [...]}`. */
export class HttpError extends Error {
  /** HTTP status of the answer. */
  readonly status: ContentfulStatusCode;
  /** Reason counted in `faas_rejected_requests_total`. */
  readonly reason: RejectionReason;
  /** Problems with named fields (400 only). */
  readonly details?: ErrorDetail[];
  /** Extra headers of the answer (e.g. `Retry-After`). */
  readonly headers: Record<string, string>;

  /** Creates the refusal; `message` is the answer's `error`. */
  constructor(
    status: ContentfulStatusCode,
    message: string,
    options: { reason: RejectionReason; details?: ErrorDetail[]; headers?: Record<string, string> },
  ) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.reason = options.reason;
    this.details = options.details;
    this.headers = options.headers ?? {};
  }
}

/** A 400 for a body or field that breaks a rule; the first detail is named in the message. */
export function invalidRequest(details: ErrorDetail[], prefix = "invalid request"): HttpError {
  const first = details[0] ?? { field: "body", message: "is not valid" };
  return new HttpError(400, `${prefix}: ${first.field}: ${first.message}`, {
    reason: "invalid_request",
    details,
  });
}

/**
 * Turns whatever a request threw into its answer: a {@link HttpError} as it says, Hono's own
 * 4xx as `{"error"}`, anything else as a 500 that names no internals (the log has them).
 * `onRejected` counts the refusals by reason, a 500 as `internal_error`.
 */
export function errorHandler(options: {
  logger: Logger;
  onRejected: (reason: RejectionReason) => void;
}): ErrorHandler<AppEnv> {
  return (error, c) => {
    if (error instanceof HttpError) {
      options.onRejected(error.reason);
      const body = error.details
        ? { error: error.message, details: error.details }
        : { error: error.message };
      return c.json(body, error.status, error.headers);
    }
    if (error instanceof HTTPException && error.status < 500) {
      return c.json({ error: error.message || "bad request" }, error.status);
    }
    options.onRejected("internal_error");
    options.logger.error({
      msg: "internal_error",
      request_id: c.get("requestId"),
      method: c.req.method,
      path: c.req.path,
      error: error instanceof Error ? error.stack ?? error.message : String(error),
    });
    return c.json({ error: "internal error; see the service log" }, 500);
  };
}
