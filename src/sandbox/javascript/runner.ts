/**
 * Entry of a JS runner process. It connects to the host's unix socket (the only thing its
 * permissions allow besides reading its own modules), then either starts the no-permission
 * worker that runs user code and relays frames between the two (default), or, with
 * `--inline`, revokes every permission of its own and runs user code on its own thread.
 * It never looks inside user results: the host checks every frame.
 *
 * Usage: `deno run <flags> runner.ts <socket path> [--inline]`.
 *
 * @module
 */

import { encodeFrame, FrameDecoder, type RunFrame } from "./protocol.ts";

const PERMISSIONS = ["read", "write", "net", "env", "run", "ffi", "sys", "import"] as const;

// Taken before the sandbox realm replaces Deno.exit (inline mode shares this global scope).
const exit = Deno.exit.bind(Deno);

/** How {@link main} treats its own permissions. */
export interface RunnerMainOptions {
  /**
   * The runner was started with broad permissions (a compiled binary re-executing itself
   * has them baked in): it gives up each one as soon as it no longer needs it, and all of
   * them before it reports ready. `--report-permissions` then prints their states to stderr.
   */
  narrow?: boolean;
}

/** Runs the runner: connect, boot the sandbox realm, relay until the host goes away. */
export async function main(
  args: readonly string[] = Deno.args,
  options: RunnerMainOptions = {},
): Promise<void> {
  const socketPath = args[0];
  if (!socketPath) {
    console.error("runner: expected the socket path as the first argument");
    exit(2);
  }
  if (options.narrow) narrow(["env", "run", "ffi", "sys", "import"]);
  const conn = await Deno.connect({ transport: "unix", path: socketPath });
  // Reading stays until the worker's modules are loaded (from disk under `deno run`).
  if (options.narrow) narrow(["net", "write"]);
  const send = frameWriter(conn);
  const onRun = args.includes("--inline")
    ? await inlineRealm(send, [
      socketPath,
      ...["./worker.ts", "./realm.ts", "./protocol.ts"].map(
        (path) => new URL(path, import.meta.url).pathname,
      ),
    ])
    : await workerRealm(send);
  if (options.narrow) {
    narrow(PERMISSIONS);
    if (args.includes("--report-permissions")) reportPermissions();
  }
  send({ t: "ready" });

  const decoder = new FrameDecoder();
  try {
    for await (const chunk of conn.readable) {
      for (const body of decoder.push(chunk)) {
        const frame = JSON.parse(body) as RunFrame;
        if (frame.t !== "run") continue;
        // The code starts only once the host knows it was received (see AckFrame).
        await send({ t: "ack", id: frame.id });
        onRun(frame);
      }
    }
  } catch {
    // A reset connection: the host went away as well.
  }
  // The host closed the socket: nothing more to do.
  exit(0);
}

/** Starts the no-permission worker; resolves once its realm is installed. */
async function workerRealm(send: (frame: unknown) => unknown): Promise<(frame: RunFrame) => void> {
  const worker = new Worker(new URL("./worker.ts", import.meta.url), {
    type: "module",
    deno: { permissions: "none" },
  });
  const booted = Promise.withResolvers<void>();
  worker.onerror = (event) => {
    // The worker handles user errors itself; one reaching here means it is broken.
    event.preventDefault();
    console.error(`runner: worker failed: ${event.message}`);
    exit(3);
  };
  worker.onmessageerror = () => exit(3);
  worker.onmessage = (event: MessageEvent) => {
    const message = event.data as { t?: unknown; message?: unknown };
    if (message?.t === "booted") booted.resolve();
    else if (message?.t === "fatal") {
      console.error(`runner: worker boot failed: ${message.message}`);
      exit(3);
    } else send(message);
  };
  await booted.promise;
  return (frame) => worker.postMessage(frame);
}

/** Installs the realm on this thread after giving up every permission, for good. */
async function inlineRealm(
  send: (frame: unknown) => unknown,
  paths: string[],
): Promise<(frame: RunFrame) => void> {
  const { installSandbox } = await import("./realm.ts");
  for (const name of PERMISSIONS) Deno.permissions.revokeSync({ name });
  for (const path of paths) {
    Deno.permissions.revokeSync({ name: "read", path });
    Deno.permissions.revokeSync({ name: "write", path });
    if (Deno.permissions.querySync({ name: "read", path }).state === "granted") {
      console.error(`runner: could not revoke access to ${path}`);
      exit(3);
    }
  }
  for (const name of PERMISSIONS) {
    // "prompt" is as good as denied: runners start with --no-prompt.
    if (Deno.permissions.querySync({ name }).state === "granted") {
      console.error(`runner: could not revoke the ${name} permission`);
      exit(3);
    }
  }
  return await installSandbox(send);
}

/**
 * Revokes whole permissions (a path-scoped revoke leaves a broad grant in place, so only
 * whole ones narrow `--allow-all`), and exits when one is still granted afterwards.
 */
function narrow(names: readonly (typeof PERMISSIONS)[number][]): void {
  for (const name of names) {
    Deno.permissions.revokeSync({ name });
    // "prompt" is as good as denied: runners start with --no-prompt.
    if (Deno.permissions.querySync({ name }).state === "granted") {
      console.error(`runner: could not revoke the ${name} permission`);
      exit(3);
    }
  }
}

function reportPermissions(): void {
  const states: Record<string, string> = {};
  for (const name of PERMISSIONS) states[name] = Deno.permissions.querySync({ name }).state;
  console.error(JSON.stringify({ permissions: states }));
}

/**
 * Serializes frame writes, coalescing frames queued while a write is under way. The returned
 * promise settles once the frame was handed to the socket.
 */
function frameWriter(conn: Deno.UnixConn): (frame: unknown) => Promise<void> {
  const writer = conn.writable.getWriter();
  let queue: Uint8Array[] = [];
  let written: (() => void)[] = [];
  let writing = false;
  async function flush(): Promise<void> {
    writing = true;
    try {
      while (queue.length > 0) {
        const parts = queue;
        const done = written;
        queue = [];
        written = [];
        await writer.write(parts.length === 1 ? parts[0] : join(parts));
        for (const resolve of done) resolve();
      }
    } catch {
      exit(0);
    }
    writing = false;
  }
  return (frame) => {
    const { promise, resolve } = Promise.withResolvers<void>();
    queue.push(encodeFrame(frame));
    written.push(resolve);
    if (!writing) flush();
    return promise;
  };
}

function join(parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.length;
  }
  return bytes;
}

if (import.meta.main) main();
