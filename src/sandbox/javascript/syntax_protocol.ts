/**
 * The frames exchanged between the service and a syntax process over the process's stdin and
 * stdout. A frame is a 4-byte big-endian length of the rest, a 4-byte length of its header, the
 * header (UTF-8 JSON), then its payload: code and source maps travel as raw UTF-8 bytes, not as
 * JSON strings. Measured on 16 MiB of code: JSON-encoding it took the service's thread 360-600 ms
 * and parsing it back 100 ms; raw UTF-8, 80-100 ms and 2 ms. A source map the service only
 * keeps and sends back is never decoded by it at all.
 *
 * One request at a time; the process answers each with one frame. The service treats every byte
 * from the process as untrusted: {@link FrameReader} refuses a frame longer than the answer
 * expected before buffering it, and {@link parseAnswer} accepts only the shapes below.
 *
 * @module
 */

import type { SyntaxProblem } from "../../runtime.ts";

/** A language a syntax process prepares. */
export type ScriptLanguage = "javascript" | "typescript";

/** What is needed to map positions of transformed TypeScript back to the user's code. */
export interface Mapping {
  /** The transform's source map (UTF-8 JSON bytes; the service never reads them). */
  map: Uint8Array;
  /** Offset of the body in the transform's output (on its first line). */
  start: number;
}

/** Service → process: check `code` and, with `output`, return the JavaScript to run. */
export interface PrepareRequest {
  /** Frame type. */
  t: "prepare";
  /** Request number, echoed by the answer. */
  id: number;
  /** Language of `code`. */
  language: ScriptLanguage;
  /** The user's code (an async function body); the frame's payload. */
  code: string;
  /** Return the stripped code and its mapping (a run needs them, a validation does not). */
  output: boolean;
  /** Longest answer frame the service reads, in bytes; a longer one must not be sent. */
  maxAnswerBytes: number;
}

/** Service → process: map positions of transformed TypeScript back to the user's code. */
export interface MapRequest {
  /** Frame type. */
  t: "map";
  /** Request number, echoed by the answer. */
  id: number;
  /** The mapping a {@link PreparedAnswer} returned; its map is the frame's payload. */
  mapping: Mapping;
  /** 1-based `[line, column]` positions in the transformed code. */
  positions: [number, number][];
  /** Longest answer frame the service reads, in bytes. */
  maxAnswerBytes: number;
}

/** Every request the service sends. */
export type SyntaxRequest = PrepareRequest | MapRequest;

/** A request as the service builds it, before its process assigns `id` and `maxAnswerBytes`. */
export type RequestContent =
  | Omit<PrepareRequest, "id" | "maxAnswerBytes">
  | Omit<MapRequest, "id" | "maxAnswerBytes">;

/** Process → service: the parsers are loaded and warm. */
export interface ReadyAnswer {
  /** Frame type. */
  t: "ready";
}

/**
 * Process → service: the verdict on a {@link PrepareRequest}; with `ok`, the code and mapping
 * asked for (the payload).
 */
export type PreparedAnswer =
  & {
    /** Frame type. */
    t: "prepared";
    /** Request number. */
    id: number;
    /** Resident memory of the process after the request, in bytes. */
    rss: number;
  }
  & (
    | { ok: true; code?: string; mapping?: Mapping }
    | { ok: false; problem: SyntaxProblem; spent?: true }
  );

/** Process → service: the answer to a {@link MapRequest}, one entry per position. */
export interface MappedAnswer {
  /** Frame type. */
  t: "mapped";
  /** Request number. */
  id: number;
  /** The user's `[line, column]` of each position, `null` where none. */
  positions: ([number, number] | null)[];
  /** Resident memory of the process after the request, in bytes. */
  rss: number;
}

/** Every frame a syntax process may send. */
export type SyntaxAnswer = ReadyAnswer | PreparedAnswer | MappedAnswer;

/** One frame as read: its header (JSON text) and its payload bytes. */
export interface Frame {
  /** The header, JSON text. */
  header: string;
  /** The payload, raw bytes. */
  payload: Uint8Array;
}

/** Longest problem message the service accepts, in UTF-16 units (the process sends ≤ 513). */
const MAX_MESSAGE = 2048;
/** Longest header accepted: headers carry no code, only numbers and a problem message. */
const MAX_HEADER_BYTES = 64 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Encodes one frame: lengths, `header` as JSON, then `payload` as it is. */
export function encodeFrame(header: object, payload: readonly Uint8Array[] = []): Uint8Array {
  const head = encoder.encode(JSON.stringify(header));
  let length = 4 + head.length;
  for (const part of payload) length += part.length;
  const bytes = new Uint8Array(4 + length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, length);
  view.setUint32(4, head.length);
  bytes.set(head, 8);
  let offset = 8 + head.length;
  for (const part of payload) {
    bytes.set(part, offset);
    offset += part.length;
  }
  return bytes;
}

/** Encodes a request: the code, or the source map, is the payload. */
export function encodeRequest(request: SyntaxRequest): Uint8Array {
  if (request.t === "prepare") {
    const { code, ...header } = request;
    return encodeFrame(header, [encoder.encode(code)]);
  }
  const { mapping, ...header } = request;
  return encodeFrame({ ...header, start: mapping.start }, [mapping.map]);
}

/** Encodes an answer: code and source map, when there, are the payload. */
export function encodeAnswer(answer: SyntaxAnswer): Uint8Array {
  if (answer.t !== "prepared" || !answer.ok) return encodeFrame(answer);
  const { code, mapping, ...header } = answer;
  const parts: Uint8Array[] = [];
  const lengths: { codeBytes?: number; mapBytes?: number; start?: number } = {};
  if (code !== undefined) {
    parts.push(encoder.encode(code));
    lengths.codeBytes = parts[0].length;
  }
  if (mapping) {
    parts.push(mapping.map);
    lengths.mapBytes = mapping.map.length;
    lengths.start = mapping.start;
  }
  return encodeFrame({ ...header, ...lengths }, parts);
}

/**
 * Splits a byte stream into frames. The caller says, for each chunk, how long a frame may be; a
 * longer length prefix throws before its body is buffered. Chunks are kept in a list and
 * joined once per frame, so a large frame costs one copy.
 */
export class FrameReader {
  #chunks: Uint8Array[] = [];
  #buffered = 0;

  /**
   * Feeds bytes and returns the frames they complete.
   *
   * @throws {Error} when a frame is longer than `maxBytes` or its header is malformed.
   */
  push(chunk: Uint8Array, maxBytes: number): Frame[] {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    const frames: Frame[] = [];
    while (this.#buffered >= 4) {
      const length = new DataView(this.#peek(4).buffer).getUint32(0);
      if (length > maxBytes) {
        throw new Error(`expected a frame of at most ${maxBytes} bytes, got one of ${length}`);
      }
      if (this.#buffered < 4 + length) break;
      const bytes = this.#take(4 + length);
      const headerLength = length >= 4 ? new DataView(bytes.buffer).getUint32(4) : -1;
      if (headerLength < 0 || headerLength > length - 4 || headerLength > MAX_HEADER_BYTES) {
        throw new Error(`expected a frame header of at most ${MAX_HEADER_BYTES} bytes`);
      }
      frames.push({
        header: decoder.decode(bytes.subarray(8, 8 + headerLength)),
        payload: bytes.subarray(8 + headerLength),
      });
    }
    return frames;
  }

  /** The first `count` buffered bytes, as a copy. */
  #peek(count: number): Uint8Array {
    const bytes = new Uint8Array(count);
    let filled = 0;
    for (const chunk of this.#chunks) {
      const part = chunk.subarray(0, count - filled);
      bytes.set(part, filled);
      filled += part.length;
      if (filled === count) break;
    }
    return bytes;
  }

  /** Removes and returns the first `count` buffered bytes. */
  #take(count: number): Uint8Array {
    const bytes = this.#peek(count);
    let left = count;
    while (left > 0) {
      const first = this.#chunks[0];
      if (first.length <= left) {
        this.#chunks.shift();
        left -= first.length;
      } else {
        this.#chunks[0] = first.subarray(left);
        left = 0;
      }
    }
    this.#buffered -= count;
    return bytes;
  }
}

/**
 * Parses and checks a frame from a syntax process.
 *
 * @throws {Error} when it is not one of the {@link SyntaxAnswer} shapes.
 */
export function parseAnswer(frame: Frame): SyntaxAnswer {
  const fields = object(frame.header);
  const { payload } = frame;
  switch (fields.t) {
    case "ready":
      if (payload.length === 0) return { t: "ready" };
      break;
    case "prepared": {
      if (!isPositive(fields.id) || !isCount(fields.rss)) break;
      const head = { t: "prepared" as const, id: fields.id, rss: fields.rss };
      if (fields.ok === true) {
        const codeBytes = fields.codeBytes ?? 0;
        const mapBytes = fields.mapBytes ?? 0;
        if (!isCount(codeBytes) || !isCount(mapBytes)) break;
        if (codeBytes + mapBytes !== payload.length) break;
        const answer: PreparedAnswer = { ...head, ok: true };
        if (fields.codeBytes !== undefined) {
          answer.code = decoder.decode(payload.subarray(0, codeBytes));
        }
        if (fields.mapBytes !== undefined) {
          if (!isCount(fields.start)) break;
          answer.mapping = { map: payload.slice(codeBytes), start: fields.start };
        }
        return answer;
      }
      if (fields.ok === false && payload.length === 0) {
        const problem = parseProblem(fields.problem);
        if (!problem) break;
        return fields.spent === true
          ? { ...head, ok: false, problem, spent: true }
          : { ...head, ok: false, problem };
      }
      break;
    }
    case "mapped": {
      if (!isPositive(fields.id) || !isCount(fields.rss) || payload.length !== 0) break;
      if (!Array.isArray(fields.positions)) break;
      const positions: ([number, number] | null)[] = [];
      for (const position of fields.positions) {
        if (position === null) positions.push(null);
        else if (isPosition(position)) positions.push([position[0], position[1]]);
        else return unexpected(frame.header);
      }
      return { t: "mapped", id: fields.id, positions, rss: fields.rss };
    }
  }
  return unexpected(frame.header);
}

/**
 * Parses and checks a request (in the syntax process, from the service).
 *
 * @throws {Error} when it is not one of the {@link SyntaxRequest} shapes.
 */
export function parseRequest(frame: Frame): SyntaxRequest {
  const fields = object(frame.header);
  if (!isPositive(fields.id) || !isCount(fields.maxAnswerBytes)) return unexpected(frame.header);
  if (
    fields.t === "prepare" && typeof fields.output === "boolean" &&
    (fields.language === "javascript" || fields.language === "typescript")
  ) {
    return {
      t: "prepare",
      id: fields.id,
      language: fields.language,
      code: decoder.decode(frame.payload),
      output: fields.output,
      maxAnswerBytes: fields.maxAnswerBytes,
    };
  }
  if (
    fields.t === "map" && isCount(fields.start) && Array.isArray(fields.positions) &&
    fields.positions.every(isPosition)
  ) {
    return {
      t: "map",
      id: fields.id,
      mapping: { map: frame.payload, start: fields.start },
      positions: fields.positions as [number, number][],
      maxAnswerBytes: fields.maxAnswerBytes,
    };
  }
  return unexpected(frame.header);
}

function object(header: string): Record<string, unknown> {
  const value: unknown = JSON.parse(header);
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error("expected a frame header that is a JSON object");
  }
  return value as Record<string, unknown>;
}

function unexpected(header: string): never {
  throw new Error(`unexpected frame ${JSON.stringify(header.slice(0, 80))}`);
}

function parseProblem(value: unknown): SyntaxProblem | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const { message, line, column } = value as Record<string, unknown>;
  if (typeof message !== "string" || message.length > MAX_MESSAGE) return undefined;
  if (!isPositive(line) || !isPositive(column)) return undefined;
  return { message, line, column };
}

function isPosition(value: unknown): value is [number, number] {
  return Array.isArray(value) && value.length === 2 && isPositive(value[0]) &&
    isPositive(value[1]);
}

function isPositive(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 1;
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}
