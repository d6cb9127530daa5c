/**
 * Host side of one JS runner process: starts it, speaks the frame protocol over its unix
 * socket, supervises one run at a time (timeout, output cap, death) and kills its whole
 * process group when anything goes wrong. Bytes from the runner are never trusted.
 *
 * @module
 */

import { resolveRetVal } from "../../ret_val.ts";
import { type RunOutcome, type RunStatus, SandboxStartError } from "../../runtime.ts";
import type { Sandbox } from "../../pool.ts";
import {
  encodeFrame,
  FrameDecoder,
  parseRunnerFrame,
  type RunFrame,
  type RunnerFrame,
} from "./protocol.ts";
import { runnerCommandLine, type RunnerLaunch, type RunnerLayers } from "./runner_command.ts";

/** How runners are started. */
export interface RunnerOptions {
  /** V8 heap budget per isolate, in MiB. */
  memoryLimitMb: number;
  /** RLIMIT_DATA of the process, in bytes. */
  dataLimitBytes: number;
  /** Cap on each of stdout and stderr, in bytes. */
  maxOutputBytes: number;
  /** Uid/gid to run as when the uid layer is active. */
  uid: number;
  /** Confinement layers. */
  layers: RunnerLayers;
  /** Run user code on the runner's thread instead of a worker (see runner_command.ts). */
  inline?: boolean;
  /** How the runner program is started (see runner_command.ts); default `"deno"`. */
  launch?: RunnerLaunch;
  /** Deno cache directory of the runners; defaults to a private one per runner. */
  denoDir?: string;
  /** Longest a boot may take before it counts as failed, in ms. */
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
  /** The runner will serve the tenant's later runs too (see {@link RunFrame.keep}). */
  keep?: boolean;
}

/** The outcome of a run plus whether the runner may serve another run. */
export interface RunnerResult {
  /** What the run produced. */
  outcome: RunOutcome;
  /** Settles once the runner is known idle (true) or unusable (false). */
  reusable: Promise<boolean>;
}

const STDERR_KEEP_BYTES = 16 * 1024;
const IDLE_GRACE_MS = 250;
const KILL_CODE = 137;
const TIMEOUT_CODE = 124;

let runnerCounter = 0;

interface ActiveRun {
  id: number;
  startedAt: number;
  stdout: string[];
  stderr: string[];
  bytes: [number, number];
  truncated: boolean;
  resolve: (outcome: RunOutcome) => void;
  /** Ends the run as a start failure: only before the runner acknowledged it. */
  reject: (error: SandboxStartError) => void;
  /** True once the runner acknowledged the run (its code may have started from then on). */
  acked: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  job: RunnerJob;
}

/** A started runner process; created by {@link startRunner}. */
export class JsRunner implements Sandbox {
  /** Unique id, reported as the instance id. */
  readonly id: string;
  /** Settles when the process is gone. */
  readonly exited: Promise<Deno.CommandStatus>;
  #child: Deno.ChildProcess;
  #conn: Deno.UnixConn | undefined;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #options: RunnerOptions;
  #dead = false;
  #stderrTail = "";
  #stderrDone: Promise<void>;
  #ready = Promise.withResolvers<void>();
  #active: ActiveRun | undefined;
  #idleWaiter: { id: number; resolve: (idle: boolean) => void } | undefined;
  #nextRunId = 1;

  /** Supervises `child`, a runner started in the private directory `init.dir`. */
  constructor(
    child: Deno.ChildProcess,
    init: { id: string; dir: string; options: RunnerOptions },
  ) {
    this.id = init.id;
    this.#child = child;
    this.#options = init.options;
    this.#stderrDone = this.#readStderr();
    this.#ready.promise.catch(() => {});
    this.exited = child.status.then(async (status) => {
      this.#dead = true;
      try {
        this.#conn?.close();
      } catch {
        // already closed
      }
      await Deno.remove(init.dir, { recursive: true }).catch(() => {});
      this.#onExit(status);
      return status;
    });
  }

  /** Ends the process group at once. Idempotent. */
  kill(): void {
    if (this.#dead) return;
    try {
      Deno.kill(-this.#child.pid, "SIGKILL");
    } catch {
      // No such group yet: `setsid` has not run, so the process has no children either.
      try {
        Deno.kill(this.#child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }

  /** Last bytes the runner wrote to stderr (diagnostics only). */
  diagnostics(): string {
    return this.#stderrTail;
  }

  /** Attaches the accepted connection and waits for the runner's `ready` frame. */
  async attach(conn: Deno.UnixConn): Promise<void> {
    this.#conn = conn;
    this.#writer = conn.writable.getWriter();
    this.#readFrames(conn);
    await this.#ready.promise;
  }

  /**
   * Runs one job. Rejects with {@link SandboxStartError} only when the runner could not be
   * handed the code; everything after that is an outcome.
   */
  async run(job: RunnerJob): Promise<RunnerResult> {
    if (this.#dead || this.#active || !this.#writer) {
      throw new SandboxStartError(`runner ${this.id} is not available`);
    }
    const id = this.#nextRunId++;
    const frame: RunFrame = {
      t: "run",
      id,
      code: job.code,
      file: job.file,
      maxOutputBytes: this.#options.maxOutputBytes,
    };
    if (job.input !== undefined) frame.input = job.input;
    if (job.keep) frame.keep = true;
    const { promise, resolve, reject } = Promise.withResolvers<RunOutcome>();
    const idle = Promise.withResolvers<boolean>();
    this.#idleWaiter = { id, resolve: idle.resolve };
    const active: ActiveRun = {
      id,
      startedAt: performance.now(),
      stdout: [],
      stderr: [],
      bytes: [0, 0],
      truncated: false,
      resolve,
      reject,
      acked: false,
      timer: undefined,
      job,
    };
    this.#active = active;
    // Armed before the write, so even a runner that stops reading cannot stall the answer.
    active.timer = setTimeout(() => this.#timeout(active), job.timeoutMs);
    try {
      await this.#writer.write(encodeFrame(frame));
    } catch (error) {
      if (this.#active === active) {
        // The runner was gone before it could read the code: nothing ran.
        this.#active = undefined;
        clearTimeout(active.timer);
        this.kill();
        throw new SandboxStartError(`runner ${this.id} did not accept the run`, { cause: error });
      }
    }
    const outcome = await promise;
    let reusable: Promise<boolean>;
    if (outcome.status === "success" || outcome.status === "error") {
      reusable = this.#waitIdle(idle.promise);
    } else {
      this.#idleWaiter = undefined;
      reusable = Promise.resolve(false);
    }
    return { outcome, reusable };
  }

  async #waitIdle(idle: Promise<boolean>): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), IDLE_GRACE_MS);
    });
    const ok = await Promise.race([idle, late]);
    clearTimeout(timer);
    this.#idleWaiter = undefined;
    if (!ok) this.kill();
    return ok && !this.#dead;
  }

  async #readFrames(conn: Deno.UnixConn): Promise<void> {
    const decoder = new FrameDecoder();
    try {
      for await (const chunk of conn.readable) {
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
    if (frame.t === "idle") {
      if (this.#idleWaiter?.id === frame.id) this.#idleWaiter.resolve(true);
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
    if (frame.t === "refused") {
      // No code of this run started; an earlier run of the tenant changed the realm.
      this.kill();
      this.#abort(active, `runner ${this.id} refused the run: an earlier run changed its realm`);
      return;
    }
    if (frame.t === "out") {
      this.#output(active, frame.fd, frame.data);
      return;
    }
    const cap = this.#options.maxOutputBytes;
    // The cap is in UTF-8 bytes, as for stdout and stderr (a UTF-16 length undercounts).
    const oversized = frame.oversized || utf8Length(frame.explicit ?? "") > cap ||
      utf8Length(frame.returned ?? "") > cap;
    const status: RunStatus = frame.memory
      ? "memory_limit"
      : oversized
      ? "output_limit"
      : frame.exitCode === 0
      ? "success"
      : "error";
    if (frame.exited) this.#idleWaiter?.resolve(false);
    const stdout = active.stdout.join("");
    const resolved = status === "success" || status === "error"
      ? resolveRetVal({ explicit: frame.explicit, returned: frame.returned, stdout })
      : { retVal: "", stdout };
    this.#settle(active, {
      status,
      exitCode: frame.exitCode,
      stdout: resolved.stdout,
      retVal: resolved.retVal,
      truncated: active.truncated || status === "output_limit",
      error: status === "memory_limit"
        ? this.#memoryMessage()
        : status === "output_limit"
        ? this.#outputMessage()
        : undefined,
    });
  }

  #output(active: ActiveRun, fd: 1 | 2, data: string): void {
    const cap = this.#options.maxOutputBytes;
    const index = fd - 1;
    const size = utf8Length(data);
    const room = cap - active.bytes[index];
    const parts = fd === 1 ? active.stdout : active.stderr;
    if (size <= room) {
      active.bytes[index] += size;
      parts.push(data);
      return;
    }
    parts.push(truncateUtf8(data, room));
    active.bytes[index] = cap;
    active.truncated = true;
    this.kill();
    this.#settle(active, {
      status: "output_limit",
      exitCode: KILL_CODE,
      stdout: active.stdout.join(""),
      retVal: "",
      truncated: true,
      error: this.#outputMessage(),
    });
  }

  #timeout(active: ActiveRun): void {
    if (this.#active !== active) return;
    this.kill();
    this.#settle(active, {
      status: "timeout",
      exitCode: TIMEOUT_CODE,
      stdout: active.stdout.join(""),
      retVal: "",
      truncated: active.truncated,
      error: `execution timed out after ${active.job.timeoutMs} ms`,
    });
  }

  #anomaly(reason: string): void {
    this.kill();
    const active = this.#active;
    if (!active) return;
    if (!active.acked) {
      this.#abort(active, `runner ${this.id} failed before taking the run: ${reason}`);
      return;
    }
    this.#settle(active, {
      status: "crashed",
      exitCode: KILL_CODE,
      stdout: active.stdout.join(""),
      retVal: "",
      truncated: active.truncated,
      error: `sandbox crashed: ${reason}`,
    });
  }

  async #onExit(status: Deno.CommandStatus): Promise<void> {
    this.#ready.reject(new Error(this.#bootFailure(status)));
    this.#idleWaiter?.resolve(false);
    const active = this.#active;
    if (!active) return;
    // The process is gone; give its stderr a moment to drain to tell OOM from a crash.
    if (!active.acked) {
      this.#abort(active, `runner ${this.id} exited before taking the run`);
      return;
    }
    await Promise.race([this.#stderrDone, new Promise((r) => setTimeout(r, 50))]);
    if (this.#active !== active) return;
    const oom =
      /out of memory|Array buffer allocation failed|memory allocation of \d+ bytes failed/i
        .test(this.#stderrTail);
    const exitCode = status.signal ? 128 + signalNumber(status.signal) : status.code;
    this.#settle(active, {
      status: oom ? "memory_limit" : "crashed",
      exitCode: oom ? KILL_CODE : exitCode,
      stdout: active.stdout.join(""),
      retVal: "",
      truncated: active.truncated,
      error: oom
        ? this.#memoryMessage()
        : `sandbox crashed (${status.signal ?? `exit code ${status.code}`})`,
    });
  }

  #bootFailure(status: Deno.CommandStatus): string {
    const how = status.signal ?? `exit code ${status.code}`;
    const tail = this.#stderrTail.trim().split("\n").slice(-3).join(" | ");
    return `runner exited during boot (${how})${tail ? `: ${tail}` : ""}`;
  }

  #memoryMessage(): string {
    return `memory limit of ${this.#options.memoryLimitMb} MiB exceeded`;
  }

  #outputMessage(): string {
    return `output limit of ${this.#options.maxOutputBytes} bytes exceeded`;
  }

  #abort(active: ActiveRun, message: string): void {
    if (this.#active !== active) return;
    this.#active = undefined;
    clearTimeout(active.timer);
    active.reject(new SandboxStartError(message));
  }

  #settle(
    active: ActiveRun,
    result: Omit<RunOutcome, "stderr" | "durationMs" | "instanceId">,
  ): void {
    if (this.#active !== active) return;
    this.#active = undefined;
    clearTimeout(active.timer);
    active.resolve({
      ...result,
      stderr: active.stderr.join(""),
      durationMs: Math.round(performance.now() - active.startedAt),
      instanceId: this.id,
    });
  }

  async #readStderr(): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of this.#child.stderr) {
        const text = this.#stderrTail + decoder.decode(chunk, { stream: true });
        this.#stderrTail = text.length > STDERR_KEEP_BYTES
          ? text.slice(text.length - STDERR_KEEP_BYTES)
          : text;
      }
    } catch {
      // the process is gone
    }
  }
}

/** Starts a runner and waits until its worker is ready for code. */
export async function startRunner(options: RunnerOptions): Promise<JsRunner> {
  const dir = await Deno.makeTempDir({ prefix: "faas-js-" });
  const socketPath = `${dir}/s`;
  let listener: Deno.UnixListener | undefined;
  let runner: JsRunner | undefined;
  try {
    listener = Deno.listen({ transport: "unix", path: socketPath });
    if (options.layers.uid) {
      await Deno.chown(dir, options.uid, options.uid);
      await Deno.chown(socketPath, options.uid, options.uid);
    }
    const { command, args, env } = runnerCommandLine({
      socketPath,
      memoryLimitMb: options.memoryLimitMb,
      dataLimitBytes: options.dataLimitBytes,
      uid: options.uid,
      layers: options.layers,
      inline: options.inline,
      launch: options.launch,
    });
    const child = new Deno.Command(command, {
      args,
      cwd: dir,
      clearEnv: true,
      // Deno refuses to start without a cache directory; the runner's own is private.
      env: { ...env, DENO_DIR: options.denoDir ?? `${dir}/deno` },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    runner = new JsRunner(child, { id: `js-${Deno.pid}-${++runnerCounter}`, dir, options });
    const bootTimeout = options.bootTimeoutMs ?? 10_000;
    const accepted = listener.accept();
    const conn = await Promise.race([
      accepted,
      runner.exited.then((status) => {
        throw new Error(`runner exited before connecting (${status.signal ?? status.code})`);
      }),
      deadline(bootTimeout),
    ]);
    listener.close();
    listener = undefined;
    await Deno.remove(socketPath).catch(() => {});
    await Promise.race([runner.attach(conn), deadline(bootTimeout)]);
    return runner;
  } catch (error) {
    listener?.close();
    runner?.kill();
    if (!runner) await Deno.remove(dir, { recursive: true }).catch(() => {});
    const detail = runner?.diagnostics().trim().split("\n").slice(-3).join(" | ");
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(detail && !reason.includes(detail) ? `${reason}: ${detail}` : reason);
  }
}

function deadline(ms: number): Promise<never> {
  return new Promise((_, reject) => {
    const timer = setTimeout(() => reject(new Error(`runner boot exceeded ${ms} ms`)), ms);
    Deno.unrefTimer(timer);
  });
}

function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

/** The longest prefix of `text` that fits in `maxBytes` of UTF-8, cut between characters. */
function truncateUtf8(text: string, maxBytes: number): string {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    let size = code < 0x80 ? 1 : code < 0x800 ? 2 : 3;
    let width = 1;
    if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      size = 4;
      width = 2;
    }
    if (bytes + size > maxBytes) return text.slice(0, i);
    bytes += size;
    i += width - 1;
  }
  return text;
}

const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGPIPE: 13,
  SIGTERM: 15,
};

function signalNumber(signal: Deno.Signal): number {
  return SIGNALS[signal] ?? 0;
}
