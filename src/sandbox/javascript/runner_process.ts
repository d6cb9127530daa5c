/**
 * Host side of one JS runner process: speaks the frame protocol over the runner's connection,
 * supervises one run at a time (timeout, output cap, death) and ends the runner when anything
 * goes wrong. Bytes from the runner are never trusted, and how a run ended is decided from what
 * the host saw (its timer, the output it counted, how the kernel ended the process), never
 * from what the runner says of itself.
 *
 * @module
 */

import { isStopped, procStat } from "../proc_stat.ts";
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
import { encodeFrame, FrameDecoder, parseRunnerFrame, type RunnerFrame } from "./protocol.ts";

/** What the host needs to supervise runners. */
export interface RunnerSupervision {
  /** Cap on each of stdout and stderr (and on a return value), in UTF-8 bytes. */
  maxOutputBytes: number;
  /** Past the cap: keep head and tail (`truncate`) or stop the run (`stop`). */
  outputPolicy: OutputPolicy;
  /** The memory budget, for the `memory_limit` message. */
  memoryLimitMb: number;
  /** Names of ECMAScript's globals, sent to the runner at boot. */
  builtins: readonly string[];
  /** Longest a boot may take, in ms (default 10 s). */
  bootTimeoutMs?: number;
}

/** One run as the runner sees it. */
export interface RunnerJob {
  /** JavaScript function body. */
  code: string;
  /** File name for stack traces. */
  file: string;
  /** `input` as JSON text, if any. */
  input?: string;
  /** Wall-clock budget in ms. */
  timeoutMs: number;
  /** Ends the run early, as its timeout would (the client went away). */
  signal?: AbortSignal;
}

/** The outcome of a run and whether the runner may serve another. */
export interface RunnerResult {
  /** What the run produced. */
  outcome: RunOutcome;
  /** True when the runner is idle and clean: it may serve its tenant's next run. */
  reusable: boolean;
}

/** Time a stopped run's runner has to send what the run printed before it is killed. */
const STOP_GRACE_MS = 50;
/**
 * Signals a runner dies of when memory cannot be had: V8 aborts (SIGTRAP, SIGABRT) when a heap
 * cannot grow, and faults (SIGSEGV, SIGBUS) when a mapping it needs is refused past the data
 * rlimit. Code in a runner has no way to send itself a signal.
 */
const MEMORY_DEATHS = new Set([5, 6, 7, 11]);

/**
 * When an idle runner's CPU is looked at after its run (ms after it), and how much of that
 * time it may have spent on a core (V8 finishes compiling and collecting for a moment after a
 * run). Code a run left behind that keeps going (a loop over async calls, which no timer
 * tracks) shows as a busy idle runner, which is then ended.
 */
const IDLE_CHECKS_MS = [250, 1_000, 4_000, 15_000];
const IDLE_BUSY_SHARE = 0.5;

let runnerCounter = 0;

interface ActiveRun {
  id: number;
  job: RunnerJob;
  startedAt: number;
  stdout: OutputCapture;
  stderr: OutputCapture;
  acked: boolean;
  timer?: ReturnType<typeof setTimeout>;
  resolve: (result: RunnerResult) => void;
  reject: (error: SandboxStartError) => void;
  stopped?: () => void;
}

/** A runner process in its jail; made by {@link startRunner}. */
export class JsRunner implements Sandbox {
  /** Unique id, reported as the instance id. */
  readonly id: string;
  /** Settles once the process is gone and its slot is free. */
  readonly exited: Promise<SandboxExit>;
  /** The runner's pid. */
  readonly pid: number;
  /** Runs handed to this runner so far. */
  runs = 0;
  #process: JailedProcess;
  #options: RunnerSupervision;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #ready = Promise.withResolvers<void>();
  #dead = false;
  #active: ActiveRun | undefined;
  #nextRunId = 1;
  #idleWatch: ReturnType<typeof setTimeout> | undefined;

  constructor(process: JailedProcess, options: RunnerSupervision) {
    this.id = `js-${Deno.pid}-${++runnerCounter}`;
    this.pid = process.pid;
    this.#process = process;
    this.#options = options;
    this.#writer = process.conn.writable.getWriter();
    this.#writer.closed.catch(() => {});
    this.#ready.promise.catch(() => {});
    this.exited = process.exit.then((exit) => {
      this.#dead = true;
      this.#onExit(exit);
      return exit;
    });
    this.#readFrames();
  }

  /** Sends the boot frame and waits for the runner's `ready`. */
  async boot(): Promise<void> {
    this.#write({ t: "config", builtins: this.#options.builtins });
    const ms = this.#options.bootTimeoutMs ?? 10_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`runner boot exceeded ${ms} ms`)), ms);
    });
    try {
      await Promise.race([this.#ready.promise, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends the runner and everything in its jail. Idempotent. */
  kill(): void {
    if (this.#dead) return;
    this.#dead = true;
    this.#process.kill();
  }

  /** Asks the runner to boot its worker for later runs while it waits. */
  prepare(): void {
    if (this.#dead || this.#active) return;
    // The boot keeps a core busy while the runner is idle: the idle watch waits for its end
    // (or gives up on it after the boot timeout), then starts over from there.
    clearTimeout(this.#idleWatch);
    this.#idleWatch = setTimeout(() => this.kill(), this.#options.bootTimeoutMs ?? 10_000);
    Deno.unrefTimer(this.#idleWatch);
    this.#write({ t: "prepare" });
  }

  /**
   * Runs one job. Rejects with {@link SandboxStartError} only when the runner could not be
   * handed the code; everything after that is an outcome.
   */
  run(job: RunnerJob): Promise<RunnerResult> {
    if (this.#dead || this.#active) {
      return Promise.reject(new SandboxStartError(`runner ${this.id} is not available`));
    }
    if (isStopped(this.pid)) {
      // Stopped by a signal while it waited: it would sit on the run until its timeout.
      this.kill();
      return Promise.reject(new SandboxStartError(`runner ${this.id} is stopped`));
    }
    this.runs++;
    clearTimeout(this.#idleWatch);
    const { promise, resolve, reject } = Promise.withResolvers<RunnerResult>();
    const limit = this.#options.maxOutputBytes;
    const active: ActiveRun = {
      id: this.#nextRunId++,
      job,
      startedAt: performance.now(),
      stdout: new OutputCapture(limit),
      stderr: new OutputCapture(limit),
      acked: false,
      resolve,
      reject,
    };
    this.#active = active;
    // Armed before the write, so even a runner that stops reading cannot stall the answer.
    active.timer = setTimeout(() => this.#timeout(active), job.timeoutMs);
    if (job.signal?.aborted) queueMicrotask(() => this.#timeout(active));
    job.signal?.addEventListener("abort", () => this.#timeout(active), { once: true });
    const frame: Record<string, unknown> = {
      t: "run",
      id: active.id,
      code: job.code,
      file: job.file,
    };
    if (job.input !== undefined) frame.input = job.input;
    this.#write(frame);
    return promise;
  }

  /** Ends the runner if it is stopped, or keeps a core busy, while it waits for a run (see IDLE_CHECKS_MS). */
  #watchIdle(): void {
    // It replaces whatever watched before (the prepare frame's boot timeout among them).
    clearTimeout(this.#idleWatch);
    let since = performance.now();
    let cpu = cpuMs(this.pid);
    let check = 0;
    const next = () => {
      const delay = IDLE_CHECKS_MS[Math.min(check++, IDLE_CHECKS_MS.length - 1)];
      this.#idleWatch = setTimeout(() => {
        if (this.#dead || this.#active) return;
        if (isStopped(this.pid)) {
          this.kill();
          return;
        }
        const now = performance.now();
        const used = cpuMs(this.pid);
        if (used - cpu > (now - since) * IDLE_BUSY_SHARE) {
          this.kill();
          return;
        }
        since = now;
        cpu = used;
        next();
      }, delay);
      Deno.unrefTimer(this.#idleWatch);
    };
    next();
  }

  #write(frame: unknown): void {
    this.#writer.write(encodeFrame(frame)).catch(() => this.#anomaly("the runner stopped reading"));
  }

  async #readFrames(): Promise<void> {
    const decoder = new FrameDecoder();
    try {
      for await (const chunk of this.#process.conn.readable) {
        for (const body of decoder.push(chunk)) this.#onFrame(parseRunnerFrame(body));
        if (this.#dead) break;
      }
    } catch (error) {
      this.#anomaly(`bad frame: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    // The runner closed its end: it is going away.
    this.kill();
  }

  #onFrame(frame: RunnerFrame): void {
    if (frame.t === "ready") {
      this.#ready.resolve();
      return;
    }
    if (frame.t === "prepared") {
      if (!this.#active) this.#watchIdle();
      return;
    }
    const active = this.#active;
    if (!active || active.id !== frame.id) {
      this.#anomaly(`frame for run ${frame.id} outside that run`);
      return;
    }
    if (frame.t === "ack") {
      active.acked = true;
      return;
    }
    if (!active.acked) {
      this.#anomaly(`frame ${frame.t} before the run was acknowledged`);
      return;
    }
    if (frame.t === "out") {
      const capture = frame.fd === 1 ? active.stdout : active.stderr;
      capture.push(frame.data);
      if (capture.exceeded && this.#options.outputPolicy === "stop") this.#outputStop(active);
      return;
    }
    if (frame.t === "stopped") {
      active.stopped?.();
      return;
    }
    const limit = this.#options.maxOutputBytes;
    const oversized = utf8Length(frame.explicit ?? "") > limit ||
      utf8Length(frame.returned ?? "") > limit;
    const parts = this.#parts(active);
    let outcome: RunOutcome;
    if (frame.memory) outcome = memoryExceeded(this.#options.memoryLimitMb, parts);
    else if (oversized) outcome = outputExceeded(limit, { ...parts, exitCode: frame.exitCode });
    else {
      const { retVal, stdout } = resolveRetVal({
        explicit: frame.explicit,
        returned: frame.returned,
        stdout: parts.stdout!,
      });
      outcome = finished(frame.exitCode, { ...parts, stdout, retVal });
    }
    const reusable = !frame.exited && !frame.leftover &&
      (outcome.status === "success" || outcome.status === "error");
    this.#settle(active, outcome, reusable);
    if (!reusable) this.kill();
  }

  #outputStop(active: ActiveRun): void {
    this.kill();
    this.#settle(active, outputExceeded(this.#options.maxOutputBytes, this.#parts(active)), false);
  }

  /**
   * Past the timeout (or once the client went away): take what the run printed (the runner's main thread is never blocked by
   * user code), then kill it.
   */
  #timeout(active: ActiveRun): void {
    if (this.#active !== active) return;
    const answer = () => {
      this.kill();
      this.#settle(active, timedOut(active.job.timeoutMs, this.#parts(active)), false);
    };
    if (!active.acked) {
      answer();
      return;
    }
    const grace = setTimeout(answer, STOP_GRACE_MS);
    active.stopped = () => {
      clearTimeout(grace);
      answer();
    };
    this.#write({ t: "stop", id: active.id });
  }

  #anomaly(reason: string): void {
    this.kill();
    const active = this.#active;
    if (!active) return;
    if (!active.acked) {
      this.#abort(active, `runner ${this.id} failed before taking the run: ${reason}`);
      return;
    }
    this.#settle(active, crashed(reason, this.#parts(active)), false);
  }

  #onExit(exit: SandboxExit): void {
    this.#ready.reject(new Error(`runner exited during boot (${describeExit(exit)})`));
    const active = this.#active;
    if (!active) return;
    if (!active.acked) {
      this.#abort(active, `runner ${this.id} exited before taking the run`);
      return;
    }
    // How the kernel ended it says why: a memory kill in its cgroup, or V8's abort when a heap
    // could not grow. Nothing the runner wrote is taken as evidence.
    const memory = exit.oom || (exit.signal !== undefined && MEMORY_DEATHS.has(exit.signal));
    const parts = this.#parts(active);
    this.#settle(
      active,
      memory ? memoryExceeded(this.#options.memoryLimitMb, parts) : crashed(describeExit(exit), {
        ...parts,
        exitCode: exit.signal !== undefined ? 128 + exit.signal : exit.code,
      }),
      false,
    );
  }

  /** What a run produced so far, for the outcome that ends it. */
  #parts(active: ActiveRun): OutcomeParts {
    return {
      stdout: active.stdout.text(),
      stderr: active.stderr.text(),
      durationMs: performance.now() - active.startedAt,
      instanceId: this.id,
      truncated: active.stdout.exceeded || active.stderr.exceeded,
    };
  }

  #abort(active: ActiveRun, message: string): void {
    if (this.#active !== active) return;
    this.#active = undefined;
    clearTimeout(active.timer);
    active.reject(new SandboxStartError(message));
  }

  #settle(active: ActiveRun, outcome: RunOutcome, reusable: boolean): void {
    if (this.#active !== active) return;
    this.#active = undefined;
    clearTimeout(active.timer);
    if (reusable) this.#watchIdle();
    active.resolve({ outcome, reusable });
  }
}

/** CPU time the process `pid` used so far, all threads, in ms (0 once it is gone). */
function cpuMs(pid: number): number {
  return procStat(pid)?.cpuMs ?? 0;
}

function describeExit(exit: SandboxExit): string {
  return exit.signal !== undefined ? `signal ${exit.signal}` : `exit code ${exit.code}`;
}
