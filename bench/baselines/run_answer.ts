/**
 * The `/run_code` answer of a floor server, built from what its run reported: `ret_val`
 * resolved with the service's own precedence rules (src/ret_val.ts), so that a floor does the
 * same work per answer as the service and its answers pass the same checks.
 *
 * @module
 */

import { resolveRetVal } from "../../src/ret_val.ts";

/** What a floor's run reported. */
export interface FloorRun {
  /** Language of the request. */
  language: string;
  /** `success`, `error` (an uncaught exception, a non-zero exit) or `timeout`. */
  status: "success" | "error" | "timeout";
  /** Process-style exit code. */
  exitCode: number;
  /** What the run printed to stdout. */
  stdout: string;
  /** What the run printed to stderr. */
  stderr: string;
  /** The last `return_val(v)`: `v` when a string, else its JSON. */
  explicit?: string | null;
  /** The returned (JS) or last expression (Python) value, serialized. */
  returned?: string | null;
  /** Wall time of the run in ms. */
  durationMs: number;
  /** The run's timeout in ms, for the timeout message. */
  timeoutMs: number;
}

/** The contract-shaped answer of `run` (see CONTRACT.md, POST /run_code). */
export function runAnswer(run: FloorRun, instanceId: string): Record<string, unknown> {
  const resolved = resolveRetVal({
    explicit: run.explicit ?? undefined,
    returned: run.returned ?? undefined,
    stdout: run.stdout,
  });
  return {
    output: { stdout: resolved.stdout, stderr: run.stderr, ret_val: resolved.retVal },
    metadata: {
      task_id: crypto.randomUUID(),
      instance_id: instanceId,
      language: run.language,
      status: run.status,
      exit_code: run.exitCode,
      duration: Math.round(run.durationMs),
      queue_time: 0,
      truncated: false,
    },
    error: run.status === "timeout" ? `execution timed out after ${run.timeoutMs} ms` : "",
  };
}

/** A `/run_code` request as a floor reads it. */
export interface FloorRequest {
  /** Language named by the request. */
  language: string;
  /** The code. */
  code: string;
  /** `input` as JSON text, when the request has one. */
  input?: string;
  /** The run's timeout in ms (30 s when the request names none). */
  timeoutMs: number;
}

/** Reads a `/run_code` body; a message saying what was expected when it is not one. */
export function readRequest(body: unknown): FloorRequest | string {
  const { language, code, input, timeout } = (body ?? {}) as Record<string, unknown>;
  if (typeof language !== "string" || typeof code !== "string") {
    return "expected string fields language and code";
  }
  return {
    language,
    code,
    input: input === undefined ? undefined : JSON.stringify(input),
    timeoutMs: typeof timeout === "number" && timeout > 0 ? timeout : 30_000,
  };
}
