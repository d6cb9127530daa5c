/**
 * The API key guard: every path but the open ones needs the key, as a Bearer token or in
 * `X-API-Key`. Keys are compared as SHA-256 digests, in constant time, and both headers are
 * always checked, so timing says nothing about the key or which header held it.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "./context.ts";
import { HttpError } from "./errors.ts";

/** Refuses with 401 any request to a guarded path without the right key. */
export function apiKey(
  key: string,
  options: { isOpen: (path: string) => boolean },
): MiddlewareHandler<AppEnv> {
  const expected = digest(key);
  return async function apiKey(c, next) {
    if (options.isOpen(c.req.path)) return next();
    const authorization = c.req.header("Authorization") ?? "";
    const bearer = /^Bearer\s+(.+)$/i.exec(authorization)?.[1]?.trim();
    const candidates = [bearer, c.req.header("X-API-Key")?.trim()];
    let ok = false;
    for (const candidate of candidates) {
      if (candidate !== undefined && constantTimeEqual(await digest(candidate), await expected)) {
        ok = true;
      }
    }
    if (!ok) {
      throw new HttpError(
        401,
        "missing or wrong API key; send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        { reason: "unauthorized", headers: { "WWW-Authenticate": "Bearer" } },
      );
    }
    return next();
  };
}

async function digest(text: string): Promise<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** Compares two digests of equal length without an early exit. */
function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let difference = a.length ^ b.length;
  for (let i = 0; i < Math.min(a.length, b.length); i++) difference |= a[i] ^ b[i];
  return difference === 0;
}
