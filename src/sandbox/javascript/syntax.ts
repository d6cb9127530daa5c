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
import { originalPositionFor, TraceMap } from "@jridgewell/trace-mapping";
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

/**
 * Maps a 1-based line and column of stripped code back to the user's TypeScript; `undefined`
 * where the code has no source there.
 */
export type PositionMap = (line: number, column: number) => SourcePosition | undefined;

/** A 1-based position in the user's code. */
export interface SourcePosition {
  /** 1-based line. */
  line: number;
  /** 1-based column. */
  column: number;
}

/**
 * Result of {@link stripTypes}: JavaScript, or the syntax problem that prevented it. `positions`
 * is there when the code had to be transformed (its lines moved); stripped code keeps them.
 */
export type StripResult =
  | { ok: true; code: string; positions?: PositionMap }
  | { ok: false; problem: SyntaxProblem };

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
    if (failure.code !== "UnsupportedSyntax") return { ok: false, problem: located(code, failure) };
  }
  let output: { code: string; map?: string };
  try {
    output = stripper.transformSync(source, { mode: "transform", sourceMap: true });
  } catch (error) {
    return { ok: false, problem: located(code, error as AmaroError) };
  }
  const transformed = output.code;
  const start = transformed.indexOf("{") + 1;
  const end = transformed.lastIndexOf("}");
  const body = transformed.slice(start, end);
  if (!output.map) return { ok: true, code: body };
  return { ok: true, code: body, positions: sourcePositions(output.map, start) };
}

/**
 * The {@link PositionMap} of transformed code that starts at `start` of the transformer's output
 * (on its first line), through the output's source map to the user's code after our PREFIX.
 */
function sourcePositions(map: string, start: number): PositionMap {
  const trace = new TraceMap(map);
  return (line, column) => {
    const generated = { line, column: column - 1 + (line === 1 ? start : 0) };
    const original = originalPositionFor(trace, generated);
    if (original.line === null || original.column === null) return undefined;
    const shift = original.line === 1 ? PREFIX.length : 0;
    return { line: original.line, column: Math.max(1, original.column + 1 - shift) };
  };
}

/**
 * Rewrites `file:line:column` positions in `text` (stack frames) with `positions`; a position
 * without a source stays as it is.
 */
export function mapPositions(text: string, file: string, positions: PositionMap): string {
  if (!text.includes(file)) return text;
  const escaped = file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return text.replace(new RegExp(`${escaped}:(\\d+):(\\d+)`, "g"), (match, line, column) => {
    const source = positions(Number(line), Number(column));
    return source ? `${file}:${source.line}:${source.column}` : match;
  });
}

/**
 * The problem of a body that failed to parse inside our function. When that lands after the
 * user's lines (a stray `}` closed the function early, so our closing brace is what fails), the
 * code alone is parsed for where it really goes wrong.
 */
function located(code: string, error: AmaroError): SyntaxProblem {
  const problem = failed(error);
  if (problem.line <= code.split("\n").length) return problem;
  try {
    stripper.transformSync(code, { mode: "strip-only" });
  } catch (bare) {
    const failure = bare as AmaroError;
    if (failure.code === "InvalidSyntax" && failure.startLine !== undefined) {
      return {
        message: failure.message ?? problem.message,
        line: failure.startLine,
        column: (failure.startColumn ?? 0) + 1,
      };
    }
  }
  return problem;
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
