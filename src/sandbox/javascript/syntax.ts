/**
 * Parsing of user code in the service process, never executing it: TypeScript type
 * stripping (positions preserved, so stack traces and errors point at the user's lines) and
 * syntax checks of a JS async function body with 1-based line/column of the first error.
 *
 * @module
 */

// The static import keeps amaro in the module graph (installed, locked, typed); calls go
// through `stripper`, which can be reloaded (see loadStripper).
import type { transformSync } from "amaro";
import "amaro";
import * as acorn from "acorn";
import { createRequire } from "node:module";
import type { SyntaxProblem } from "../../runtime.ts";

const require = createRequire(import.meta.url);

interface Stripper {
  transformSync: typeof transformSync;
}

/**
 * Loads a fresh copy of amaro. Its wasm parser is left unusable by some inputs (e.g. nesting
 * deep enough to exhaust its stack: "memory access out of bounds" from then on), so after
 * such a failure the module is dropped from the require cache and loaded anew.
 */
function loadStripper(): Stripper {
  for (const key of Object.keys(require.cache)) {
    if (key.includes("/amaro/")) delete require.cache[key];
  }
  return require("amaro") as Stripper;
}

let stripper = loadStripper();

/** Result of {@link stripTypes}: JavaScript, or the syntax problem that prevented it. */
export type StripResult = { ok: true; code: string } | { ok: false; problem: SyntaxProblem };

// Code is parsed as the body of this function so top-level `return` and `await` parse;
// on the first line, so lines keep their numbers and only line-1 columns shift.
const PREFIX = "async function __body__(){";
const SUFFIX = "\n}";

const AsyncFunction = (async () => {}).constructor as new (body: string) => unknown;

interface AmaroError {
  code?: string;
  message?: string;
  startLine?: number;
  startColumn?: number;
}

/**
 * Removes TypeScript types from a function body. Erasable syntax is blanked out in place
 * (same lines and columns); syntax that needs code (enums, namespaces) is transformed.
 */
export function stripTypes(code: string): StripResult {
  const source = PREFIX + code + SUFFIX;
  try {
    const stripped = stripper.transformSync(source, { mode: "strip-only" }).code;
    return { ok: true, code: stripped.slice(PREFIX.length, stripped.length - SUFFIX.length) };
  } catch (error) {
    const failure = error as AmaroError;
    if (failure.code !== "UnsupportedSyntax") return { ok: false, problem: failed(failure) };
  }
  try {
    const transformed = stripper.transformSync(source, { mode: "transform" }).code;
    const start = transformed.indexOf("{") + 1;
    const end = transformed.lastIndexOf("}");
    return { ok: true, code: transformed.slice(start, end) };
  } catch (error) {
    return { ok: false, problem: failed(error as AmaroError) };
  }
}

/** A syntax problem from amaro's error; an internal failure also replaces the parser. */
function failed(error: AmaroError): SyntaxProblem {
  if (error.code === "InvalidSyntax" || error.code === "UnsupportedSyntax") {
    return amaroProblem(error);
  }
  stripper = loadStripper();
  return {
    message: `the TypeScript parser gave up on this code (${error.message ?? "unknown error"})`,
    line: 1,
    column: 1,
  };
}

function amaroProblem(error: AmaroError): SyntaxProblem {
  const line = error.startLine ?? 1;
  const column = (error.startColumn ?? 0) + 1 - (line === 1 ? PREFIX.length : 0);
  return {
    message: error.message ?? "invalid TypeScript",
    line,
    column: Math.max(1, column),
  };
}

/**
 * Checks that `code` is a valid async function body. V8 decides (it is what will run the
 * code); acorn locates the error, since V8 does not report where a body fails to parse.
 */
export function checkSyntax(code: string): SyntaxProblem | null {
  try {
    new AsyncFunction(code);
    return null;
  } catch (error) {
    const v8Message = error instanceof Error ? error.message : String(error);
    return locate(code) ?? { message: v8Message, line: 1, column: 1 };
  }
}

/**
 * Where the body fails to parse. It is parsed as a program that allows top-level `return` and
 * `await` (the same grammar for a body), which stops at a stray `}` where it stands; inside a
 * function it would close the body early and the error land later, or on our closing line.
 * The function parse remains for what the program parse accepts.
 */
function locate(code: string): SyntaxProblem | null {
  return parseError(
    code,
    { allowReturnOutsideFunction: true, allowAwaitOutsideFunction: true },
    0,
  ) ??
    parseError(PREFIX + code + SUFFIX, {}, PREFIX.length);
}

function parseError(
  source: string,
  options: Partial<acorn.Options>,
  firstLineShift: number,
): SyntaxProblem | null {
  try {
    acorn.parse(source, { ...options, ecmaVersion: "latest", sourceType: "script" });
    return null;
  } catch (error) {
    const failure = error as { message?: string; loc?: { line: number; column: number } };
    if (!failure.loc) return null;
    const { line, column } = failure.loc;
    return {
      message: (failure.message ?? "syntax error").replace(/ \(\d+:\d+\)$/, ""),
      line,
      column: Math.max(1, column + 1 - (line === 1 ? firstLineShift : 0)),
    };
  }
}
