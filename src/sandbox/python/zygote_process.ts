/**
 * Host side of one Python zygote (faas_python/zygote.py): sends it a run's job, collects what
 * the run printed and how it ended, and ends the zygote when it does not keep to the protocol.
 * A zygote serves any tenant: every run is a fresh process it forked ahead of time. Bytes from
 * the zygote are never trusted: frames are bounded and checked, the run's report is parsed
 * defensively, and how the run ended comes from the zygote's account of the process (its wait
 * status, its timer) and from the host's own timer, never from what the run wrote.
 *
 * @module
 */

import { isStopped } from "../proc_stat.ts";
import { OutputCapture, type OutputPolicy, utf8Length } from "../../output.ts";
import {
  crashed,
  finished,
  memoryExceeded,
  type OutcomeParts,
  outputExceeded,
  type RunOutcome,
  timedOut,
} from "../../outcome.ts";
import { resolveRetVal } from "../../ret_val.ts";
import { SandboxStartError } from "../../runtime.ts";
import type { Sandbox } from "../../pool.ts";
import type { JailedProcess, SandboxExit } from "../jail/mod.ts";

/** Frame kinds (see faas_python/frames.py). */
const RUN = 1;
const STOP = 2;
const READY = 10;
const OUT = 11;
const EXIT = 12;
const TIMED_OUT = 1;
const OOM = 2;
const STOPPED = 4;
const HEADER_BYTES = 16;
/** Largest payload a zygote may send in one frame (its pipes hold 1 MiB). */
const MAX_PAYLOAD = 4 * 1024 * 1024;
/**
 * Time past a run's timeout the host waits for the zygote's answer before it steps in (asks it
 * to stop the run), then before it ends the zygote. A loaded host can wake the zygote late;
 * either way the run is answered as a timeout, with what it printed.
 */
const HOST_GRACE_MS = 250;
const STOP_GRACE_MS = 750;

/** What the host needs to supervise zygotes. */
export interface ZygoteSupervision {
  /** Cap on each of stdout and stderr (and on a return value), in UTF-8 bytes. */
  maxOutputBytes: number;
  /** Past the cap: keep head and tail (`truncate`) or stop the run (`stop`). */
  outputPolicy: OutputPolicy;
  /** The memory budget, for the `memory_limit` message. */
  memoryLimitMb: number;
}

/** One job for a zygote. */
export interface ZygoteJob {
  /** `run` executes the code; `validate` only parses it. */
  mode: "run" | "validate";
  /** The user's code. */
  code: string;
  /** `input` as JSON text, if any. */
  input?: string;
  /** Wall-clock budget in ms. */
  timeoutMs: number;
  /** Ends the run early, as its timeout would (the client went away). */
  signal?: AbortSignal;
}

interface ActiveRun {
  id: number;
  job: ZygoteJob;
  startedAt: number;
  stdout: OutputCapture;
  stderr: OutputCapture;
  /** UTF-8 decoders of stdout and stderr: a character may span two frames. */
  decoders: [TextDecoder, TextDecoder];
  report: Uint8Array[];
  reportBytes: number;
  timer?: ReturnType<typeof setTimeout>;
  done: (exit: { status: number; flags: number } | { lost: string } | { overdue: true }) => void;
}

let zygoteCounter = 0;

/** A zygote in its jail; made by {@link startZygote}. */
export class PythonZygote implements Sandbox {
  /** Unique id, reported as the instance id. */
  readonly id: string;
  /** Settles once the zygote is gone and its slot is free. */
  readonly exited: Promise<SandboxExit>;
  #process: JailedProcess;
  #options: ZygoteSupervision;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #spare = Promise.withResolvers<void>();
  #dead = false;
  #active: ActiveRun | undefined;
  #nextRunId = 1;

  constructor(process: JailedProcess, options: ZygoteSupervision) {
    this.id = `python-${Deno.pid}-${++zygoteCounter}`;
    this.#process = process;
    this.#options = options;
    this.#writer = process.conn.writable.getWriter();
    this.#writer.closed.catch(() => {});
    this.#spare.promise.catch(() => {});
    this.exited = process.exit.then((exit) => {
      this.#dead = true;
      this.#spare.reject(new SandboxStartError(`zygote ${this.id} is gone`));
      this.#active?.done({ lost: describeExit(exit) });
      return exit;
    });
    this.#readFrames();
  }

  /** Resolves once the zygote has a run child forked and waiting. */
  ready(): Promise<void> {
    return this.#spare.promise;
  }

  /** Ends the zygote and every process in its jail. Idempotent. */
  kill(): void {
    if (this.#dead) return;
    this.#dead = true;
    this.#process.kill();
  }

  /**
   * Runs one job: its outcome and the run's own report (a validation's verdict is there).
   * Rejects with {@link SandboxStartError} only when the job could not be handed over.
   */
  async run(job: ZygoteJob): Promise<{ outcome: RunOutcome; report?: Report }> {
    if (this.#dead || this.#active) {
      throw new SandboxStartError(`zygote ${this.id} is not available`);
    }
    if (isStopped(this.#process.pid)) {
      // Stopped by a signal while it waited: it would sit on the run until its timeout.
      this.kill();
      throw new SandboxStartError(`zygote ${this.id} is stopped`);
    }
    await this.#spare.promise;
    this.#spare = Promise.withResolvers<void>();
    this.#spare.promise.catch(() => {});
    const id = this.#nextRunId++;
    const limit = this.#options.maxOutputBytes;
    const { promise, resolve } = Promise.withResolvers<{ outcome: RunOutcome; report?: Report }>();
    const active: ActiveRun = {
      id,
      job,
      startedAt: performance.now(),
      stdout: new OutputCapture(limit),
      stderr: new OutputCapture(limit),
      decoders: [new TextDecoder(), new TextDecoder()],
      report: [],
      reportBytes: 0,
      done: (exit) => {
        if (this.#active !== active) return;
        this.#active = undefined;
        clearTimeout(active.timer);
        const report = "status" in exit
          ? parseReport(active.report, active.reportBytes)
          : undefined;
        resolve({ outcome: this.#outcome(active, exit, report), report });
      },
    };
    this.#active = active;
    // The zygote ends the run at its timeout; this backstop covers a zygote that does not.
    active.timer = setTimeout(() => {
      this.#writer.write(header(STOP, id, 0, 0)).catch(() => {});
      active.timer = setTimeout(() => {
        this.kill();
        active.done({ overdue: true });
      }, STOP_GRACE_MS);
    }, job.timeoutMs + HOST_GRACE_MS);
    const payload = new TextEncoder().encode(JSON.stringify({
      mode: job.mode,
      code: job.code,
      input: job.input ?? null,
      timeout_ms: job.timeoutMs,
    }));
    // One write: the zygote wakes once, with the whole job there to splice.
    const frame = new Uint8Array(HEADER_BYTES + payload.length);
    frame.set(header(RUN, id, job.timeoutMs, payload.length), 0);
    frame.set(payload, HEADER_BYTES);
    try {
      await this.#writer.write(frame);
    } catch {
      if (this.#active === active) {
        this.#active = undefined;
        clearTimeout(active.timer);
        this.kill();
        throw new SandboxStartError(`zygote ${this.id} did not accept the run`);
      }
    }
    // Registered once the whole job is written, so a stop frame never lands inside it.
    const stop = () => {
      if (this.#active === active) this.#writer.write(header(STOP, id, 0, 0)).catch(() => {});
    };
    if (job.signal?.aborted) stop();
    else job.signal?.addEventListener("abort", stop, { once: true });
    return promise;
  }

  async #readFrames(): Promise<void> {
    let buffer: Uint8Array = new Uint8Array(0);
    try {
      for await (const chunk of this.#process.conn.readable) {
        buffer = buffer.length === 0 ? chunk : concat(buffer, chunk);
        let offset = 0;
        while (buffer.length - offset >= HEADER_BYTES) {
          const view = new DataView(buffer.buffer, buffer.byteOffset + offset, HEADER_BYTES);
          const kind = view.getUint8(0);
          const stream = view.getUint8(1);
          const flags = view.getUint16(2);
          const run = view.getUint32(4);
          const argument = view.getUint32(8);
          const length = view.getUint32(12);
          if (length > MAX_PAYLOAD) throw new Error(`a frame of ${length} bytes`);
          if (buffer.length - offset - HEADER_BYTES < length) break;
          const payload = buffer.subarray(offset + HEADER_BYTES, offset + HEADER_BYTES + length);
          offset += HEADER_BYTES + length;
          this.#onFrame(kind, { stream, flags, run, argument, payload });
        }
        buffer = buffer.slice(offset);
      }
    } catch {
      // a broken protocol: the zygote goes
    }
    this.kill();
  }

  #onFrame(
    kind: number,
    frame: { stream: number; flags: number; run: number; argument: number; payload: Uint8Array },
  ): void {
    if (kind === READY) {
      this.#spare.resolve();
      return;
    }
    const active = this.#active;
    if (!active || active.id !== frame.run) return;
    if (kind === OUT) {
      if (frame.stream === 3) {
        // The report: JSON of a few fields, bounded by the output cap (it holds the return value).
        active.reportBytes += frame.payload.length;
        if (active.reportBytes <= 2 * this.#options.maxOutputBytes + 65_536) {
          active.report.push(frame.payload.slice());
        }
        return;
      }
      const capture = frame.stream === 1 ? active.stdout : active.stderr;
      const decoder = active.decoders[frame.stream === 1 ? 0 : 1];
      capture.push(decoder.decode(frame.payload, { stream: true }));
      if (capture.exceeded && this.#options.outputPolicy === "stop") {
        this.#writer.write(header(STOP, active.id, 0, 0)).catch(() => this.kill());
      }
      return;
    }
    if (kind === EXIT) active.done({ status: frame.argument, flags: frame.flags });
  }

  #outcome(
    active: ActiveRun,
    exit: { status: number; flags: number } | { lost: string } | { overdue: true },
    report: Report | undefined,
  ): RunOutcome {
    active.stdout.push(active.decoders[0].decode());
    active.stderr.push(active.decoders[1].decode());
    const parts: OutcomeParts = {
      stdout: active.stdout.text(),
      stderr: active.stderr.text(),
      durationMs: performance.now() - active.startedAt,
      instanceId: this.id,
      truncated: active.stdout.exceeded || active.stderr.exceeded,
    };
    const overdue = parts.durationMs >= active.job.timeoutMs;
    if ("overdue" in exit || ("lost" in exit && overdue)) {
      return timedOut(active.job.timeoutMs, parts);
    }
    if ("lost" in exit) return crashed(exit.lost, parts);
    const wait = exit.status;
    // Stopped by the host's backstop past the timeout: that is a timeout too.
    const flags = exit.flags & STOPPED && overdue ? exit.flags | TIMED_OUT : exit.flags;
    const signal = wait & 0x7f;
    const exitCode = signal ? 128 + signal : (wait >> 8) & 0xff;
    const limit = this.#options.maxOutputBytes;
    if (flags & TIMED_OUT) return timedOut(active.job.timeoutMs, parts);
    if (
      this.#options.outputPolicy === "stop" && (active.stdout.exceeded || active.stderr.exceeded)
    ) {
      return outputExceeded(limit, parts);
    }
    if ((flags & OOM) || report?.kind === "memory") {
      return memoryExceeded(this.#options.memoryLimitMb, parts);
    }
    if (signal || (flags & STOPPED)) {
      return crashed(`the run's process died from ${signalName(signal || 9)}`, {
        ...parts,
        exitCode,
      });
    }
    const explicit = typeof report?.explicit === "string" ? report.explicit : undefined;
    const returned = typeof report?.returned === "string" ? report.returned : undefined;
    if (utf8Length(explicit ?? "") > limit || utf8Length(returned ?? "") > limit) {
      return outputExceeded(limit, { ...parts, exitCode });
    }
    const { retVal, stdout } = resolveRetVal({ explicit, returned, stdout: parts.stdout! });
    const code = typeof report?.exit_code === "number" ? report.exit_code : exitCode;
    return finished(code, { ...parts, stdout, retVal });
  }
}

/** What a run child reports of itself (faas_python/executor.py, validation.py). */
export interface Report {
  kind?: unknown;
  exit_code?: unknown;
  explicit?: unknown;
  returned?: unknown;
  ok?: unknown;
  message?: unknown;
  line?: unknown;
  column?: unknown;
}

/** The run's report, or undefined when it is missing, oversized or not JSON of an object. */
function parseReport(parts: Uint8Array[], bytes: number): Report | undefined {
  if (parts.length === 0 || parts.reduce((n, p) => n + p.length, 0) !== bytes) return undefined;
  try {
    const value = JSON.parse(new TextDecoder().decode(concatAll(parts)));
    return typeof value === "object" && value !== null && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

function header(kind: number, run: number, argument: number, length: number): Uint8Array {
  const bytes = new Uint8Array(HEADER_BYTES);
  const view = new DataView(bytes.buffer);
  view.setUint8(0, kind);
  view.setUint32(4, run);
  view.setUint32(8, argument);
  view.setUint32(12, length);
  return bytes;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a, 0);
  joined.set(b, a.length);
  return joined;
}

function concatAll(parts: Uint8Array[]): Uint8Array {
  return parts.length === 1 ? parts[0] : parts.reduce(concat);
}

function describeExit(exit: SandboxExit): string {
  return exit.signal !== undefined ? signalName(exit.signal) : `exit code ${exit.code}`;
}

/** Names of the signals a run usually dies from (x86_64 and aarch64 numbers). */
const SIGNAL_NAMES: Record<number, string> = {
  4: "SIGILL",
  6: "SIGABRT",
  7: "SIGBUS",
  8: "SIGFPE",
  9: "SIGKILL",
  11: "SIGSEGV",
  13: "SIGPIPE",
  15: "SIGTERM",
  24: "SIGXCPU",
  25: "SIGXFSZ",
  31: "SIGSYS",
};

function signalName(signal: number): string {
  const name = SIGNAL_NAMES[signal];
  return name ? `signal ${signal} (${name})` : `signal ${signal}`;
}
