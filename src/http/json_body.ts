/**
 * The JSON body of a request, read once, with a size limit and a stall limit, whatever its
 * content type says. The route's validator then reads the parsed value from Hono's body cache
 * instead of reading the body again.
 *
 * Memory: a body with a `Content-Length` is read straight into one buffer of that size; one
 * without is gathered chunk by chunk and joined once. The buffer is dropped once decoded, so a
 * request holds about twice its body at the most (its text, then its parsed value) and never
 * more than the limit in bytes.
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
 * Reads the body as JSON: 413 past the limit (before reading when `Content-Length` says so),
 * 408 when it stalls, 400 naming `body` when it is empty, not UTF-8 or not JSON.
 */
export function jsonBody(options: JsonBodyOptions): MiddlewareHandler<AppEnv> {
  return async function jsonBody(c, next) {
    const raw = c.req.raw;
    const bytes = await readBody(raw, options);
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      throw invalidJson("the body is not valid UTF-8");
    }
    if (text === "") throw invalidJson("the body is empty; expected a JSON object");
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw invalidJson(errorMessage(error));
    }
    // The validator of the route reads `c.req.json()`, which answers from this cache, and
    // only for a JSON content type: give it one, whatever the client sent.
    const headers = new Headers(raw.headers);
    headers.set("Content-Type", "application/json");
    c.req.raw = new Request(raw.url, { method: raw.method, headers, signal: raw.signal });
    c.req.bodyCache.json = Promise.resolve(value);
    await next();
  };
}

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
  const reader = request.body.getReader();
  // With a declared length the body goes straight into its final buffer.
  const buffer = declared !== undefined ? new Uint8Array(declared) : undefined;
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (true) {
      const read = await withTimeout(reader.read(), stallTimeoutMs);
      if (read === undefined) {
        throw new HttpError(408, `request body stalled: no data for ${stallTimeoutMs} ms`, {
          reason: "body_timeout",
        });
      }
      if (read.done) break;
      const chunk = read.value;
      if (size + chunk.byteLength > (buffer?.byteLength ?? limitBytes)) throw tooLarge();
      if (buffer) buffer.set(chunk, size);
      else chunks.push(chunk);
      size += chunk.byteLength;
    }
  } catch (error) {
    await reader.cancel().catch(() => {});
    throw error;
  }
  if (buffer) return buffer.subarray(0, size);
  if (chunks.length === 1) return chunks[0];
  const joined = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks.splice(0)) {
    joined.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return joined;
}

function invalidJson(message: string): HttpError {
  return new HttpError(400, `invalid JSON body: ${message}`, {
    reason: "invalid_request",
    details: [{ field: "body", message }],
  });
}
