/**
 * Structured logs: one JSON object per line. Request lines go to stdout; service problems
 * go to stderr. Code, input and output are only ever added by callers when debugging is on.
 *
 * @module
 */

/** One log record; `msg` says what happened. */
export interface LogRecord {
  /** What happened, e.g. `request` or `shutdown`. */
  msg: string;
  /** Any further fields. */
  [field: string]: unknown;
}

/** Where log records go. */
export interface Logger {
  /** Something normal happened (one line per request). */
  info(record: LogRecord): void;
  /** Something went wrong on our side. */
  error(record: LogRecord): void;
}

const encoder = new TextEncoder();

/** Fields added to every line, e.g. the active trace's ids; undefined adds none. */
export type LogContext = () => Record<string, unknown> | undefined;

function line(level: string, record: LogRecord, context?: LogContext): Uint8Array {
  return encoder.encode(
    JSON.stringify({ time: new Date().toISOString(), level, ...context?.(), ...record }) + "\n",
  );
}

function writeAll(stream: { writeSync(bytes: Uint8Array): number }, bytes: Uint8Array): void {
  try {
    let offset = 0;
    while (offset < bytes.length) offset += stream.writeSync(bytes.subarray(offset));
  } catch {
    // A closed or broken log stream must never fail a request.
  }
}

/**
 * Writes JSON lines to stdout (info) and stderr (error). `options.context` adds fields to every
 * line, after `time` and `level` (a record's own fields win over them).
 */
export function createJsonLogger(options: { context?: LogContext } = {}): Logger {
  const { context } = options;
  return {
    info(record) {
      writeAll(Deno.stdout, line("info", record, context));
    },
    error(record) {
      writeAll(Deno.stderr, line("error", record, context));
    },
  };
}

/** Drops every record. */
export function createSilentLogger(): Logger {
  return { info() {}, error() {} };
}
