/**
 * The HTTP server: its own accept loop on a TCP listener, each connection handed to Deno's HTTP
 * machinery (`serveHttpOnConnection`, the per-connection half of `Deno.serve`), so that no
 * client can take the service down with connections alone.
 *
 * `Deno.serve` (Deno 2.9) accepts in a Rust loop that ends at the first accept error: once
 * idle connections have used every file descriptor, accept fails with EMFILE, the server's
 * `finished` promise rejects and the process exits (`Uncaught (in promise) Http: Error: Too
 * many open files`). It also never closes a connection that sends nothing. Here instead:
 *
 * - at most `maxConnections` connections are open; a new one past the cap replaces the one
 *   idle longest, or is closed at once when every connection has a request under way;
 * - a connection closes when it has no request under way for `idleTimeoutMs`: one that sends
 *   nothing, or sends a request head too slowly, from its opening; a kept-alive one, from the
 *   end of its last answer;
 * - an accept error is never fatal: the longest-idle connection is closed (freeing a
 *   descriptor) and accepting resumes after a back-off of 10 ms, doubling up to 1 s.
 *
 * A connection is closed with its own server's graceful `shutdown()`, which closes an idle
 * connection at once (measured: within a millisecond, a half-sent request head included).
 * Never with the abort signal `serveHttpOnConnection` also takes: aborting it after Deno has
 * released the connection throws `BadResource` from inside an event listener, which no caller
 * can catch and which ends the process.
 *
 * The cap leaves descriptors in reserve for the sandboxes (see {@link defaultMaxConnections}).
 * Measured on the 2-core machine, a trivial route served this way answers as many requests per
 * second as through `Deno.serve` (see the README's "Connections" section).
 *
 * @module
 */

import { delay, settlesWithin } from "../async.ts";
import { errorMessage } from "../errors.ts";

/** Handles one request, as `Deno.serve`'s handler does. */
export type RequestHandler = (
  request: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Response | Promise<Response>;

/** Where and how {@link serveConnections} listens. */
export interface ConnectionServerOptions {
  /** Address to listen on. */
  hostname: string;
  /** TCP port; 0 picks a free one. */
  port: number;
  /** Most connections open at once. */
  maxConnections: number;
  /** Time a connection may go without a request under way, ms. */
  idleTimeoutMs: number;
  /** The answer when the handler itself throws (it should not). */
  onError?: (error: unknown) => Response | Promise<Response>;
  /** Told about what the server did to connections, for logs and metrics. */
  onEvent?: (event: ConnectionEvent) => void;
}

/** Something the server did that an operator may want to see. */
export type ConnectionEvent =
  | { kind: "closed"; reason: "idle_timeout" | "evicted" | "over_limit" }
  | { kind: "accept_error"; message: string; retryInMs: number }
  | { kind: "unlimited"; message: string };

/** Connections open now. */
export interface ConnectionStats {
  /** With a request under way. */
  active: number;
  /** Without one (new, or kept alive between requests). */
  idle: number;
}

/** A running server. */
export interface ConnectionServer {
  /** The address bound. */
  readonly addr: Deno.NetAddr;
  /** Connections open now. */
  stats(): ConnectionStats;
  /**
   * Stops accepting, closes idle connections, and waits at most `graceMs` for the others to
   * finish the requests under way (each closes after its answer). Idempotent.
   */
  shutdown(options?: { graceMs?: number }): Promise<void>;
}

/** The per-connection half of `Deno.serve`, as this build of Deno exposes it internally. */
type ServeOnConnection = (
  connection: Deno.Conn,
  signal: AbortSignal,
  handler: RequestHandler,
  onError: (error: unknown) => Response | Promise<Response>,
  onListen: () => void,
) => Deno.HttpServer<Deno.NetAddr>;

interface Connection {
  /** Its HTTP server: its `shutdown()` closes this one connection. */
  server?: Deno.HttpServer<Deno.NetAddr>;
  /** Requests under way on it. */
  active: number;
}

const MIN_BACKOFF_MS = 10;
const MAX_BACKOFF_MS = 1_000;

/**
 * Listens and serves `handler` under the limits in `options`. On a Deno without
 * `serveHttpOnConnection` it falls back to `Deno.serve`, without the limits, and says so with
 * an `unlimited` event.
 *
 * @throws {Deno.errors.AddrInUse} and the like when the address cannot be bound.
 */
export function serveConnections(
  handler: RequestHandler,
  options: ConnectionServerOptions,
): ConnectionServer {
  const serveOnConnection = internalServeOnConnection();
  if (!serveOnConnection) return serveUnlimited(handler, options);
  const listener = Deno.listen({ hostname: options.hostname, port: options.port });
  return new Server(listener, serveOnConnection, handler, options);
}

function serveUnlimited(
  handler: RequestHandler,
  options: ConnectionServerOptions,
): ConnectionServer {
  const server = Deno.serve({
    hostname: options.hostname,
    port: options.port,
    onListen: () => {},
    onError: options.onError,
  }, handler);
  options.onEvent?.({
    kind: "unlimited",
    message: "this Deno has no serveHttpOnConnection: connections are neither capped nor " +
      "timed out, and an accept error ends the server",
  });
  return {
    addr: server.addr,
    stats: () => ({ active: 0, idle: 0 }),
    shutdown: (shutdownOptions = {}) =>
      settlesWithin(server.shutdown(), shutdownOptions.graceMs ?? 0).then(() => {}),
  };
}

/** The internal `serveHttpOnConnection` of `Deno.serve`, if this Deno has it. */
function internalServeOnConnection(): ServeOnConnection | undefined {
  const deno = Deno as unknown as { internal?: symbol } & Record<symbol, unknown>;
  const internal = deno.internal === undefined ? undefined : deno[deno.internal];
  const serve = (internal as { serveHttpOnConnection?: unknown } | undefined)
    ?.serveHttpOnConnection;
  return typeof serve === "function" ? serve as ServeOnConnection : undefined;
}

class Server implements ConnectionServer {
  readonly addr: Deno.NetAddr;
  #listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>;
  #serveOnConnection: ServeOnConnection;
  #handler: RequestHandler;
  #options: ConnectionServerOptions;
  #connections = new Set<Connection>();
  /** Connections without a request under way, by when they became idle, oldest first. */
  #idle = new Map<Connection, number>();
  #closing = new AbortController();
  #sweeper: ReturnType<typeof setInterval>;
  #accepting: Promise<void>;
  #stopped: Promise<void> | undefined;

  constructor(
    listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>,
    serveOnConnection: ServeOnConnection,
    handler: RequestHandler,
    options: ConnectionServerOptions,
  ) {
    this.addr = listener.addr;
    this.#listener = listener;
    this.#serveOnConnection = serveOnConnection;
    this.#handler = handler;
    this.#options = options;
    const every = Math.min(1_000, Math.max(25, Math.floor(options.idleTimeoutMs / 4)));
    this.#sweeper = setInterval(() => this.#closeExpired(), every);
    this.#accepting = this.#acceptLoop();
  }

  stats(): ConnectionStats {
    return { active: this.#connections.size - this.#idle.size, idle: this.#idle.size };
  }

  shutdown(options: { graceMs?: number } = {}): Promise<void> {
    this.#stopped ??= this.#stop(options.graceMs ?? 0);
    return this.#stopped;
  }

  async #stop(graceMs: number): Promise<void> {
    this.#closing.abort();
    clearInterval(this.#sweeper);
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    await this.#accepting;
    const closed = [...this.#connections].map((connection) => close(connection));
    await settlesWithin(Promise.all(closed), graceMs);
  }

  async #acceptLoop(): Promise<void> {
    let backoffMs = 0;
    while (!this.#closing.signal.aborted) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
        backoffMs = 0;
      } catch (error) {
        if (this.#closing.signal.aborted || error instanceof Deno.errors.BadResource) return;
        // Out of descriptors (EMFILE, ENFILE) or a connection reset before it was accepted:
        // free a descriptor if one is idle, and try again shortly.
        backoffMs = Math.min(MAX_BACKOFF_MS, Math.max(MIN_BACKOFF_MS, backoffMs * 2));
        this.#options.onEvent?.({
          kind: "accept_error",
          message: errorMessage(error),
          retryInMs: backoffMs,
        });
        this.#evictIdlest("evicted");
        await delay(backoffMs, { signal: this.#closing.signal });
        continue;
      }
      this.#admit(conn);
    }
  }

  #admit(conn: Deno.TcpConn): void {
    if (this.#connections.size >= this.#options.maxConnections && !this.#evictIdlest("evicted")) {
      closeQuietly(conn);
      this.#options.onEvent?.({ kind: "closed", reason: "over_limit" });
      return;
    }
    const connection: Connection = { active: 0 };
    const handler: RequestHandler = (request, info) => {
      if (connection.active++ === 0) this.#idle.delete(connection);
      const done = () => {
        if (--connection.active === 0 && this.#connections.has(connection)) {
          this.#idle.set(connection, performance.now());
        }
      };
      info.completed.then(done, done);
      return this.#handler(request, info);
    };
    this.#connections.add(connection);
    this.#idle.set(connection, performance.now());
    try {
      connection.server = this.#serveOnConnection(
        conn,
        // No abort signal: see the module doc.
        undefined as unknown as AbortSignal,
        handler,
        this.#options.onError ?? internalError,
        () => {},
      );
    } catch {
      this.#forget(connection);
      closeQuietly(conn);
      return;
    }
    connection.server.finished.catch(() => {}).finally(() => this.#forget(connection));
  }

  #forget(connection: Connection): void {
    this.#connections.delete(connection);
    this.#idle.delete(connection);
  }

  /** Closes the connection idle longest; false when none is idle. */
  #evictIdlest(reason: "evicted" | "idle_timeout"): boolean {
    const idlest = this.#idle.keys().next();
    if (idlest.done) return false;
    this.#close(idlest.value, reason);
    return true;
  }

  #close(connection: Connection, reason: "evicted" | "idle_timeout"): void {
    this.#forget(connection);
    close(connection);
    this.#options.onEvent?.({ kind: "closed", reason });
  }

  #closeExpired(): void {
    const since = performance.now() - this.#options.idleTimeoutMs;
    for (const [connection, idleSince] of this.#idle) {
      if (idleSince > since) break;
      this.#close(connection, "idle_timeout");
    }
  }
}

/** Closes a connection: at once when idle, after its answer otherwise. Never throws. */
function close(connection: Connection): Promise<void> {
  return connection.server?.shutdown().catch(() => {}) ?? Promise.resolve();
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed by the peer.
  }
}

function internalError(): Response {
  return Response.json({ error: "internal error; see the service log" }, { status: 500 });
}

/**
 * The default connection cap: the process's open-file limit less a reserve for everything else
 * (sandbox sockets, pipes and process handles: about 3 per sandbox measured, counted as 8, plus
 * 256 for the rest), at least 64 and at most 4096.
 */
export function defaultMaxConnections(
  openFileLimit: number | undefined,
  options: { sandboxes: number },
): number {
  if (openFileLimit === undefined) return 1024;
  const reserve = 256 + 8 * options.sandboxes;
  return Math.min(4096, Math.max(64, openFileLimit - reserve));
}

/** The soft and hard RLIMIT_NOFILE of this process, from /proc (Linux). */
export function openFileLimits(): { soft: number; hard: number } | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/self/limits");
  } catch {
    return undefined;
  }
  const match = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  if (!match) return undefined;
  const value = (field: string) => field === "unlimited" ? Infinity : Number(field);
  return { soft: value(match[1]), hard: value(match[2]) };
}

/**
 * Raises the soft RLIMIT_NOFILE to the hard one, as `deno run` does at start but a compiled
 * binary does not. Deno has no setrlimit; `prlimit --pid` (util-linux) sets another process's
 * limits, this one's included. Returns the limits after the attempt; never throws.
 */
export async function raiseOpenFileLimit(): Promise<{ soft: number; hard: number } | undefined> {
  const limits = openFileLimits();
  if (!limits || limits.soft >= limits.hard || !Number.isFinite(limits.hard)) return limits;
  try {
    await new Deno.Command("prlimit", {
      args: ["--pid", String(Deno.pid), `--nofile=${limits.hard}:${limits.hard}`],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
  } catch {
    // No prlimit here: the soft limit stays.
  }
  return openFileLimits();
}
