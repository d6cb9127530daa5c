/**
 * The frames exchanged between the service and a JS runner process over the runner's
 * connection (its stdin and stdout): a 4-byte big-endian length, then that many bytes of UTF-8
 * JSON. The host treats
 * every byte from a runner as untrusted: {@link parseRunnerFrame} accepts only the shapes
 * below and anything else means the runner is broken.
 *
 * @module
 */

/** Host → runner, first frame: what the runner needs to boot. */
export interface ConfigFrame {
  /** Frame type. */
  t: "config";
  /** Names of ECMAScript's globals (those of a fresh V8 context): all a realm keeps of its own. */
  builtins: string[];
}

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
}

/** Host → runner: the run overstayed; send what it printed, then expect to be killed. */
export interface StopFrame {
  /** Frame type. */
  t: "stop";
  /** Run number. */
  id: number;
}

/** Host → runner: boot the worker for later runs now, while the machine is idle. */
export interface PrepareFrame {
  /** Frame type. */
  t: "prepare";
}

/** Every frame the host sends. */
export type HostFrame = ConfigFrame | RunFrame | StopFrame | PrepareFrame;

/** Runner → host: the runner finished booting and waits for runs. */
export interface ReadyFrame {
  /** Frame type. */
  t: "ready";
}

/** Runner → host: the worker for later runs, asked for by a prepare frame, has booted. */
export interface PreparedFrame {
  /** Frame type. */
  t: "prepared";
}

/**
 * Runner → host: the runner received the run and is about to hand it to a worker. Until it
 * arrives no user code of that run can have started, so a runner dying before it is a start
 * failure (the job may go to another runner), after it a crash.
 */
export interface AckFrame {
  /** Frame type. */
  t: "ack";
  /** Run number. */
  id: number;
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

/** Runner → host: a run ended (the code settled, threw, or exited) and its code has stopped. */
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
  /** Set when the code called `Deno.exit`. */
  exited?: boolean;
  /** Set when code of an earlier run ran again: the runner must serve no other run. */
  leftover?: boolean;
}

/** Runner → host: everything a stopped run printed was sent. */
export interface StoppedFrame {
  /** Frame type. */
  t: "stopped";
  /** Run number. */
  id: number;
}

/** Every frame a runner may send. */
export type RunnerFrame =
  | ReadyFrame
  | PreparedFrame
  | AckFrame
  | OutputFrame
  | DoneFrame
  | StoppedFrame;

/** Largest frame either side accepts, in bytes. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

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
    case "prepared":
      return { t: "prepared" };
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
      if (frame.exited === true) done.exited = true;
      if (frame.leftover === true) done.leftover = true;
      return done;
    }
    case "ack":
    case "stopped":
      if (!isRunId(frame.id)) break;
      return { t: frame.t, id: frame.id };
  }
  throw new Error(`unexpected frame ${JSON.stringify(body.slice(0, 80))}`);
}

/** Parses a frame body from the host (trusted, but checked for shape all the same). */
export function parseHostFrame(body: string): HostFrame | undefined {
  const frame = JSON.parse(body) as Record<string, unknown>;
  switch (frame?.t) {
    case "config":
      if (Array.isArray(frame.builtins)) return frame as unknown as ConfigFrame;
      break;
    case "run":
      if (isRunId(frame.id) && typeof frame.code === "string") return frame as unknown as RunFrame;
      break;
    case "stop":
      if (isRunId(frame.id)) return frame as unknown as StopFrame;
      break;
    case "prepare":
      return { t: "prepare" };
  }
  return undefined;
}

function isRunId(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) > 0;
}

function optionalString(value: unknown): boolean {
  return value === undefined || typeof value === "string";
}
