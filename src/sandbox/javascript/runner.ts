/**
 * Entry of a JS runner process. It connects to the host's unix socket (the only thing its
 * permissions allow), starts the no-permission worker that runs user code, and relays frames
 * between the two. It never looks inside user results: the host checks every frame.
 *
 * Usage: `deno run <flags> runner.ts <socket path>`.
 *
 * @module
 */

import { encodeFrame, FrameDecoder, type RunFrame } from "./protocol.ts";

/** Runs the runner: connect, boot the worker, relay until the host goes away. */
export async function main(args: readonly string[] = Deno.args): Promise<void> {
  const socketPath = args[0];
  if (!socketPath) {
    console.error("runner: expected the socket path as the first argument");
    Deno.exit(2);
  }
  const conn = await Deno.connect({ transport: "unix", path: socketPath });
  const send = frameWriter(conn);
  const worker = new Worker(new URL("./worker.ts", import.meta.url), {
    type: "module",
    deno: { permissions: "none" },
  });
  const booted = Promise.withResolvers<void>();
  worker.onerror = (event) => {
    // The worker handles user errors itself; one reaching here means it is broken.
    event.preventDefault();
    console.error(`runner: worker failed: ${event.message}`);
    Deno.exit(3);
  };
  worker.onmessageerror = () => Deno.exit(3);
  worker.onmessage = (event: MessageEvent) => {
    const message = event.data as { t?: unknown };
    if (message?.t === "booted") booted.resolve();
    else if (message?.t === "fatal") {
      console.error(`runner: worker boot failed: ${(message as { message?: unknown }).message}`);
      Deno.exit(3);
    } else send(message);
  };
  await booted.promise;
  send({ t: "ready" });

  const decoder = new FrameDecoder();
  for await (const chunk of conn.readable) {
    for (const body of decoder.push(chunk)) {
      const frame = JSON.parse(body) as RunFrame;
      if (frame.t === "run") worker.postMessage(frame);
    }
  }
  // The host closed the socket: nothing more to do.
  Deno.exit(0);
}

/** Serializes frame writes, coalescing frames queued while a write is under way. */
function frameWriter(conn: Deno.UnixConn): (frame: unknown) => void {
  const writer = conn.writable.getWriter();
  let queue: Uint8Array[] = [];
  let writing = false;
  async function flush(): Promise<void> {
    writing = true;
    try {
      while (queue.length > 0) {
        const parts = queue;
        queue = [];
        await writer.write(parts.length === 1 ? parts[0] : join(parts));
      }
    } catch {
      Deno.exit(0);
    }
    writing = false;
  }
  return (frame) => {
    queue.push(encodeFrame(frame));
    if (!writing) flush();
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
