/**
 * The wording of a syntax problem, modelled on V8's: the token a parser stopped at is named
 * the way V8 names it (`Unexpected token '}'`, `Unexpected identifier 'foo'`,
 * `Unexpected end of input`, `Unexpected number`, `Invalid or unexpected token`...), and the
 * messages of acorn and of the TypeScript parser are mapped to V8's where V8 has one. Pure
 * functions on text; they run in the syntax process, next to the parsers.
 *
 * @module
 */

/** Longest token quoted in a message; the rest is elided (a name can be megabytes long). */
const MAX_QUOTED = 64;

/** Words V8 reports as `Unexpected token '<word>'` (keywords and its contextual tokens). */
const TOKEN_WORDS = new Set([
  "break",
  "case",
  "catch",
  "class",
  "const",
  "continue",
  "debugger",
  "default",
  "delete",
  "do",
  "else",
  "export",
  "extends",
  "false",
  "finally",
  "for",
  "function",
  "if",
  "import",
  "in",
  "instanceof",
  "new",
  "null",
  "return",
  "super",
  "switch",
  "this",
  "throw",
  "true",
  "try",
  "typeof",
  "var",
  "void",
  "while",
  "with",
  "async",
  "get",
  "set",
  "of",
  "using",
  "accessor",
]);

/** Words reserved in every mode: `Unexpected reserved word` (`await` in an async body). */
const RESERVED_WORDS = new Set(["await", "enum"]);

/** Words reserved in strict mode only: an identifier otherwise. */
const STRICT_RESERVED_WORDS = new Set([
  "let",
  "static",
  "yield",
  "implements",
  "interface",
  "package",
  "private",
  "protected",
  "public",
]);

/** Punctuators, longest first, so the first match is the token. */
const PUNCTUATORS = [
  ">>>=",
  "...",
  "===",
  "!==",
  "**=",
  "<<=",
  ">>=",
  ">>>",
  "&&=",
  "||=",
  "??=",
  "=>",
  "==",
  "!=",
  "<=",
  ">=",
  "&&",
  "||",
  "??",
  "?.",
  "++",
  "--",
  "+=",
  "-=",
  "*=",
  "/=",
  "%=",
  "&=",
  "|=",
  "^=",
  "<<",
  ">>",
  "**",
  "{",
  "}",
  "(",
  ")",
  "[",
  "]",
  ";",
  ",",
  "<",
  ">",
  "+",
  "-",
  "*",
  "/",
  "%",
  "&",
  "|",
  "^",
  "!",
  "~",
  "?",
  ":",
  "=",
  ".",
];

/** V8 messages that only say which token came unexpectedly (the token is what counts). */
const TOKEN_MESSAGE =
  /^(Unexpected token\b|Unexpected identifier\b|Unexpected number$|Unexpected string$|Unexpected template string$|Unexpected end of input$|Invalid or unexpected token$|Unexpected reserved word$|Unexpected strict mode reserved word$)/;

const ID_START = /[\p{ID_Start}$_\\]/u;
const ID_PART = /^(?:[\p{ID_Continue}$\u200c\u200d]|\\u\{[0-9a-fA-F]+\}|\\u[0-9a-fA-F]{4})+/u;
const NUMBER =
  /^(?:0[xX][0-9a-fA-F](?:_?[0-9a-fA-F])*n?|0[oO][0-7](?:_?[0-7])*n?|0[bB][01](?:_?[01])*n?|(?:(?:0|[1-9](?:_?\d)*)n)|(?:(?:\d(?:_?\d)*)?\.?\d(?:_?\d)*|\d(?:_?\d)*\.)(?:[eE][+-]?\d(?:_?\d)*)?)/;

/** Options of {@link describeToken}. */
export interface DescribeOptions {
  /** The code is strict (a `"use strict"` directive): some words are then reserved. */
  strict?: boolean;
}

/**
 * What V8 says about the token that starts at `offset` of `code` when it did not expect it,
 * e.g. `Unexpected token '}'`, `Unexpected identifier 'foo'`, `Unexpected end of input`.
 * Whitespace and comments before the token are skipped.
 *
 * @example
 * ```ts
 * describeToken("let x = ;", 8); // "Unexpected token ';'"
 * ```
 */
export function describeToken(
  code: string,
  offset: number,
  options: DescribeOptions = {},
): string {
  const start = skipTrivia(code, Math.max(0, offset));
  if (start >= code.length) return "Unexpected end of input";
  const char = code[start];
  if (char === "#") {
    const name = ID_START.test(code[start + 1] ?? "") && code.slice(start + 1).match(ID_PART);
    return name ? `Unexpected identifier '${quoted(`#${name[0]}`)}'` : INVALID;
  }
  if (ID_START.test(char)) return describeWord(code.slice(start).match(ID_PART)?.[0], options);
  if (/\d/.test(char) || (char === "." && /\d/.test(code[start + 1] ?? ""))) {
    const number = code.slice(start).match(NUMBER)?.[0];
    // A number glued to an identifier (`3in`) or a malformed one (`0x`) is a scanner error.
    if (!number || ID_START.test(code[start + number.length] ?? "")) return INVALID;
    return "Unexpected number";
  }
  if (char === '"' || char === "'") {
    return stringEnd(code, start) === -1 ? INVALID : "Unexpected string";
  }
  if (char === "`") return "Unexpected template string";
  const punctuator = PUNCTUATORS.find((candidate) => code.startsWith(candidate, start));
  // `?.` followed by a digit is `?` and a number (`a?.5:b`).
  if (punctuator === "?." && /\d/.test(code[start + 2] ?? "")) return "Unexpected token '?'";
  return punctuator ? `Unexpected token '${punctuator}'` : INVALID;
}

const INVALID = "Invalid or unexpected token";

/** True when `message` (V8's) is only about which token came unexpectedly. */
export function isTokenMessage(message: string): boolean {
  return TOKEN_MESSAGE.test(message);
}

/** True when the function body `code` starts with a `"use strict"` directive. */
export function isStrictBody(code: string): boolean {
  return /^(?:\s|\/\/[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*(["'])use strict\1/.test(code);
}

/** A problem of a JS body as V8 and acorn saw it (see {@link javascriptMessage}). */
export interface JavaScriptProblem {
  /** V8's message. */
  v8Message: string;
  /** acorn's message, when acorn located the problem. */
  acornMessage?: string;
  /** Offset in the body where acorn located it. */
  offset?: number;
}

/**
 * V8's wording of a problem of the body `code`. V8's own message stands when it says more than
 * which token was unexpected (`missing ) after argument list`); when it only names a token, the
 * token is the one at the offset acorn located (V8 may name one of the lines it wraps a body
 * in, e.g. its closing brace where the input simply ended).
 */
export function javascriptMessage(code: string, problem: JavaScriptProblem): string {
  const { v8Message, acornMessage = "", offset } = problem;
  if (offset === undefined || !isTokenMessage(v8Message)) return bounded(v8Message);
  if (/^Unterminated template/.test(acornMessage)) return "Unterminated template literal";
  if (ACORN_SCANNER_ERRORS.test(acornMessage)) return INVALID;
  return describeToken(code, offset, { strict: isStrictBody(code) });
}

/** acorn messages for a token its scanner could not read: V8 says "Invalid or unexpected". */
const ACORN_SCANNER_ERRORS =
  /^(Unterminated string constant|Unexpected character|Expected number in radix|Invalid number|Identifier directly after number|Bad character escape sequence|Bad escape sequence|Invalid Unicode escape|Invalid escape sequence|Octal literal in strict mode|Numeric separator)/;

/** TypeScript parser messages and V8's words for the same problem. */
const TYPESCRIPT_MESSAGES: [RegExp, string][] = [
  [/^Unterminated string constant/, INVALID],
  [/^Unterminated template/, "Unterminated template literal"],
  [/^Unterminated regexp/, "Invalid regular expression: missing /"],
  [/^Identifier cannot follow number/, INVALID],
  [/^'const' declarations must be initialized/, "Missing initializer in const declaration"],
  [/^A 'break' statement can only be used/, "Illegal break statement"],
  [
    /^A 'continue' statement can only be used/,
    "Illegal continue statement: no surrounding iteration statement",
  ],
  [/^Return statement is not allowed here/, "Illegal return statement"],
];

/** TypeScript parser messages that only say a token was not the one expected there. */
const TYPESCRIPT_TOKEN_MESSAGE =
  /^(Expected\b|Expression expected|Unexpected token\b|Unexpected eof|Unexpected character|Syntax Error)/i;

/**
 * V8's wording of a problem the TypeScript parser reported (`message`) at `offset` of `code`:
 * a token complaint names the token as V8 would, a problem V8 knows takes V8's words, and a
 * problem of TypeScript's own syntax keeps the parser's words.
 */
export function typescriptMessage(
  code: string,
  problem: { message: string; offset: number },
): string {
  const { message, offset } = problem;
  for (const [pattern, wording] of TYPESCRIPT_MESSAGES) {
    if (pattern.test(message)) return wording;
  }
  if (TYPESCRIPT_TOKEN_MESSAGE.test(message)) {
    return describeToken(code, offset, { strict: isStrictBody(code) });
  }
  return bounded(message);
}

function describeWord(word: string | undefined, options: DescribeOptions): string {
  if (!word) return INVALID;
  const name = word.includes("\\") ? unescapeIdentifier(word) : word;
  if (name === undefined) return INVALID;
  if (word === name && TOKEN_WORDS.has(name)) return `Unexpected token '${name}'`;
  if (RESERVED_WORDS.has(name)) return "Unexpected reserved word";
  if (STRICT_RESERVED_WORDS.has(name) && options.strict) {
    return "Unexpected strict mode reserved word";
  }
  return `Unexpected identifier '${quoted(name)}'`;
}

function unescapeIdentifier(word: string): string | undefined {
  try {
    return word.replace(
      /\\u\{([0-9a-fA-F]+)\}|\\u([0-9a-fA-F]{4})/g,
      (_, braced, plain) => String.fromCodePoint(parseInt(braced ?? plain, 16)),
    );
  } catch {
    return undefined;
  }
}

/** Offset of the first character after whitespace, line terminators and comments. */
function skipTrivia(code: string, offset: number): number {
  let at = offset;
  while (at < code.length) {
    const char = code[at];
    if (/\s|\ufeff/.test(char)) {
      at++;
    } else if (code.startsWith("//", at)) {
      const end = code.slice(at).search(/[\n\r\u2028\u2029]/);
      at = end === -1 ? code.length : at + end;
    } else if (code.startsWith("/*", at)) {
      const end = code.indexOf("*/", at + 2);
      // An unclosed comment runs to the end of the input.
      at = end === -1 ? code.length : end + 2;
    } else {
      break;
    }
  }
  return at;
}

/** Offset after the string literal starting at `start`, or -1 when it is not closed. */
function stringEnd(code: string, start: number): number {
  const quote = code[start];
  for (let at = start + 1; at < code.length; at++) {
    const char = code[at];
    if (char === "\\") {
      at++;
      continue;
    }
    if (char === quote) return at + 1;
    if (char === "\n" || char === "\r") return -1;
  }
  return -1;
}

function quoted(text: string): string {
  return text.length > MAX_QUOTED ? `${text.slice(0, MAX_QUOTED)}…` : text;
}

/** Longest message passed on; V8 quotes names whole, and a name can be megabytes long. */
const MAX_MESSAGE = 512;

function bounded(message: string): string {
  const line = message.replace(/\s*\n\s*/g, " ");
  return line.length > MAX_MESSAGE ? `${line.slice(0, MAX_MESSAGE)}…` : line;
}
