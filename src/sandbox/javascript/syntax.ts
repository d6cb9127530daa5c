/**
 * Parsing of user code, never executing it: TypeScript type stripping (positions preserved,
 * so stack traces and errors point at the user's lines), syntax checks of a JS async function
 * body with the first problem at its 1-based line and column in V8's words, and the mapping of
 * positions in transformed TypeScript back to the user's code.
 *
 * This module runs only inside a syntax process (syntax_main.ts), never in the service: its
 * parsers take time and memory that grow with the input, and worse on hostile input (a
 * 60 KiB TypeScript input takes the TypeScript parser 11 s; inputs that break the parser's
 * wasm leave it unusable).
 *
 * @module
 */

import { transformSync } from "amaro";
import * as acorn from "acorn";
import type { SyntaxProblem } from "../../runtime.ts";
import { SourceMap } from "./source_map.ts";
import { javascriptMessage, typescriptMessage } from "./syntax_message.ts";
import type { Mapping, ScriptLanguage } from "./syntax_protocol.ts";

/**
 * Result of {@link prepareSource}: the JavaScript to run, or the first syntax problem.
 * `mapping` is there when TypeScript had to be transformed (its lines moved); stripped code
 * keeps them. `spent` says the TypeScript parser broke on the input and must not be used
 * again (its wasm state is corrupt): the process that ran it must be replaced.
 */
export type Prepared =
  | { ok: true; code: string; mapping?: Mapping }
  | { ok: false; problem: SyntaxProblem; spent?: true };

// Code is parsed as the body of this function so top-level `return` and `await` parse;
// on the first line, so lines keep their numbers and only line-1 columns shift.
const PREFIX = "async function __body__(){";
const SUFFIX = "\n}";

const AsyncFunction = (async () => {}).constructor as new (body: string) => unknown;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface AmaroError {
  code?: string;
  message?: string;
  startLine?: number;
  startColumn?: number;
}

/**
 * The JavaScript a runner runs for `code`, checked as an async function body, or the first
 * syntax problem at the user's position (also when TypeScript had to be transformed).
 */
export function prepareSource(code: string, language: ScriptLanguage): Prepared {
  if (language === "javascript") {
    const problem = checkSyntax(code);
    return problem ? { ok: false, problem } : { ok: true, code };
  }
  const stripped = stripTypes(code);
  if (!stripped.ok) return stripped;
  const problem = checkSyntax(stripped.code);
  if (!problem) return stripped;
  if (!stripped.mapping) return { ok: false, problem };
  const map = new SourceMap(decoder.decode(stripped.mapping.map));
  const at = sourcePosition(map, stripped.mapping.start, [problem.line, problem.column]);
  return { ok: false, problem: at ? { ...problem, line: at[0], column: at[1] } : problem };
}

/**
 * The user's positions of 1-based `[line, column]` positions in transformed code described by
 * `mapping`; `null` where the code has no source there.
 */
export function originalPositions(
  mapping: Mapping,
  positions: readonly (readonly [number, number])[],
): ([number, number] | null)[] {
  const map = new SourceMap(decoder.decode(mapping.map));
  return positions.map((position) => sourcePosition(map, mapping.start, position) ?? null);
}

/**
 * Removes TypeScript types from a function body. Erasable syntax is blanked out in place
 * (same lines and columns); syntax that needs code (enums, namespaces) is transformed.
 */
function stripTypes(code: string): Prepared {
  const source = PREFIX + code + SUFFIX;
  try {
    const stripped = transformSync(source, { mode: "strip-only" }).code;
    return { ok: true, code: stripped.slice(PREFIX.length, stripped.length - SUFFIX.length) };
  } catch (error) {
    const failure = error as AmaroError;
    if (!isParserVerdict(failure)) return gaveUp(failure);
    if (failure.code !== "UnsupportedSyntax") return typescriptProblem(code, failure);
  }
  let output: { code: string; map?: string };
  try {
    output = transformSync(source, { mode: "transform", sourceMap: true });
  } catch (error) {
    const failure = error as AmaroError;
    return isParserVerdict(failure) ? typescriptProblem(code, failure) : gaveUp(failure);
  }
  const transformed = output.code;
  const start = transformed.indexOf("{") + 1;
  const end = transformed.lastIndexOf("}");
  const body = transformed.slice(start, end);
  if (!output.map) return { ok: true, code: body };
  return { ok: true, code: body, mapping: { map: encoder.encode(output.map), start } };
}

/** The user's 1-based position of a 1-based position in the transformed body. */
function sourcePosition(
  map: SourceMap,
  start: number,
  [line, column]: readonly [number, number],
): [number, number] | undefined {
  const original = map.originalPosition({
    line,
    column: column - 1 + (line === 1 ? start : 0),
  });
  if (!original) return undefined;
  const shift = original.line === 1 ? PREFIX.length : 0;
  return [original.line, Math.max(1, original.column + 1 - shift)];
}

/** True for amaro's verdicts on the code; anything else means its parser broke. */
function isParserVerdict(error: AmaroError): boolean {
  return error.code === "InvalidSyntax" || error.code === "UnsupportedSyntax";
}

/**
 * The parser broke (its wasm ran out of stack on deep nesting: "memory access out of bounds")
 * and is unusable from now on.
 */
function gaveUp(error: AmaroError): Prepared {
  const reason = String(error?.message ?? error ?? "unknown error").split("\n")[0].slice(0, 200);
  return {
    ok: false,
    problem: {
      message: `the TypeScript parser gave up on this code (${reason})`,
      line: 1,
      column: 1,
    },
    spent: true,
  };
}

/**
 * The problem of TypeScript that failed to parse inside our function, in V8's words. When that
 * lands after the user's lines (a stray `}` closed the function early, so our closing brace is
 * what fails), the code alone is parsed for where it really goes wrong. When the code read as
 * JavaScript (its earlier lines stripped of their types) fails at the same place, the JavaScript
 * check's problem is the one given, so a problem reads the same in both languages.
 */
function typescriptProblem(code: string, error: AmaroError): Prepared {
  let problem = amaroProblem(error, PREFIX.length);
  if (problem.line > lineCount(code)) {
    try {
      transformSync(code, { mode: "strip-only" });
    } catch (bare) {
      const failure = bare as AmaroError;
      if (!isParserVerdict(failure)) return gaveUp(failure);
      if (failure.code === "InvalidSyntax" && failure.startLine !== undefined) {
        problem = amaroProblem(failure, 0);
      }
    }
  }
  const offset = offsetOf(code, problem.line, problem.column);
  const message = typescriptMessage(code, { message: problem.message, offset });
  const view = javascriptView(code, problem.line);
  if (!view.ok) return view;
  const asJavaScript = checkSyntax(view.code);
  // The parsers may place one problem a character apart (`const x;`: at `x` or at `;`).
  if (
    asJavaScript?.line === problem.line &&
    (asJavaScript.column === problem.column || asJavaScript.message === message)
  ) {
    return { ok: false, problem: asJavaScript };
  }
  return { ok: false, problem: { ...problem, message } };
}

/**
 * `code` read as JavaScript up to `line`: the lines before it with their types stripped in
 * place, when they strip on their own (they end between statements), and the rest as it is.
 * Positions are those of `code`.
 */
function javascriptView(code: string, line: number): Prepared {
  const start = offsetOf(code, line, 1);
  if (start === 0) return { ok: true, code };
  try {
    const head = transformSync(PREFIX + code.slice(0, start) + SUFFIX, { mode: "strip-only" }).code;
    return {
      ok: true,
      code: head.slice(PREFIX.length, head.length - SUFFIX.length) + code.slice(start),
    };
  } catch (error) {
    const failure = error as AmaroError;
    return isParserVerdict(failure) ? { ok: true, code } : gaveUp(failure);
  }
}

function amaroProblem(error: AmaroError, firstLineShift: number): SyntaxProblem {
  const line = error.startLine ?? 1;
  const column = (error.startColumn ?? 0) + 1 - (line === 1 ? firstLineShift : 0);
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
function checkSyntax(code: string): SyntaxProblem | null {
  try {
    new AsyncFunction(code);
    return null;
  } catch (error) {
    const v8Message = error instanceof Error ? error.message : String(error);
    const located = locate(code);
    if (!located) return { message: javascriptMessage(code, { v8Message }), line: 1, column: 1 };
    return {
      message: javascriptMessage(code, {
        v8Message,
        acornMessage: located.message,
        offset: located.offset,
      }),
      line: located.line,
      column: located.column,
    };
  }
}

/** Where acorn stops parsing a body: its message and position. */
interface Located {
  message: string;
  /** Offset in the body. */
  offset: number;
  /** 1-based line. */
  line: number;
  /** 1-based column. */
  column: number;
}

/**
 * Where the body fails to parse. It is parsed as a program that allows top-level `return` and
 * `await` (the same grammar for a body), which stops at a stray `}` where it stands; inside a
 * function it would close the body early and the error land later, or on our closing line.
 * The function parse remains for what the program parse accepts.
 */
function locate(code: string): Located | null {
  return parseError(
    code,
    { allowReturnOutsideFunction: true, allowAwaitOutsideFunction: true },
    0,
  ) ??
    parseError(PREFIX + code + SUFFIX, {}, PREFIX.length, code.length);
}

function parseError(
  source: string,
  options: Partial<acorn.Options>,
  shift: number,
  length = source.length,
): Located | null {
  try {
    acorn.parse(source, { ...options, ecmaVersion: "latest", sourceType: "script" });
    return null;
  } catch (error) {
    const failure = error as {
      message?: string;
      pos?: number;
      loc?: { line: number; column: number };
    };
    if (!failure.loc || typeof failure.pos !== "number") return null;
    const { line, column } = failure.loc;
    return {
      message: (failure.message ?? "syntax error").replace(/ \(\d+:\d+\)$/, ""),
      offset: Math.min(length, Math.max(0, failure.pos - shift)),
      line,
      column: Math.max(1, column + 1 - (line === 1 ? shift : 0)),
    };
  }
}

function lineCount(code: string): number {
  let lines = 1;
  for (let at = code.indexOf("\n"); at !== -1; at = code.indexOf("\n", at + 1)) lines++;
  return lines;
}

/** Offset of a 1-based line and column (UTF-16 units, as parsers count them) in `code`. */
function offsetOf(code: string, line: number, column: number): number {
  let start = 0;
  for (let current = 1; current < line; current++) {
    const next = code.indexOf("\n", start);
    if (next === -1) return code.length;
    start = next + 1;
  }
  return Math.min(code.length, start + column - 1);
}
