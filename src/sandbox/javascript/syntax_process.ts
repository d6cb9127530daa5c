/**
 * Host side of one syntax process: starts it, hands it one request at a time with a deadline,
 * and reads its answer defensively. Past the deadline, on an answer too long or malformed, on
 * output nobody asked for, the whole process group is killed; the caller replaces it.
 *
 * @module
 */

import {
  encodeRequest,
  FrameReader,
  type MappedAnswer,
  parseAnswer,
  type PreparedAnswer,
  type RequestContent,
} from "./syntax_protocol.ts";
import { syntaxCommandLine, type SyntaxCommandOptions } from "./syntax_command.ts";

/** How a syntax process is started. */
export interface SyntaxProcessOptions extends SyntaxCommandOptions {
  /** Longest a boot may take before it counts as failed, in ms. */
  bootTimeoutMs: number;
  /** Abandons the boot: the process is killed and the start rejects. */
  signal?: AbortSignal;
}

/** Limits of one request. */
export interface ExchangeLimits {
  /** Wall-clock budget of the answer, in ms. */
  deadlineMs: number;
  /** Longest answer accepted, in bytes. */
  maxAnswerBytes: number;
}

/** How one request to a syntax process ended. */
export type Exchange =
  | { kind: "answer"; answer: PreparedAnswer | MappedAnswer }
  /** No answer within the deadline: the process was killed. */
  | { kind: "deadline" }
  /** The process died before answering; `memory` when it ran out of memory. */
  | { kind: "died"; memory: boolean; reason: string }
  /** It answered with something that is not an answer: it was killed. */
  | { kind: "garbage"; reason: string };

/** Bytes of the process's stderr kept for diagnostics. */
const STDERR_KEEP = 8 * 1024;
/** The largest frame that can be `ready`. */
const READY_BYTES = 64;
/** What V8 and the allocator print when the process runs out of memory. */
const OUT_OF_MEMORY =
  /out of memory|Array buffer allocation failed|memory allocation of \d+ bytes failed|Cannot allocate Wasm memory/i;

let processCounter = 0;

interface Pending {
  id: number;
  maxAnswerBytes: number;
  resolve: (exchange: Exchange) => void;
}

/** A started syntax process; created by {@link startSyntaxProcess}. */
export class SyntaxProcess {
  /** Unique id, for logs. */
  readonly id: string;
  /** Settles when the process is gone. */
  readonly exited: Promise<Deno.CommandStatus>;
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #ready = Promise.withResolvers<void>();
  #pending: Pending | undefined;
  #nextId = 1;
  #dead = false;
  #stderrTail = "";
  #stderrDone: Promise<void>;

  /** Supervises `child`, a process started by {@link startSyntaxProcess}. */
  constructor(child: Deno.ChildProcess, id: string) {
    this.id = id;
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#writer.closed.catch(() => {});
    this.#ready.promise.catch(() => {});
    this.#stderrDone = this.#readStderr();
    this.#readFrames();
    this.exited = child.status.then(async (status) => {
      this.#dead = true;
      await Promise.race([this.#stderrDone, new Promise((resolve) => setTimeout(resolve, 50))]);
      this.#ready.reject(new Error(`syntax process exited during boot (${describe(status)})`));
      this.#settle({
        kind: "died",
        memory: OUT_OF_MEMORY.test(this.#stderrTail),
        reason: `its process ended (${describe(status)})`,
      });
      return status;
    });
  }

  /** Pid of the process (the leader of its process group). */
  get pid(): number {
    return this.#child.pid;
  }

  /** True once the process is gone or being killed. */
  get dead(): boolean {
    return this.#dead;
  }

  /** Settles when the process said it is ready; rejects when it died first. */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** Last bytes the process wrote to stderr (diagnostics only). */
  diagnostics(): string {
    return this.#stderrTail;
  }

  /** Ends the process group at once. Idempotent. */
  kill(): void {
    if (this.#dead) return;
    this.#dead = true;
    try {
      Deno.kill(-this.#child.pid, "SIGKILL");
    } catch {
      // No group yet (`setsid` has not run), so no child either.
      try {
        Deno.kill(this.#child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }

  /**
   * Sends one request (its `id` is assigned here) and settles with how it ended; never
   * rejects. One request at a time.
   */
  request(request: RequestContent, limits: ExchangeLimits): Promise<Exchange> {
    if (this.#dead || this.#pending) {
      return Promise.resolve({
        kind: "died",
        memory: false,
        reason: "its process is not available",
      });
    }
    const id = this.#nextId++;
    const { promise, resolve } = Promise.withResolvers<Exchange>();
    this.#pending = { id, maxAnswerBytes: limits.maxAnswerBytes, resolve };
    // Armed before the write: a process that stops reading cannot stall the answer either.
    const timer = setTimeout(() => {
      if (this.#pending?.id !== id) return;
      this.kill();
      this.#settle({ kind: "deadline" });
    }, limits.deadlineMs);
    promise.then(() => clearTimeout(timer));
    const frame = encodeRequest({ ...request, id, maxAnswerBytes: limits.maxAnswerBytes });
    this.#writer.write(frame).catch(() => {
      // The process is gone; its exit settles the request.
      this.kill();
    });
    return promise;
  }

  #settle(exchange: Exchange): void {
    const pending = this.#pending;
    if (!pending) return;
    this.#pending = undefined;
    pending.resolve(exchange);
  }

  /** A frame or bytes that are not the answer expected: the process is killed. */
  #anomaly(reason: string): void {
    this.kill();
    this.#ready.reject(new Error(`syntax process misbehaved during boot: ${reason}`));
    this.#settle({ kind: "garbage", reason });
  }

  async #readFrames(): Promise<void> {
    const reader = new FrameReader();
    let booted = false;
    try {
      for await (const chunk of this.#child.stdout) {
        if (this.#dead) continue;
        // Before `ready` only `ready` fits; between requests nothing may arrive at all.
        const limit = !booted ? READY_BYTES : this.#pending?.maxAnswerBytes ?? 0;
        if (booted && !this.#pending) {
          this.#anomaly("it wrote to stdout while no request was pending");
          continue;
        }
        for (const frame of reader.push(chunk, limit)) {
          const answer = parseAnswer(frame);
          if (!booted) {
            if (answer.t !== "ready") throw new Error(`expected ready, got ${answer.t}`);
            booted = true;
            this.#ready.resolve();
            continue;
          }
          const pending = this.#pending;
          if (answer.t === "ready" || answer.id !== pending?.id) {
            throw new Error("it answered a request that was not pending");
          }
          this.#settle({ kind: "answer", answer });
        }
      }
    } catch (error) {
      this.#anomaly(error instanceof Error ? error.message : String(error));
    }
  }

  async #readStderr(): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of this.#child.stderr) {
        const text = this.#stderrTail + decoder.decode(chunk, { stream: true });
        this.#stderrTail = text.length > STDERR_KEEP ? text.slice(text.length - STDERR_KEEP) : text;
      }
    } catch {
      // the process is gone
    }
  }
}

/** Starts a syntax process and waits until its parsers are loaded. */
export async function startSyntaxProcess(options: SyntaxProcessOptions): Promise<SyntaxProcess> {
  const { command, args, env } = syntaxCommandLine(options);
  const child = new Deno.Command(command, {
    args,
    cwd: "/",
    clearEnv: true,
    env: { ...inheritedEnv(), ...env },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const started = new SyntaxProcess(child, `syntax-${Deno.pid}-${++processCounter}`);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const abandon = () => started.kill();
  options.signal?.addEventListener("abort", abandon);
  try {
    if (options.signal?.aborted) throw new Error("the syntax process boot was abandoned");
    await Promise.race([
      started.ready,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`syntax process boot exceeded ${options.bootTimeoutMs} ms`)),
          options.bootTimeoutMs,
        );
      }),
    ]);
    return started;
  } catch (error) {
    started.kill();
    await started.exited;
    const tail = started.diagnostics().trim().split("\n").slice(-3).join(" | ");
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(tail ? `${reason}: ${tail}` : reason);
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", abandon);
  }
}

/**
 * The only environment a syntax process gets: where Deno's cache is (the service's own, which
 * holds the parsers' modules compiled), and no update check or colours.
 */
function inheritedEnv(): Record<string, string> {
  const env: Record<string, string> = { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" };
  for (const name of ["DENO_DIR", "HOME", "XDG_CACHE_HOME"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}

function describe(status: Deno.CommandStatus): string {
  return status.signal ?? `exit code ${status.code}`;
}
