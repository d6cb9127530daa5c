/**
 * The host side of one Python fork server process: spawns it, speaks its line protocol
 * (JSON requests on stdin, JSON events on stdout) and notices when it dies.
 *
 * @module
 */

import { forkServerCommand, type ForkServerConfig } from "./command.ts";

/** What the fork server says once it is ready. */
export interface ReadyEvent {
  /** CPython version, e.g. `3.11.2`. */
  version: string;
  /** Isolation layers that work on this host. */
  isolation: Record<string, boolean>;
  /** The server's cgroup dirs (one per controller), removed once it is gone. */
  cgroups?: string[];
}

/** The fork server's answer to a run. */
export interface DoneEvent {
  ev: "done";
  id: number;
  status: "success" | "error" | "timeout" | "memory_limit" | "output_limit" | "crashed";
  exit_code: number;
  duration_ms: number;
  truncated: boolean;
  stdout: string;
  stderr: string;
  explicit: string | null;
  returned: string | null;
  error?: string;
}

/** The fork server's answer to a syntax check. */
export interface ValidEvent {
  ok: boolean;
  message?: string;
  line?: number;
  column?: number;
}

/** Why a request to the fork server did not get its answer. */
export class ForkServerGone extends Error {
  /** True when the request had been sent before the server went away. */
  readonly sent: boolean;
  /** Creates the error with a message saying what happened to the server. */
  constructor(message: string, sent: boolean) {
    super(message);
    this.name = "ForkServerGone";
    this.sent = sent;
  }
}

interface Waiter {
  resolve: (event: Record<string, unknown>) => void;
  reject: (error: Error) => void;
}

/** Events that end a spare's life on the server side. */
const TERMINAL = new Set(["done", "gone", "start_failed"]);

/** One running fork server process. */
export class ForkServer {
  /** Settles once the process is gone. */
  readonly exited: Promise<void>;
  /** Pid of the server (also its process group). */
  readonly pid: number;
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #encoder = new TextEncoder();
  #waiters = new Map<string, Waiter>();
  #spareEnds = new Map<number, () => void>();
  #ready = Promise.withResolvers<ReadyEvent>();
  #alive = true;
  #deathReason = "the python fork server exited";
  #debug: boolean;
  /** The end of what the server wrote to stderr, to say why it died. */
  #stderrTail = "";
  #cgroups: string[] = [];

  private constructor(child: Deno.ChildProcess, debug: boolean) {
    this.#child = child;
    this.#debug = debug;
    this.pid = child.pid;
    this.#writer = child.stdin.getWriter();
    this.#writer.closed.catch(() => {});
    this.#ready.promise.catch(() => {});
    const stderr = this.#readStderr();
    this.exited = this.#readLoop().then(() => child.status).then(
      async () => {
        await stderr;
        this.#onDeath();
      },
      () => {
        this.kill("the python fork server's output could not be read");
        this.#onDeath();
      },
    ).then(() => removeCgroups(this.#cgroups));
  }

  /** Spawns a server and waits for its ready event (rejects if it dies or stalls first). */
  static async spawn(
    python: string,
    program: string,
    options: { config: ForkServerConfig; debug: boolean; readyTimeoutMs: number },
  ): Promise<{ server: ForkServer; ready: ReadyEvent }> {
    const { command, options: commandOptions } = forkServerCommand(python, program, options);
    const child = new Deno.Command(command, commandOptions).spawn();
    const server = new ForkServer(child, options.debug);
    const timer = setTimeout(
      () => server.kill("the python fork server did not get ready in time"),
      options.readyTimeoutMs,
    );
    try {
      const ready = await server.#ready.promise;
      return { server, ready };
    } finally {
      clearTimeout(timer);
    }
  }

  /** True until the process is known to be gone or was killed. */
  get alive(): boolean {
    return this.#alive;
  }

  /** Forks a spare; resolves with its pid (which leads its own process group). */
  async spare(id: number, onEnd: () => void): Promise<number> {
    this.#spareEnds.set(id, onEnd);
    const event = await this.#ask(`spare:${id}`, { op: "spare", id });
    if (event.ev !== "spare") {
      this.#spareEnds.delete(id);
      throw new Error(String(event.error ?? "the spare could not be forked"));
    }
    return Number(event.pid);
  }

  /** Hands a job to a spare; resolves with `done` or `start_failed`. */
  run(
    id: number,
    job: { code: string; input: string | null; timeoutMs: number },
  ): Promise<Record<string, unknown>> {
    return this.#ask(`run:${id}`, {
      op: "run",
      id,
      code: job.code,
      input: job.input,
      timeout_ms: job.timeoutMs,
    });
  }

  /** Tells the server to end an idle spare. */
  retire(id: number): void {
    this.#send({ op: "retire", id });
  }

  /** Parses code in a throwaway child of the server. */
  async validate(id: number, code: string): Promise<ValidEvent> {
    const event = await this.#ask(`valid:${id}`, { op: "validate", id, code });
    return event as unknown as ValidEvent;
  }

  /** Resolves true when the server answers a ping within `timeoutMs`. */
  async ping(id: number, timeoutMs: number): Promise<boolean> {
    const timer = Promise.withResolvers<boolean>();
    const handle = setTimeout(() => timer.resolve(false), timeoutMs);
    try {
      return await Promise.race([
        this.#ask(`pong:${id}`, { op: "ping", id }).then(() => true, () => false),
        timer.promise,
      ]);
    } finally {
      clearTimeout(handle);
    }
  }

  /** Kills the server's process group; every pending request fails with `reason`. */
  kill(reason: string): void {
    if (this.#alive) this.#deathReason = reason;
    this.#alive = false;
    try {
      Deno.kill(-this.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }

  /** Closes stdin so the server ends its spares and exits on its own. */
  async close(): Promise<void> {
    this.#alive = false;
    this.#deathReason = "the python runtime is shut down";
    await this.#writer.close().catch(() => {});
  }

  #ask(key: string, request: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (!this.#alive) return Promise.reject(new ForkServerGone(this.#deathReason, false));
    const { promise, resolve, reject } = Promise.withResolvers<Record<string, unknown>>();
    this.#waiters.set(key, { resolve, reject });
    this.#send(request);
    return promise;
  }

  #send(request: Record<string, unknown>): void {
    if (!this.#alive) return;
    const line = this.#encoder.encode(JSON.stringify(request) + "\n");
    this.#writer.write(line).catch(() => this.kill("the python fork server stopped reading"));
  }

  async #readStderr(): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of this.#child.stderr) {
        const text = decoder.decode(chunk, { stream: true });
        if (this.#debug) console.error(text.trimEnd());
        this.#stderrTail = (this.#stderrTail + text).slice(-2_000);
      }
    } catch {
      // the stream ends with the process
    }
  }

  async #readLoop(): Promise<void> {
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const chunk of this.#child.stdout) {
      buffered += decoder.decode(chunk, { stream: true });
      let newline = buffered.indexOf("\n");
      while (newline >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (line.trim()) this.#dispatch(line);
        newline = buffered.indexOf("\n");
      }
    }
  }

  #dispatch(line: string): void {
    let event: Record<string, unknown>;
    try {
      event = JSON.parse(line);
    } catch {
      this.kill("the python fork server broke its protocol");
      return;
    }
    const kind = String(event.ev);
    const id = Number(event.id);
    if (kind === "ready") {
      const ready = event as unknown as ReadyEvent;
      this.#cgroups = (ready.cgroups ?? []).filter((path) => path.startsWith("/sys/fs/cgroup/"));
      this.#ready.resolve(ready);
      return;
    }
    const key = kind === "spare" || kind === "spare_failed"
      ? `spare:${id}`
      : kind === "done" || kind === "start_failed"
      ? `run:${id}`
      : kind === "valid"
      ? `valid:${id}`
      : kind === "pong"
      ? `pong:${id}`
      : undefined;
    if (key) {
      const waiter = this.#waiters.get(key);
      this.#waiters.delete(key);
      waiter?.resolve(event);
    }
    if (TERMINAL.has(kind) || kind === "spare_failed") {
      const end = this.#spareEnds.get(id);
      this.#spareEnds.delete(id);
      end?.();
    }
  }

  #onDeath(): void {
    if (this.#alive) {
      const last = this.#stderrTail.trim().split("\n").pop();
      if (last) this.#deathReason += `: ${last}`;
    }
    this.#alive = false;
    const error = new ForkServerGone(this.#deathReason, true);
    this.#ready.reject(error);
    for (const waiter of this.#waiters.values()) waiter.reject(error);
    this.#waiters.clear();
    for (const end of this.#spareEnds.values()) end();
    this.#spareEnds.clear();
  }
}

/** Tries to remove a dead server's cgroups this many times, this far apart (about 2 s). */
const CGROUP_REMOVE_ATTEMPTS = 40;
const CGROUP_RETRY_MS = 50;

/**
 * Removes a dead server's cgroups: its slot groups, then its own. A group that still holds a
 * process refuses (EBUSY): the server's children are ended with it but can take a few
 * milliseconds to leave, so busy groups are tried again for a while; nothing else is touched.
 */
async function removeCgroups(bases: string[]): Promise<void> {
  let left = bases;
  for (let attempt = 0; left.length > 0 && attempt < CGROUP_REMOVE_ATTEMPTS; attempt++) {
    if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, CGROUP_RETRY_MS));
    const busy: string[] = [];
    for (const base of left) {
      if (!(await removeCgroup(base))) busy.push(base);
    }
    left = busy;
  }
}

/** Removes one server's cgroup dir and its per-run groups; false while one is still busy. */
async function removeCgroup(base: string): Promise<boolean> {
  try {
    for await (const entry of Deno.readDir(base)) {
      if (entry.isDirectory && /^s\d+$/.test(entry.name)) {
        await Deno.remove(`${base}/${entry.name}`).catch(() => {});
      }
    }
    await Deno.remove(base);
    return true;
  } catch (error) {
    return error instanceof Deno.errors.NotFound;
  }
}
