/**
 * Zod schemas of the wire contract: what requests must look like and what answers look like.
 * The same schemas validate requests and generate `/openapi.json`.
 *
 * @module
 */

import { z } from "@hono/zod-openapi";
import { canonicalLanguage, LANGUAGE_ALIASES } from "./languages.ts";
import { RUN_STATUSES } from "./outcome.ts";
import { type Language, LANGUAGES } from "./runtime.ts";
import { PRIORITIES } from "./scheduler.ts";

/** Most keys in `ext`. */
export const EXT_MAX_KEYS = 32;
/** Largest `ext` key, UTF-8 bytes. */
export const EXT_KEY_MAX_BYTES = 128;
/** Largest `ext.space_id` (the tenant key), UTF-8 bytes. */
export const TENANT_MAX_BYTES = 256;
/** Largest other `ext` value, UTF-8 bytes. */
export const EXT_VALUE_MAX_BYTES = 1024;

/** Request limits taken from the configuration. */
export interface RequestLimits {
  /** Largest `code`, in UTF-8 bytes. */
  maxCodeBytes: number;
  /** Largest `timeout`, in ms. */
  maxTimeoutMs: number;
  /** Languages this service runs. */
  languages: readonly Language[];
}

const ALIAS_LIST = Object.keys(LANGUAGE_ALIASES).join(", ");
const encoder = new TextEncoder();

function typed(expected: string) {
  return {
    error: (issue: { input?: unknown }) =>
      issue.input === undefined
        ? "is required"
        : `expected ${expected}, got ${describe(issue.input)}`,
  };
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : typeof value;
}

function languageSchema(limits: RequestLimits) {
  return z.string(typed("a string")).superRefine((name, ctx) => {
    const language = canonicalLanguage(name);
    if (!language) {
      ctx.addIssue({
        code: "custom",
        message: `unknown language "${name}"; expected one of ${ALIAS_LIST}`,
      });
    } else if (!limits.languages.includes(language)) {
      ctx.addIssue({
        code: "custom",
        message: `language "${language}" is not enabled on this service; enabled: ${
          limits.languages.join(", ")
        }`,
      });
    }
  }).openapi({
    description: `Case-insensitive; one of ${ALIAS_LIST}.`,
    example: "javascript",
  });
}

/** Scratch space for {@link utf8Bytes}: counting never allocates a copy of the text. */
const scratch = new Uint8Array(64 * 1024);

/** The UTF-8 length of `text` (lone surrogates count as U+FFFD, as TextEncoder writes them). */
function utf8Bytes(text: string): number {
  let bytes = 0;
  // A chunk of n UTF-16 units encodes to at most 3n bytes.
  const chunk = scratch.length / 3;
  for (let start = 0; start < text.length;) {
    let end = Math.min(text.length, start + chunk);
    // Never split a surrogate pair between two chunks.
    const last = text.charCodeAt(end - 1);
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end--;
    bytes += encoder.encodeInto(text.slice(start, end), scratch).written;
    start = end;
  }
  return bytes;
}

/** True when `text` is longer than `max` bytes of UTF-8. */
function longerThan(text: string, max: number): boolean {
  // Each UTF-16 unit takes 1 to 3 bytes: skip counting when the length decides.
  if (text.length * 3 <= max) return false;
  return text.length > max || utf8Bytes(text) > max;
}

function extSchema() {
  return z.record(z.string(), z.string(typed("a string")), typed("an object of strings"))
    .superRefine((ext, ctx) => {
      const keys = Object.keys(ext);
      if (keys.length > EXT_MAX_KEYS) {
        ctx.addIssue({
          code: "custom",
          message: `expected at most ${EXT_MAX_KEYS} keys, got ${keys.length}`,
        });
        return;
      }
      for (const key of keys) {
        if (longerThan(key, EXT_KEY_MAX_BYTES)) {
          ctx.addIssue({
            code: "custom",
            message: `expected keys of at most ${EXT_KEY_MAX_BYTES} bytes`,
          });
          return;
        }
        const max = key === "space_id" ? TENANT_MAX_BYTES : EXT_VALUE_MAX_BYTES;
        if (longerThan(ext[key], max)) {
          ctx.addIssue({
            code: "custom",
            path: [key],
            message: `expected at most ${max} bytes of UTF-8, got ${utf8Bytes(ext[key])}`,
          });
        }
      }
    });
}

function codeSchema(limits: RequestLimits) {
  return z.string(typed("a string"))
    .min(1, "must not be empty")
    .superRefine((code, ctx) => {
      if (!longerThan(code, limits.maxCodeBytes)) return;
      ctx.addIssue({
        code: "custom",
        message: `expected at most ${limits.maxCodeBytes} bytes of UTF-8, got ${utf8Bytes(code)}`,
      });
    })
    .openapi({
      description: "Source code. JavaScript/TypeScript run as an async function body.",
      example: "console.log('Hello World'); return 42;",
    });
}

/** Schema of a `/run_code` request body under the given limits. */
export function runRequestSchema(limits: RequestLimits) {
  return z.object({
    language: languageSchema(limits),
    code: codeSchema(limits),
    timeout: z.number(typed("an integer number of milliseconds"))
      .int("expected an integer number of milliseconds")
      .min(1, "expected at least 1 ms")
      .max(limits.maxTimeoutMs, `expected at most ${limits.maxTimeoutMs} ms`)
      .nullish()
      .openapi({ description: "Run timeout in milliseconds.", example: 5000 }),
    // Case-insensitive; an empty string (a Go zero value) means the default.
    priority: z.preprocess(
      (value) => typeof value === "string" ? value.trim().toLowerCase() || undefined : value,
      z.enum(PRIORITIES, {
        error: (issue) =>
          `expected one of ${PRIORITIES.join(", ")}, got ${
            typeof issue.input === "string" ? `"${issue.input}"` : describe(issue.input)
          }`,
      }).nullish(),
    ).openapi({ description: "Scheduling priority (default normal).", example: "normal" }),
    input: z.unknown().optional().openapi({
      description: "Any JSON value, visible to the code as `input`.",
    }),
    ext: extSchema().nullish().openapi({
      description: `String map; \`space_id\` is the tenant key (at most ${TENANT_MAX_BYTES} ` +
        `bytes). At most ${EXT_MAX_KEYS} keys of ${EXT_KEY_MAX_BYTES} bytes; other values at ` +
        `most ${EXT_VALUE_MAX_BYTES} bytes.`,
      example: { space_id: "123" },
    }),
  }, typed("a JSON object")).openapi("RunRequest");
}

/** A valid `/run_code` request, before language aliases are resolved. */
export type RunRequest = z.infer<ReturnType<typeof runRequestSchema>>;

/** Schema of a `/validate_code` request body under the given limits. */
export function validateRequestSchema(limits: RequestLimits) {
  return z.object({
    language: languageSchema(limits),
    code: codeSchema(limits),
  }, typed("a JSON object")).openapi("ValidateRequest");
}

/** A valid `/validate_code` request. */
export type ValidateRequest = z.infer<ReturnType<typeof validateRequestSchema>>;

/** Instance counts. */
export const PoolStatsSchema = z.object({
  totalInstances: z.number().int(),
  idleInstances: z.number().int(),
  activeInstances: z.number().int(),
}).openapi("PoolStats");

/** Schema of a `/run_code` answer (HTTP 200). */
export const RunResponseSchema = z.object({
  output: z.object({
    stdout: z.string(),
    stderr: z.string(),
    ret_val: z.string(),
  }),
  metadata: z.object({
    task_id: z.string(),
    instance_id: z.string(),
    language: z.enum(LANGUAGES),
    status: z.enum(RUN_STATUSES),
    exit_code: z.number().int(),
    duration: z.number().int().openapi({ description: "Execution time in whole ms." }),
    queue_time: z.number().int().openapi({ description: "Wait before execution, whole ms." }),
    truncated: z.boolean(),
    pool_stats: PoolStatsSchema,
  }),
  error: z.string().openapi({
    description: "Empty for success/error; a one-line message for the other statuses.",
  }),
}).openapi("RunResponse");

/** A `/run_code` answer. */
export type RunResponse = z.infer<typeof RunResponseSchema>;

/** Schema of a `/validate_code` answer. */
export const ValidateResponseSchema = z.object({
  valid: z.boolean(),
  error: z.object({
    message: z.string(),
    line: z.number().int(),
    column: z.number().int(),
  }).nullable(),
}).openapi("ValidateResponse");

/** Schema of a `/health` answer. */
export const HealthResponseSchema = z.object({
  status: z.enum(["healthy", "unhealthy"]),
  timestamp: z.string(),
  version: z.string(),
  uptime_s: z.number().int(),
  pool: PoolStatsSchema.extend({ languages: z.record(z.string(), PoolStatsSchema) }),
  scheduler: z.object({
    totalTasks: z.number().int(),
    completedTasks: z.number().int(),
    failedTasks: z.number().int(),
    queuedTasks: z.number().int(),
    runningTasks: z.number().int(),
    rejectedTasks: z.number().int(),
    cancelledTasks: z.number().int(),
    averageExecutionTime: z.number().int(),
    runningValidations: z.number().int(),
    queuedValidations: z.number().int(),
  }),
  languages: z.record(
    z.string(),
    z.object({ available: z.boolean(), version: z.string() }),
  ),
  sandbox: z.record(z.string(), z.object({ isolation: z.record(z.string(), z.boolean()) })),
  draining: z.boolean(),
}).openapi("HealthResponse");

/** One problem with a request. */
export const ErrorDetailSchema = z.object({
  field: z.string().openapi({ example: "code" }),
  message: z.string().openapi({ example: "must not be empty" }),
});

/** Schema of every non-run error answer. */
export const ErrorResponseSchema = z.object({
  error: z.string(),
  details: z.array(ErrorDetailSchema).optional(),
}).openapi("ErrorResponse");

/** A problem with a request, as sent in `details`. */
export type ErrorDetail = z.infer<typeof ErrorDetailSchema>;

/** Turns zod issues into `details` entries that name the field. */
export function errorDetails(error: z.ZodError): ErrorDetail[] {
  return error.issues.map((issue) => ({
    field: issue.path.length ? issue.path.map(String).join(".") : "body",
    message: issue.message,
  }));
}
