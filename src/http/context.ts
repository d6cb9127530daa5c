/**
 * What the HTTP edge keeps per request, shared by its middleware and handlers.
 *
 * @module
 */

import type { Language } from "../runtime.ts";

/** What a handler learned about the request, for its access-log line. */
export interface RequestLog {
  /** The run's task id. */
  taskId?: string;
  /** The run's tenant (`ext.space_id`, at most 256 bytes). */
  tenant?: string;
  /** The canonical language. */
  language?: Language;
  /** How the run ended. */
  status?: string;
  /** Execution time, ms. */
  durationMs?: number;
  /** Wait before execution, ms. */
  queueTimeMs?: number;
  /** Sandboxes tried. */
  attempts?: number;
  /** Code, input and output: only when debugging is on. */
  debug?: Record<string, unknown>;
}

/** The Hono environment of the app: what middleware hands on to handlers. */
export interface AppEnv {
  /** Per-request values. */
  Variables: {
    /** The request's id, echoed in `X-Request-Id` and in every log line of the request. */
    requestId: string;
    /** Filled by the handler, written by the access log. */
    log: RequestLog;
  };
}
