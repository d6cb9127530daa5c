/**
 * The frames exchanged between the service and a JS runner process over the runner's unix
 * socket: a 4-byte big-endian length, then that many bytes of UTF-8 JSON. The host treats
 * every byte from a runner as untrusted: {@link parseRunnerFrame} accepts only the shapes
 * below and anything else means the runner is broken.
 *
 * @module
 */

/** Host → runner: run one piece of code. */
export interface RunFrame {
  /** Frame type. */
  t: "run";
  /** Run number, echoed by every frame of that run. */
  id: number;
  /** JavaScript function body (TypeScript already type-stripped). */
  code: string;
  /** File name shown in stack traces (`main.js` or `main.ts`). */
  file: string;
  /** `input` as JSON text; `undefined` when the request had none. */
  input?: string;
  /** Cap on each of stdout and stderr, in UTF-8 bytes. */
  maxOutputBytes: number;
  /**
   * The host keeps the runner for the tenant's later runs: the run gets a fresh vm context.
   * Without it the run may use the worker's own realm, and the runner serves no other run.
   */
  keep?: boolean;
}

/** Runner → host: the runner finished booting and waits for runs. */
export interface ReadyFrame {
  /** Frame type. */
  t: "ready";
}

/** Runner → host: console output of a run. */
export interface OutputFrame {
  /** Frame type. */
  t: "out";
  /** Run number. */
  id: number;
  /** 1 for stdout, 2 for stderr. */
  fd: 1 | 2;
  /** The text written. */
  data: string;
}

/** Runner → host: a run ended (the code settled, threw, or exited). */
export interface DoneFrame {
  /** Frame type. */
  t: "done";
  /** Run number. */
  id: number;
  /** Process-style exit code. */
  exitCode: number;
  /** The last `return_val(v)` argument, serialized. */
  explicit?: string;
  /** The returned value, serialized; absent when the body returned `undefined`. */
  returned?: string;
  /** Set when the run failed for lack of memory (an ArrayBuffer allocation failed). */
  memory?: boolean;
  /** Set when a return value was larger than the output cap. */
  oversized?: boolean;
  /** Set when the code called `Deno.exit`: the runner must not serve another run. */
  exited?: boolean;
}

/** Runner → host: the worker went idle after a run (no code of that run still busy). */
export interface IdleFrame {
  /** Frame type. */
  t: "idle";
  /** Run number. */
  id: number;
}

/**
 * Runner → host: the runner received the run and is about to hand it to its realm. Until it
 * arrives no user code of that run can have started, so a runner dying before it is a start
 * failure (the job may go to another runner), after it a crash.
 */
export interface AckFrame {
  /** Frame type. */
  t: "ack";
  /** Run number. */
  id: number;
}

/**
 * Runner → host: the realm refused the run without starting it, because an earlier run
 * changed the realm's globals or intrinsics. The runner must go; the run may go elsewhere.
 */
export interface RefusedFrame {
  /** Frame type. */
  t: "refused";
  /** Run number. */
  id: number;
}

/** Every frame a runner may send. */
export type RunnerFrame =
  | ReadyFrame
  | AckFrame
  | OutputFrame
  | DoneFrame
  | IdleFrame
  | RefusedFrame;

/** Largest frame either side accepts, in bytes. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

/** Largest `data` chunk of one output frame, in UTF-16 code units. */
export const OUTPUT_CHUNK = 64 * 1024;

const encoder = new TextEncoder();

/** Encodes one frame: length prefix and JSON. */
export function encodeFrame(frame: unknown): Uint8Array {
  const body = encoder.encode(JSON.stringify(frame));
  const bytes = new Uint8Array(4 + body.length);
  new DataView(bytes.buffer).setUint32(0, body.length);
  bytes.set(body, 4);
  return bytes;
}

/** Splits a byte stream into frame bodies (JSON text), rejecting oversized frames. */
export class FrameDecoder {
  #buffer: Uint8Array = new Uint8Array(0);
  #decoder = new TextDecoder("utf-8", { fatal: true });
  #maxBytes: number;

  /** Creates a decoder that refuses frames larger than `maxBytes`. */
  constructor(maxBytes: number = MAX_FRAME_BYTES) {
    this.#maxBytes = maxBytes;
  }

  /** Feeds bytes and returns the complete frame bodies they finish; throws on a bad frame. */
  push(chunk: Uint8Array): string[] {
    this.#buffer = this.#buffer.length === 0 ? chunk : concat(this.#buffer, chunk);
    const bodies: string[] = [];
    let offset = 0;
    while (this.#buffer.length - offset >= 4) {
      const view = new DataView(this.#buffer.buffer, this.#buffer.byteOffset + offset, 4);
      const length = view.getUint32(0);
      if (length > this.#maxBytes) {
        throw new Error(`frame of ${length} bytes exceeds the limit of ${this.#maxBytes}`);
      }
      if (this.#buffer.length - offset - 4 < length) break;
      const body = this.#buffer.subarray(offset + 4, offset + 4 + length);
      bodies.push(this.#decoder.decode(body));
      offset += 4 + length;
    }
    this.#buffer = this.#buffer.slice(offset);
    return bodies;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a, 0);
  joined.set(b, a.length);
  return joined;
}

/** Parses and checks a frame body from a runner; throws when it is not a valid frame. */
export function parseRunnerFrame(body: string): RunnerFrame {
  const value: unknown = JSON.parse(body);
  if (typeof value !== "object" || value === null) throw new Error("frame is not an object");
  const frame = value as Record<string, unknown>;
  switch (frame.t) {
    case "ready":
      return { t: "ready" };
    case "out":
      if (!isRunId(frame.id) || (frame.fd !== 1 && frame.fd !== 2)) break;
      if (typeof frame.data !== "string") break;
      return { t: "out", id: frame.id, fd: frame.fd, data: frame.data };
    case "done": {
      if (!isRunId(frame.id) || !Number.isInteger(frame.exitCode)) break;
      if (!optionalString(frame.explicit) || !optionalString(frame.returned)) break;
      const done: DoneFrame = { t: "done", id: frame.id, exitCode: frame.exitCode as number };
      if (frame.explicit !== undefined) done.explicit = frame.explicit as string;
      if (frame.returned !== undefined) done.returned = frame.returned as string;
      if (frame.memory === true) done.memory = true;
      if (frame.oversized === true) done.oversized = true;
      if (frame.exited === true) done.exited = true;
      return done;
    }
    case "idle":
      if (!isRunId(frame.id)) break;
      return { t: "idle", id: frame.id };
    case "ack":
      if (!isRunId(frame.id)) break;
      return { t: "ack", id: frame.id };
    case "refused":
      if (!isRunId(frame.id)) break;
      return { t: "refused", id: frame.id };
  }
  throw new Error(`unexpected frame ${JSON.stringify(body.slice(0, 80))}`);
}

function isRunId(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) > 0;
}

function optionalString(value: unknown): boolean {
  return value === undefined || typeof value === "string";
}
