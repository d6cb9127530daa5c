/**
 * Each way a run can end: its status, its one-line message and its exit code, built here and
 * nowhere else. Every layer that ends a run (sandbox, runtime, scheduler) builds its
 * {@link RunOutcome} with a constructor of this module, and the HTTP edge takes the message
 * from {@link outcomeError}, so each wording exists once.
 *
 * | status         | constructor                                        | exit code | message                             |
 * | -------------- | -------------------------------------------------- | --------- | ----------------------------------- |
 * | `success`      | {@link finished} (exit code 0)                     | 0         | none                                |
 * | `error`        | {@link finished} (any other exit code)             | its own   | none: the trace is in stderr        |
 * | `timeout`      | {@link timedOut}                                   | 124       | `execution timed out after T ms`    |
 * | `timeout`      | {@link notStarted}                                 | -1        | `no sandbox became free within …`   |
 * | `memory_limit` | {@link memoryExceeded}                             | 137       | `memory limit of N MiB exceeded`    |
 * | `output_limit` | {@link outputExceeded}                             | 137       | `output limit of N bytes exceeded`  |
 * | `crashed`      | {@link crashed}                                    | 137       | `sandbox crashed: <reason>`         |
 * | `crashed`      | {@link startFailed}, {@link runtimeFailed}         | -1        | `sandbox failed (to start): <why>`  |
 *
 * ## The timer ladder
 *
 * A run's timeout `T` counts from the moment its runtime hands the code to a sandbox (the
 * runtime calls `RunJob.onStart`); the wait for a sandbox before that is queue time. Each rung
 * answers the run only when the one below it did not:
 *
 * 1. **T, the sandbox's supervisor.** A JS run's host timer fires at T: it asks the runner for
 *    what the run printed (its main thread is never blocked by user code), and kills the runner
 *    and its jail 50 ms later at most. A Python run's zygote sends the run's process SIGTERM at
 *    T (so it flushes what Python buffered) and SIGKILL 40 ms later. Stdout and stderr written
 *    until then are kept.
 * 2. **T + 250 ms, then + 750 ms, the host (Python).** A zygote a loaded host wakes late is
 *    asked to stop the run; one that still has not answered is killed with its runs. Either
 *    way the run is answered {@link timedOut}: the deadline passed.
 * 3. **The runtime's answer.** As soon as the sandbox is gone, the runtime answers
 *    {@link timedOut}: status `timeout`, exit code 124, the output written so far.
 * 4. **T + 2 s, the scheduler's backstop.** A runtime that has not answered by then is answered
 *    for by the scheduler, with {@link timedOut} and no output, so every accepted request gets
 *    an answer whatever a runtime does. Before a sandbox took the run, the wait is bounded by
 *    T + 2 s plus the start budget (20 s), answered {@link notStarted}: the code never ran.
 *
 * The HTTP client of the platform gives up after 30 s: the longest rung for the default
 * 5 s evaluator timeout ends well before it.
 *
 * @module
 */

/** Every status a run can end with, as reported in `metadata.status`. */
export const RUN_STATUSES = [
  "success",
  "error",
  "timeout",
  "memory_limit",
  "output_limit",
  "crashed",
] as const;

/** How a run ended, as reported in `metadata.status`. */
export type RunStatus = typeof RUN_STATUSES[number];

/** The result of a run that was started, whatever the code did. */
export interface RunOutcome {
  /** Captured stdout, capped, with return-value markers removed. */
  stdout: string;
  /** Captured stderr, capped. */
  stderr: string;
  /** Resolved return value (see `resolveRetVal` in ret_val.ts). */
  retVal: string;
  /** How the run ended. */
  status: RunStatus;
  /** Process-style exit code; see {@link EXIT_CODES}. */
  exitCode: number;
  /** Execution time in whole milliseconds (excludes queueing). */
  durationMs: number;
  /** True when stdout or stderr hit the output cap. */
  truncated: boolean;
  /** Id of the sandbox that ran the code; empty when none did. */
  instanceId: string;
  /**
   * One-line human message for `timeout`, `memory_limit`, `output_limit` and
   * `crashed`; `undefined` otherwise (uncaught user exceptions are not errors of the service).
   */
  error?: string;
}

/** The exit codes a run reports, as a shell would for the same ending. */
export const EXIT_CODES = {
  /** The code finished normally. */
  success: 0,
  /** An uncaught exception (an explicit `exit(n)` reports `n`). */
  uncaught: 1,
  /** Stopped at its timeout, as `timeout(1)` reports. */
  timeout: 124,
  /** Killed (128 + SIGKILL): memory or output limit, or the sandbox died. */
  killed: 137,
  /** No process of the run exists to report one: it never started, or was answered without. */
  none: -1,
} as const;

/** What a run produced before it ended; every field but the duration defaults to empty. */
export interface OutcomeParts {
  /** Stdout written until the end. */
  stdout?: string;
  /** Stderr written until the end. */
  stderr?: string;
  /** The return value, when one was resolved. */
  retVal?: string;
  /** Execution time, ms (rounded here). */
  durationMs: number;
  /** The sandbox that ran the code. */
  instanceId?: string;
  /** True when stdout or stderr hit the output cap. */
  truncated?: boolean;
  /** Overrides the status's conventional exit code (e.g. a signal's own code). */
  exitCode?: number;
}

/** The limits a message names when a layer did not word its own. */
export interface OutcomeLimits {
  /** The run's timeout, ms. */
  timeoutMs: number;
  /** Memory budget of one sandbox, MiB. */
  memoryLimitMb: number;
  /** Cap on stdout and on stderr, bytes. */
  maxOutputBytes: number;
}

/** The message of a run stopped at its timeout. */
export function timeoutMessage(timeoutMs: number): string {
  return `execution timed out after ${timeoutMs} ms`;
}

/** The message of a run stopped for exceeding its memory budget. */
export function memoryLimitMessage(limitMb: number): string {
  return `memory limit of ${limitMb} MiB exceeded`;
}

/** The message of a run stopped for printing more than the cap. */
export function outputLimitMessage(limitBytes: number): string {
  return `output limit of ${limitBytes} bytes exceeded`;
}

/** The message of a run whose sandbox died; `reason` says how (a signal, an exit code, …). */
export function crashedMessage(reason: string): string {
  return `sandbox crashed: ${reason}`;
}

/** A run that ended by itself: `success` when `exitCode` is 0, else `error`. */
export function finished(exitCode: number, parts: OutcomeParts): RunOutcome {
  return build(exitCode === 0 ? "success" : "error", undefined, { ...parts, exitCode });
}

/** A run stopped at its timeout; what it printed until then is kept. */
export function timedOut(timeoutMs: number, parts: OutcomeParts): RunOutcome {
  return build("timeout", timeoutMessage(timeoutMs), parts);
}

/** A run stopped for exceeding its memory budget. */
export function memoryExceeded(limitMb: number, parts: OutcomeParts): RunOutcome {
  return build("memory_limit", memoryLimitMessage(limitMb), parts);
}

/** A run stopped for printing more than the output cap (the stop-at-cap policy). */
export function outputExceeded(limitBytes: number, parts: OutcomeParts): RunOutcome {
  return build("output_limit", outputLimitMessage(limitBytes), { ...parts, truncated: true });
}

/** A run whose sandbox died for another reason while it ran. */
export function crashed(reason: string, parts: OutcomeParts): RunOutcome {
  return build("crashed", crashedMessage(reason), parts);
}

/** A run that no sandbox took within `waitedMs`: answered without running the code. */
export function notStarted(waitedMs: number): RunOutcome {
  return build(
    "timeout",
    `no sandbox became free within ${waitedMs} ms; the code did not run`,
    { durationMs: 0, exitCode: EXIT_CODES.none },
  );
}

/** A run whose sandbox could not be started, after the retries its scheduler allows. */
export function startFailed(reason: string, durationMs: number): RunOutcome {
  return build("crashed", `sandbox failed to start: ${reason}`, {
    durationMs,
    exitCode: EXIT_CODES.none,
  });
}

/** A run its runtime failed to answer properly (a bug, not anything the code did). */
export function runtimeFailed(reason: string, durationMs: number): RunOutcome {
  return build("crashed", `sandbox failed: ${reason}`, {
    durationMs,
    exitCode: EXIT_CODES.none,
  });
}

/**
 * The top-level `error` of a run's answer: empty for `success` and `error`, else the outcome's
 * message on one line, or the status's own message when the layer that ended it gave none.
 */
export function outcomeError(outcome: RunOutcome, limits: OutcomeLimits): string {
  switch (outcome.status) {
    case "success":
    case "error":
      return "";
    case "timeout":
      return oneLine(outcome.error || timeoutMessage(limits.timeoutMs));
    case "memory_limit":
      return oneLine(outcome.error || memoryLimitMessage(limits.memoryLimitMb));
    case "output_limit":
      return oneLine(outcome.error || outputLimitMessage(limits.maxOutputBytes));
    case "crashed":
      return oneLine(outcome.error || crashedMessage("no reason was reported"));
  }
}

/** `text` with each line break (and the blanks around it) folded into one space. */
export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}

const CONVENTIONAL_EXIT: Record<RunStatus, number> = {
  success: EXIT_CODES.success,
  error: EXIT_CODES.uncaught,
  timeout: EXIT_CODES.timeout,
  memory_limit: EXIT_CODES.killed,
  output_limit: EXIT_CODES.killed,
  crashed: EXIT_CODES.killed,
};

function build(status: RunStatus, error: string | undefined, parts: OutcomeParts): RunOutcome {
  const outcome: RunOutcome = {
    stdout: parts.stdout ?? "",
    stderr: parts.stderr ?? "",
    retVal: parts.retVal ?? "",
    status,
    exitCode: parts.exitCode ?? CONVENTIONAL_EXIT[status],
    durationMs: Math.max(0, Math.round(parts.durationMs)),
    truncated: parts.truncated ?? false,
    instanceId: parts.instanceId ?? "",
  };
  if (error !== undefined) outcome.error = error;
  return outcome;
}
