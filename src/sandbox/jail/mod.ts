/**
 * The jail, host side: one jailer process (faas_jail, run by the configured Python) that puts
 * every sandbox process of a runtime into the OS layers this host allows, and the socket each
 * sandbox connects back to. The same for both languages: a JavaScript runner is a program the
 * jailer starts in a slot's jail; a Python zygote is a fork of the jailer (with the modules
 * it preloaded) that enters a slot's jail and forks each run.
 *
 * A sandbox's connection is matched to the request that started it by a random token, its
 * first line; the jailer never sees what goes over it.
 *
 * @module
 */

import { delay } from "../../async.ts";

/** Every layer name the jail reports, for both languages. */
export const JAIL_LAYERS = [
  "uid",
  "pidns",
  "mountns",
  "rootfs",
  "ipcns",
  "utsns",
  "netns",
  "cgroup",
  "cgroupns",
  "seccomp",
  "no_new_privs",
  "rlimits",
  "clean_env",
] as const;

/** Where the jail keeps its files: the socket and the empty mount point of roots. */
export interface JailDirs {
  /** Dir of the host's socket (mode 0711); bound into each root as {@link JAIL_RUN_DIR}. */
  runDir: string;
  /** An empty dir the jailer mounts each sandbox's root on (in the sandbox's own namespace). */
  mountPoint: string;
  /** Dir holding the jailer's Python package `faas_jail`. */
  packageDir: string;
}

/** Where the host's socket dir appears inside a sandbox's root. */
export const JAIL_RUN_DIR = "/sandbox/run";

/** Where a runtime's files appear inside a sandbox's root (see workdir.ts). */
export const JAIL_FILES_DIR = "/sandbox/files";

/** Name of the host's socket in its dir. */
export const SOCKET_NAME = "host.sock";

/** How one jail confines its sandboxes. */
export interface JailOptions {
  /** The Python interpreter that runs the jailer. */
  python: string;
  /** Names this jail (its cgroup dir); unique within the service. */
  name: string;
  /** Most sandbox processes alive at once (each owns a slot: uid, cgroup, netns). */
  maxSlots: number;
  /** Memory of one slot's cgroup (process tree and its tmpfs), in bytes. */
  memoryBytes: number;
  /** Processes and threads one slot may hold. */
  maxPids: number;
  /** CPU weight of a slot, 1-10000 (100 is a normal process). */
  cpuWeight: number;
  /** Size of a sandbox's private /tmp (and /dev/shm), in bytes. */
  tmpBytes: number;
  /** Inodes of a sandbox's private /tmp. */
  tmpInodes: number;
  /** rlimits of a started program, by name (`NOFILE`, `DATA`, `CORE`, ...). */
  limits: Record<string, number>;
  /** Host paths shown read-only in every sandbox's root, at the given path. */
  binds: [host: string, jail: string][];
  /** Layers to leave off (to exercise the fallbacks). */
  layersOff?: readonly string[];
  /** Configuration of the Python zygote, for a jail whose sandboxes are zygotes. */
  zygote?: Record<string, unknown>;
  /** Network namespaces made ahead (default 2). */
  netnsAhead?: number;
  /** Copies the jailer's stderr to the service's. */
  debug?: boolean;
  /** Longest a sandbox may take to connect back, in ms (default 10 s). */
  connectTimeoutMs?: number;
}

/** How a sandbox process ended, as the jailer saw it. */
export interface SandboxExit {
  /** Exit code, when it exited. */
  code?: number;
  /** Signal number, when a signal ended it. */
  signal?: number;
  /** The kernel killed a process in its slot for memory while it lived. */
  oom: boolean;
}

/** A sandbox process started in its jail and connected back. */
export interface JailedProcess {
  /** Request id, unique within the jail. */
  readonly id: number;
  /** Its pid (as the host sees it). */
  readonly pid: number;
  /** Its slot number. */
  readonly slot: number;
  /** Its connection (the token line already read). */
  readonly conn: Deno.UnixConn;
  /** Settles once it is gone and its slot is free again. */
  readonly exit: Promise<SandboxExit>;
  /** Ends it and every process in its jail. Idempotent. */
  kill(): void;
}

/** What {@link Jail.spawn} starts. */
export type SpawnRequest =
  | {
    kind: "program";
    /** The program and its arguments, given the token it must say on connecting. */
    argv: (token: string) => string[];
    /** Its whole environment. */
    env: Record<string, string>;
    /**
     * The host's own program (a warm-up): it keeps the jailer's uid and may write these
     * (host path, path in its root) pairs. Never for user code.
     */
    trusted?: { writable: [string, string][] };
    /**
     * A dir of its own, made in its private /tmp before it starts: `[source, target]`, paths
     * in its root. Each file of `source` is copied there, its own to write; each subdir is
     * linked there, shared and read-only. Where the jail gives no private /tmp, nothing is made.
     */
    ownDir?: [string, string];
  }
  | { kind: "zygote" };

interface Pending {
  id: number;
  token: string;
  pid?: number;
  slot?: number;
  conn?: Deno.UnixConn;
  exit: PromiseWithResolvers<SandboxExit>;
  ready: PromiseWithResolvers<JailedProcess>;
}

const TOKEN_BYTES = 16;
const TOKEN_LINE = TOKEN_BYTES * 2 + 1;
const MAX_EVENT_LINE = 64 * 1024;

/** Time between two pings of the jailer. */
const PING_INTERVAL_MS = 2_000;
/** A jailer that has not answered a ping for this long is taken for hung, and replaced. */
const PING_TIMEOUT_MS = 6_000;
/** Waits before starting a jailer again after one died: doubling from the first to the last. */
const RESTART_DELAYS_MS = [100, 5_000] as const;

/**
 * The jail of one runtime: its socket, and a jailer process kept alive. A jailer that dies or
 * stops answering (killed, stopped, starved) is replaced: the sandboxes it started die with it
 * (the kernel kills them when their parent dies), their runs are answered by their runtimes as
 * crashed, and new sandboxes start in the new jailer, in the same slots and layers.
 */
export class Jail {
  /** The layers active for this jail's sandboxes. */
  readonly layers: Record<string, boolean>;
  /** Settles once the jail is closed and its last jailer gone. */
  readonly closed: Promise<void>;
  #dirs: JailDirs;
  #options: JailOptions;
  #listener: Deno.UnixListener;
  #jailer: Jailer | undefined;
  /** Settles with the next jailer while none runs. */
  #next = Promise.withResolvers<Jailer>();
  #failedStarts = 0;
  #closing = false;
  #nextId = 1;
  #byId = new Map<number, Pending>();
  #byToken = new Map<string, Pending>();
  #pinger: ReturnType<typeof setInterval>;
  #unanswered: { id: number; since: number } | undefined;

  private constructor(
    dirs: JailDirs,
    options: JailOptions,
    listener: Deno.UnixListener,
    first: Jailer,
  ) {
    this.#dirs = dirs;
    this.#options = options;
    this.#listener = listener;
    this.layers = first.layers;
    this.#next.promise.catch(() => {});
    this.#adopt(first);
    this.#acceptLoop();
    this.#pinger = setInterval(() => this.#ping(), PING_INTERVAL_MS);
    Deno.unrefTimer(this.#pinger);
    this.closed = this.#keepAlive();
  }

  /** Starts a jailer for `options` in `dirs` and waits for its probe of the host. */
  static async start(dirs: JailDirs, options: JailOptions): Promise<Jail> {
    const socketPath = `${dirs.runDir}/${SOCKET_NAME}`;
    await Deno.remove(socketPath).catch(() => {});
    const listener = Deno.listen({ transport: "unix", path: socketPath });
    // Sandboxes of unprivileged uids connect to it; the token says which is which.
    await Deno.chmod(socketPath, 0o666);
    try {
      return new Jail(dirs, options, listener, await Jailer.start(dirs, options, socketPath));
    } catch (error) {
      listener.close();
      throw error;
    }
  }

  /** True until the jail is closed, unless its jailer cannot be started again. */
  get alive(): boolean {
    return !this.#closing && (this.#jailer !== undefined || this.#failedStarts < 3);
  }

  /** Starts a sandbox in a free slot; resolves once it has connected back. */
  spawn(request: SpawnRequest): Promise<JailedProcess> {
    if (this.#closing) return Promise.reject(new Error("the sandbox jail is closed"));
    const id = this.#nextId++;
    const token = randomToken();
    const pending: Pending = {
      id,
      token,
      exit: Promise.withResolvers<SandboxExit>(),
      ready: Promise.withResolvers<JailedProcess>(),
    };
    pending.ready.promise.catch(() => {});
    this.#byId.set(id, pending);
    this.#byToken.set(token, pending);
    const timeout = this.#options.connectTimeoutMs ?? 10_000;
    const timer = setTimeout(() => {
      this.#jailer?.send({ op: "kill", id });
      pending.ready.reject(new Error(`the sandbox did not connect within ${timeout} ms`));
      pending.exit.resolve({ signal: 9, oom: false });
    }, timeout);
    pending.ready.promise.finally(() => clearTimeout(timer)).catch(() => {});
    pending.exit.promise.then((exit) => {
      this.#byId.delete(id);
      this.#byToken.delete(token);
      if (pending.conn) closeQuietly(pending.conn);
      const how = exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`;
      pending.ready.reject(new Error(`the sandbox ended before it connected (${how})`));
    });
    const spawn = request.kind === "program"
      ? {
        op: "spawn",
        id,
        token,
        argv: request.argv(token),
        env: request.env,
        ...(request.trusted ? { trusted: true, writable: request.trusted.writable } : {}),
        ...(request.ownDir ? { own_dir: request.ownDir } : {}),
      }
      : { op: "zygote", id, token };
    // While a jailer is being replaced, the request waits for the new one (within its timeout).
    const jailer = this.#jailer;
    if (jailer) jailer.send(spawn);
    else this.#next.promise.then((next) => next.send(spawn), () => {});
    return pending.ready.promise;
  }

  /** Ends every sandbox and the jailer, and waits for them. */
  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#pinger);
    this.#next.reject(new Error("the sandbox jail is closed"));
    this.#jailer?.close();
    await this.closed;
  }

  /** Runs jailers one after another until the jail closes. */
  async #keepAlive(): Promise<void> {
    let backoff: number = RESTART_DELAYS_MS[0];
    while (this.#jailer) {
      await this.#jailer.exited;
      const why = this.#jailer.lastWords();
      this.#jailer = undefined;
      this.#unanswered = undefined;
      // Its sandboxes died with it.
      for (const pending of this.#byId.values()) {
        pending.ready.reject(new Error(`the sandbox jailer is gone${why ? `: ${why}` : ""}`));
        pending.exit.resolve({ signal: 9, oom: false });
      }
      while (!this.#closing && !this.#jailer) {
        await delay(backoff);
        if (this.#closing) break;
        try {
          const socketPath = `${this.#dirs.runDir}/${SOCKET_NAME}`;
          this.#adopt(await Jailer.start(this.#dirs, this.#options, socketPath));
          backoff = RESTART_DELAYS_MS[0];
        } catch {
          this.#failedStarts++;
          backoff = Math.min(backoff * 2, RESTART_DELAYS_MS[1]);
        }
      }
    }
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
  }

  #adopt(jailer: Jailer): void {
    this.#jailer = jailer;
    this.#failedStarts = 0;
    jailer.onEvent = (event) => this.#onEvent(event);
    this.#next.resolve(jailer);
    this.#next = Promise.withResolvers<Jailer>();
    this.#next.promise.catch(() => {});
  }

  /** Pings the jailer; one that left the last ping unanswered too long is killed. */
  #ping(): void {
    const jailer = this.#jailer;
    if (!jailer || this.#closing) return;
    if (this.#unanswered) {
      if (performance.now() - this.#unanswered.since > PING_TIMEOUT_MS) jailer.kill();
      return;
    }
    this.#unanswered = { id: this.#nextId++, since: performance.now() };
    jailer.send({ op: "ping", id: this.#unanswered.id });
  }

  #onEvent(event: Record<string, unknown>): void {
    if (event.ev === "pong") {
      if (this.#unanswered?.id === event.id) this.#unanswered = undefined;
      return;
    }
    const pending = this.#byId.get(Number(event.id));
    if (!pending) return;
    switch (event.ev) {
      case "spawned":
        pending.pid = Number(event.pid);
        pending.slot = Number(event.slot);
        this.#maybeReady(pending);
        break;
      case "spawn_failed":
        pending.ready.reject(new Error(`cannot start a sandbox: ${String(event.error)}`));
        pending.exit.resolve({ code: 70, oom: false });
        break;
      case "exit":
        pending.exit.resolve({
          code: typeof event.code === "number" ? event.code : undefined,
          signal: typeof event.signal === "number" ? event.signal : undefined,
          oom: event.oom === true,
        });
        break;
    }
  }

  #maybeReady(pending: Pending): void {
    if (pending.pid === undefined || !pending.conn) return;
    const kill = () => this.#jailer?.send({ op: "kill", id: pending.id });
    pending.ready.resolve({
      id: pending.id,
      pid: pending.pid,
      slot: pending.slot!,
      conn: pending.conn,
      exit: pending.exit.promise,
      kill,
    });
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let conn: Deno.UnixConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        if (this.#closing) return;
        continue;
      }
      this.#identify(conn);
    }
  }

  /** Reads a connection's token line; an unknown or late token closes it. */
  async #identify(conn: Deno.UnixConn): Promise<void> {
    const line = new Uint8Array(TOKEN_LINE);
    let filled = 0;
    const timer = setTimeout(() => closeQuietly(conn), 10_000);
    try {
      while (filled < TOKEN_LINE) {
        const read = await conn.read(line.subarray(filled));
        if (read === null) throw new Error("closed");
        filled += read;
      }
    } catch {
      clearTimeout(timer);
      return;
    }
    clearTimeout(timer);
    const token = new TextDecoder().decode(line.subarray(0, TOKEN_LINE - 1));
    const pending = this.#byToken.get(token);
    if (!pending || pending.conn || line[TOKEN_LINE - 1] !== 0x0a) {
      closeQuietly(conn);
      return;
    }
    pending.conn = conn;
    this.#maybeReady(pending);
  }
}

/** One jailer process: its requests (stdin) and events (stdout), one JSON object per line. */
class Jailer {
  /** The layers it found active. */
  readonly layers: Record<string, boolean>;
  /** Settles once its events ended and the process exited. */
  readonly exited: Promise<void>;
  /** Told every event after `ready`. */
  onEvent: (event: Record<string, unknown>) => void = () => {};
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #stderr: { done: Promise<string> };
  #stderrTail = "";
  #open = true;

  private constructor(
    child: Deno.ChildProcess,
    writer: WritableStreamDefaultWriter<Uint8Array>,
    stderr: { done: Promise<string> },
    ready: { layers: Record<string, boolean>; events: AsyncIterator<Record<string, unknown>> },
  ) {
    this.#child = child;
    this.#writer = writer;
    this.#stderr = stderr;
    this.layers = ready.layers;
    stderr.done.then((text) => this.#stderrTail = text);
    this.exited = this.#eventLoop(ready.events);
  }

  /** Starts a jailer and waits for its probe of the host (its `ready` event). */
  static async start(dirs: JailDirs, options: JailOptions, socketPath: string): Promise<Jailer> {
    const config = {
      name: options.name,
      debug: options.debug ?? false,
      socket: socketPath,
      mount_point: dirs.mountPoint,
      max_slots: options.maxSlots,
      memory_bytes: options.memoryBytes,
      max_pids: options.maxPids,
      cpu_weight: options.cpuWeight,
      tmp_bytes: options.tmpBytes,
      tmp_inodes: options.tmpInodes,
      limits: options.limits,
      // Zygotes connect before they enter their root; programs connect from inside it.
      binds: options.zygote ? options.binds : [[dirs.runDir, JAIL_RUN_DIR], ...options.binds],
      layers_off: [...(options.layersOff ?? [])],
      zygote: options.zygote ?? null,
      // Programs connect back with a unix socket of their own; zygotes before their jail.
      unix_sockets: options.zygote === undefined,
      netns_ahead: options.netnsAhead ?? 2,
    };
    let child: Deno.ChildProcess;
    try {
      // Sandboxes inherit the jailer's command line and read it: it names no host path, and
      // the config (paths of the host) goes on stdin. -B: the copy of the packages is new at
      // every start, a bytecode cache in it is waste.
      child = new Deno.Command(options.python, {
        args: ["-I", "-B", "faas_jail/__main__.py"],
        clearEnv: true,
        env: {},
        cwd: dirs.packageDir,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new Error(`cannot start the sandbox jailer with ${options.python}: ${reason}`);
    }
    const writer = child.stdin.getWriter();
    writer.closed.catch(() => {});
    writer.write(new TextEncoder().encode(JSON.stringify(config) + "\n")).catch(() => {});
    const events = eventLines(child.stdout);
    const stderr = tail(child.stderr, options.debug);
    const first = await events.next().catch(() => undefined);
    if (!first || first.done || first.value.ev !== "ready") {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      await child.status;
      const why = (await stderr.done).trim().split("\n").slice(-3).join(" | ");
      throw new Error(`the sandbox jailer did not start${why ? `: ${why}` : ""}`);
    }
    const layers = first.value.layers as Record<string, boolean>;
    return new Jailer(child, writer, stderr, { layers, events });
  }

  /** Sends one request; a jailer that stopped reading is killed. */
  send(request: Record<string, unknown>): void {
    if (!this.#open) return;
    const line = new TextEncoder().encode(JSON.stringify(request) + "\n");
    this.#writer.write(line).catch(() => this.kill());
  }

  /** Asks it to end every sandbox and exit (closes its stdin); kills it after 5 s. */
  close(): void {
    if (!this.#open) return;
    this.#open = false;
    this.#writer.close().catch(() => {});
    const timer = setTimeout(() => this.kill(), 5_000);
    this.exited.finally(() => clearTimeout(timer));
  }

  /** Kills it at once; its sandboxes die with it. */
  kill(): void {
    this.#open = false;
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }

  /** The last line it wrote on stderr, once it is gone. */
  lastWords(): string | undefined {
    return this.#stderrTail.trim().split("\n").pop() || undefined;
  }

  async #eventLoop(events: AsyncIterator<Record<string, unknown>>): Promise<void> {
    // Its end is its exit, not the end of its output: a process it left behind could hold
    // its stdout open forever. What it wrote just before it died gets a moment to arrive.
    const gone = this.#child.status.then(() => delay(100)).then(() => ({ done: true }) as const);
    try {
      for (;;) {
        const next = await Promise.race([events.next(), gone]);
        if (next.done) break;
        this.onEvent(next.value);
      }
    } catch {
      this.kill();
    }
    this.#open = false;
    await this.#child.status;
    await Promise.race([this.#stderr.done, delay(100)]);
  }
}

function closeQuietly(conn: Deno.UnixConn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(TOKEN_BYTES));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** The jailer's events, one JSON object per line; a broken line ends the stream. */
async function* eventLines(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<Record<string, unknown>> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of stream) {
    buffered += decoder.decode(chunk, { stream: true });
    if (buffered.length > MAX_EVENT_LINE && !buffered.includes("\n")) {
      throw new Error("the sandbox jailer wrote an overlong line");
    }
    let newline = buffered.indexOf("\n");
    while (newline >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (line.trim()) yield JSON.parse(line);
      newline = buffered.indexOf("\n");
    }
  }
}

/** Keeps the last 4 KiB of a stream (copied to the service's stderr when debugging). */
function tail(stream: ReadableStream<Uint8Array>, echo = false): { done: Promise<string> } {
  const done = (async () => {
    const decoder = new TextDecoder();
    let text = "";
    try {
      for await (const chunk of stream) {
        const piece = decoder.decode(chunk, { stream: true });
        if (echo) console.error(piece.trimEnd());
        text = (text + piece).slice(-4096);
      }
    } catch {
      // the process is gone
    }
    return text;
  })();
  return { done };
}
