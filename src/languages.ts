/**
 * Language names as clients spell them, mapped to the canonical names of the contract.
 *
 * @module
 */

import type { Language } from "./runtime.ts";

/** Every accepted spelling (lower case) and the canonical language it names. */
export const LANGUAGE_ALIASES: Readonly<Record<string, Language>> = {
  javascript: "javascript",
  js: "javascript",
  typescript: "typescript",
  ts: "typescript",
  python: "python",
  py: "python",
  python3: "python",
};

/** The canonical language for `name` (case-insensitive), or `undefined` when unknown. */
export function canonicalLanguage(name: string): Language | undefined {
  const key = name.trim().toLowerCase();
  return Object.hasOwn(LANGUAGE_ALIASES, key) ? LANGUAGE_ALIASES[key] : undefined;
}
