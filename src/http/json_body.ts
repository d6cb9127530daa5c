/**
 * The JSON body of a request, read once, with a size limit and a stall limit, whatever its
 * content type says. The route's validator then reads the parsed value from Hono's body cache
 * instead of reading the body again.
 *
 * Memory: a body Deno serves as a byte stream (any large one) is read straight into one
 * buffer, sized by `Content-Length` or grown by doubling without one (a BYOB read: no chunk is
 * allocated and then copied); another stream is copied chunk by chunk into such a buffer. The
 * buffer is decoded in one go and dropped before parsing: decoding chunk by chunk and joining
 * the pieces was measured at 32 MiB more for a 32 MiB body, and gathering chunks first needed
 * a V8 heap 30 % larger for four 33 MiB bodies at once (tests/http_server_test.ts).
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import { withTimeout } from "../async.ts";
import { errorMessage } from "../errors.ts";
import type { AppEnv } from "./context.ts";
import { HttpError } from "./errors.ts";

/** Limits of {@link jsonBody}. */
export interface JsonBodyOptions {
  /** Largest body, bytes; a larger one is a 413. */
  limitBytes: number;
  /** Longest wait for the next chunk of the body, ms; a longer one is a 408. */
  stallTimeoutMs: number;
}

/**
 * Deepest nesting of arrays and objects a body may have (the body itself is level 1). Deeper
 * JSON is refused before it is parsed: V8 takes seconds to parse a few million levels and
 * overflows its stack to serialize them again, and Python's json module stops near 1000.
 */
export const MAX_JSON_DEPTH = 512;

/**
 * Reads the body as JSON: 413 past the limit (before reading when `Content-Length` says so),
 * 408 when it stalls, 400 naming `body` when it is empty, not UTF-8, nested deeper than
 * {@link MAX_JSON_DEPTH} or not JSON.
 */
export function jsonBody(options: JsonBodyOptions): MiddlewareHandler<AppEnv> {
  return async function jsonBody(c, next) {
    const raw = c.req.raw;
    // Neither the bytes nor their text outlive the parse: a run holds only the parsed value.
    const value = parseBody(await readBody(raw, options));
    // The validator of the route reads `c.req.json()`, which answers from this cache, and
    // only for a JSON content type: give it one, whatever the client sent.
    const headers = new Headers(raw.headers);
    headers.set("Content-Type", "application/json");
    c.req.raw = new Request(raw.url, { method: raw.method, headers, signal: raw.signal });
    c.req.bodyCache.json = Promise.resolve(value);
    await next();
  };
}

/** The JSON value of a body, or the 400 that names what is wrong with it. */
function parseBody(bytes: Uint8Array): unknown {
  if (nestingExceeds(bytes, MAX_JSON_DEPTH)) {
    throw invalidJson(`arrays and objects are nested deeper than ${MAX_JSON_DEPTH} levels`);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw invalidJson("the body is not valid UTF-8");
  }
  if (text === "") throw invalidJson("the body is empty; expected a JSON object");
  try {
    return JSON.parse(text);
  } catch (error) {
    throw invalidJson(errorMessage(error));
  }
}

/** First buffer for a body without `Content-Length`; it doubles as the body grows. */
const FIRST_BUFFER_BYTES = 64 * 1024;

/** The body's bytes: at most `limitBytes`, no read waiting more than `stallTimeoutMs`. */
async function readBody(request: Request, options: JsonBodyOptions): Promise<Uint8Array> {
  const { limitBytes, stallTimeoutMs } = options;
  const tooLarge = () =>
    new HttpError(413, `request body is larger than the limit of ${limitBytes} bytes`, {
      reason: "body_too_large",
    });
  const header = request.headers.get("Content-Length");
  const declared = header !== null && /^\d+$/.test(header) ? Number(header) : undefined;
  if (declared !== undefined && declared > limitBytes) throw tooLarge();
  if (!request.body) return new Uint8Array(0);
  // One byte past the limit tells a body over it from one exactly at it.
  const capacity = declared ?? limitBytes + 1;
  let buffer = new Uint8Array(Math.min(capacity, FIRST_BUFFER_BYTES));
  let size = 0;
  /** Room for `more` bytes past `size`, growing by doubling; false once past capacity. */
  const reserve = (more: number) => {
    if (size + more > capacity) return false;
    if (size + more > buffer.byteLength) {
      let length = buffer.byteLength * 2;
      while (length < size + more) length *= 2;
      const grown = new Uint8Array(Math.min(length, capacity));
      grown.set(buffer.subarray(0, size));
      buffer = grown;
    }
    return true;
  };
  const stalled = () =>
    new HttpError(408, `request body stalled: no data for ${stallTimeoutMs} ms`, {
      reason: "body_timeout",
    });
  // A byte stream is read straight into the buffer; any other stream chunk by chunk.
  const reader = isByteStream(request.body)
    ? request.body.getReader({ mode: "byob" })
    : request.body.getReader();
  try {
    while (true) {
      if (reader instanceof ReadableStreamBYOBReader) {
        if (!reserve(1)) break;
        const view = new Uint8Array(buffer.buffer, size, buffer.byteLength - size);
        const read = await withTimeout(reader.read(view), stallTimeoutMs);
        if (read === undefined) throw stalled();
        // Each read takes the buffer (transferred) and hands it back, the last one too.
        if (read.value) buffer = new Uint8Array(read.value.buffer);
        if (read.done) break;
        size += read.value.byteLength;
      } else {
        const read = await withTimeout(reader.read(), stallTimeoutMs);
        if (read === undefined) throw stalled();
        if (read.done) break;
        if (!reserve(read.value.byteLength)) throw tooLarge();
        buffer.set(read.value, size);
        size += read.value.byteLength;
      }
    }
    if (size > limitBytes) throw tooLarge();
  } catch (error) {
    await reader.cancel().catch(() => {});
    throw error;
  }
  reader.releaseLock();
  return buffer.subarray(0, size);
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACKET = 0x5b;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACKET = 0x5d;
const CLOSE_BRACE = 0x7d;

/**
 * True when the JSON text in `bytes` opens more than `limit` arrays and objects inside one
 * another. Brackets inside strings do not count; strings are skipped with `indexOf`, so a
 * body that is mostly code costs little. Malformed JSON is left for the parser to name.
 */
export function nestingExceeds(bytes: Uint8Array, limit: number): boolean {
  let depth = 0;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i];
    if (byte === QUOTE) {
      i = closingQuote(bytes, i);
      if (i < 0) return false;
    } else if (byte === OPEN_BRACKET || byte === OPEN_BRACE) {
      if (++depth > limit) return true;
    } else if (byte === CLOSE_BRACKET || byte === CLOSE_BRACE) {
      depth--;
    }
  }
  return false;
}

/** Index of the quote that ends the string opened at `open`, or -1 when none does. */
function closingQuote(bytes: Uint8Array, open: number): number {
  let at = bytes.indexOf(QUOTE, open + 1);
  while (at >= 0) {
    let backslashes = 0;
    while (bytes[at - 1 - backslashes] === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return at;
    at = bytes.indexOf(QUOTE, at + 1);
  }
  return -1;
}

/** True when `stream` can be read into a buffer of ours (a byte stream). */
function isByteStream(stream: ReadableStream<Uint8Array>): boolean {
  try {
    stream.getReader({ mode: "byob" }).releaseLock();
    return true;
  } catch {
    return false;
  }
}

function invalidJson(message: string): HttpError {
  return new HttpError(400, `invalid JSON body: ${message}`, {
    reason: "invalid_request",
    details: [{ field: "body", message }],
  });
}
