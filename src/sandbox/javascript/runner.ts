/**
 * Entry of a JS runner process. The jailer starts it in its jail; it connects to the service's
 * socket, says which runner it is, and may read its own modules and nothing else. It relays
 * frames between the service and two workers with no permissions:
 *
 * - the fresh worker (fresh_worker.ts), booted with the process, runs the runner's first run in
 *   its own untouched realm and is then ended;
 * - the kept worker (context_worker.ts), booted when a second run comes (or the service asks
 *   ahead), runs every later run in a fresh vm context.
 *
 * Output comes from a worker through a shared ring (output_channel.ts), so the service can
 * take what a run printed even while its code spins. It never looks inside results: the
 * service checks every frame.
 *
 * Usage: `deno run <flags> runner.ts <socket path> <token>` (or the service's executable with
 * `--faas-runner=javascript` first).
 *
 * @module
 */

import {
  encodeFrame,
  FrameDecoder,
  type HostFrame,
  parseHostFrame,
  type RunFrame,
} from "./protocol.ts";
import { createOutputBuffer, OutputReader } from "./output_channel.ts";

const PERMISSIONS = ["read", "write", "net", "env", "run", "ffi", "sys", "import"] as const;

// Taken before any worker exists.
const exit = Deno.exit.bind(Deno);

/** How {@link main} treats its own permissions. */
export interface RunnerMainOptions {
  /**
   * The runner was started with broad permissions (a compiled binary re-executing itself has
   * them baked in): it gives up every one but reading before it reports ready, and reading
   * once its kept worker is loaded. `--report-permissions` then prints their states to stderr
   * when the runner ends.
   */
  narrow?: boolean;
}

/** One worker of the runner and the end of its output ring. */
interface WorkerEnd {
  worker: Worker;
  reader: OutputReader;
  /** Sends a frame to the worker. */
  send: (frame: unknown) => void;
  /** Resolves once the worker is ready for a run. */
  booted: Promise<void>;
}

let send: (frame: unknown) => void = () => {};
let builtins: string[] = [];
let fresh: WorkerEnd | undefined;
let freshUsed = false;
let kept: WorkerEnd | undefined;
/** The run under way and the worker running it. */
let active: { id: number; end: WorkerEnd } | undefined;

/** Runs the runner until the service goes away. */
export async function main(
  args: readonly string[] = Deno.args,
  options: RunnerMainOptions = {},
): Promise<void> {
  const [socketPath, token] = args;
  const report = args.includes("--report-permissions");
  if (!socketPath || !token) {
    console.error("runner: expected the socket path and the runner's token as arguments");
    exit(2);
  }
  if (options.narrow) narrow(["env", "run", "ffi", "sys", "import"]);
  const conn = await Deno.connect({ transport: "unix", path: socketPath });
  await conn.write(new TextEncoder().encode(`${token}\n`));
  if (options.narrow) narrow(["net", "write"]);
  send = frameWriter(conn);
  const decoder = new FrameDecoder();
  try {
    for await (const chunk of conn.readable) {
      for (const body of decoder.push(chunk)) await onFrame(parseHostFrame(body));
    }
  } catch {
    // a reset connection: the service went away
  }
  if (report) reportPermissions();
  exit(0);
}

async function onFrame(frame: HostFrame | undefined): Promise<void> {
  switch (frame?.t) {
    case "config":
      builtins = frame.builtins;
      fresh = startWorker("fresh_worker.ts");
      await fresh.booted;
      send({ t: "ready" });
      return;
    case "run":
      // The code starts only once the service knows it was received.
      send({ t: "ack", id: frame.id });
      await route(frame);
      return;
    case "stop":
      if (active?.id === frame.id) flush(active.end, frame.id);
      send({ t: "stopped", id: frame.id });
      return;
    case "prepare":
      await startKept().booted;
      send({ t: "prepared" });
      return;
  }
}

/** Starts the kept worker (once); when it is loaded, the runner needs no permission at all. */
function startKept(): WorkerEnd {
  if (kept) return kept;
  kept = startWorker("context_worker.ts");
  kept.booted.then(() => narrow(PERMISSIONS));
  return kept;
}

async function route(frame: RunFrame): Promise<void> {
  let end: WorkerEnd;
  if (fresh && !freshUsed) {
    freshUsed = true;
    end = fresh;
  } else {
    end = startKept();
    await end.booted;
  }
  active = { id: frame.id, end };
  end.send(frame);
}

function startWorker(module: string): WorkerEnd {
  const worker = new Worker(new URL(`./${module}`, import.meta.url), {
    type: "module",
    deno: { permissions: "none" },
  });
  const buffer = createOutputBuffer();
  const booted = Promise.withResolvers<void>();
  const end: WorkerEnd = {
    worker,
    reader: new OutputReader(buffer),
    send: (frame) => worker.postMessage(frame),
    booted: booted.promise,
  };
  // The fresh worker's realm held user code: it serves nothing else after its run.
  const once = module === "fresh_worker.ts";
  worker.onmessage = (event) => {
    const message = event.data as Record<string, unknown>;
    const run = active?.end === end ? active : undefined;
    if (message?.t === "booted") booted.resolve();
    else if (message?.t === "drain" && run) flush(end, run.id);
    else if (message?.t === "done" && run && message.id === run.id) {
      flush(end, run.id);
      send(message);
      active = undefined;
      if (once) retireFresh();
    } else if (message?.t === "fatal") {
      console.error(`runner: worker boot failed: ${message.message}`);
      exit(3);
    }
  };
  worker.onerror = (event) => {
    // The worker handles user errors itself; one reaching here means it is broken.
    event.preventDefault();
    exit(3);
  };
  worker.onmessageerror = () => exit(3);
  worker.postMessage({ t: "boot", builtins, output: buffer });
  return end;
}

function retireFresh(): void {
  fresh?.worker.terminate();
  fresh = undefined;
}

/** Sends what the worker's ring holds as output frames of run `id`. */
function flush(end: WorkerEnd, id: number): void {
  let pending: { fd: 1 | 2; data: string } | undefined;
  for (const chunk of end.reader.drain()) {
    if (pending?.fd === chunk.fd) pending.data += chunk.data;
    else {
      if (pending) send({ t: "out", id, ...pending });
      pending = { ...chunk };
    }
  }
  if (pending) send({ t: "out", id, ...pending });
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

/** Serializes frame writes, coalescing frames queued while a write is under way. */
function frameWriter(conn: Deno.UnixConn): (frame: unknown) => void {
  const writer = conn.writable.getWriter();
  let queue: Uint8Array[] = [];
  let writing = false;
  async function flushQueue(): Promise<void> {
    writing = true;
    try {
      while (queue.length > 0) {
        const parts = queue;
        queue = [];
        await writer.write(parts.length === 1 ? parts[0] : join(parts));
      }
    } catch {
      exit(0);
    }
    writing = false;
  }
  return (frame) => {
    queue.push(encodeFrame(frame));
    if (!writing) flushQueue();
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
