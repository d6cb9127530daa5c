/**
 * The realm's evaluators: `eval`, `Function` and the constructors of async and generator
 * functions, which compile code from strings. Code compiled by them from a promise job has no
 * referrer, and would get the worker's module loader (so `import('node:…')`). In a first run's
 * realm they compile through the sandbox's compiler instead, where `import()` always fails; in a
 * kept runner's realm, which no user code may enter, they refuse.
 *
 * @module
 */

// deno-lint-ignore no-explicit-any
type AnyRecord = Record<string | symbol, any>;

const KINDS = [
  ["function", Function],
  ["async function", (async function () {}).constructor],
  ["function*", (function* () {}).constructor],
  ["async function*", (async function* () {}).constructor],
] as const;

/** Makes every evaluator compile with `compile` (see the module doc). */
export function compileEvaluatorsWith(
  compile: (source: string, specifier: string) => unknown,
): void {
  for (const [keyword, original] of KINDS) {
    const constructor = function (...args: unknown[]) {
      const body = args.length > 0 ? String(args[args.length - 1]) : "";
      const params = args.slice(0, -1).map(String).join(",");
      return compile(`(${keyword} anonymous(${params}\n) {\n${body}\n})`, "sandbox:function");
    };
    replace(original, constructor);
  }
  const evaluate = function (source: unknown) {
    return typeof source === "string" ? compile(source, "sandbox:eval") : source;
  };
  Object.defineProperty(evaluate, "name", { value: "eval" });
  Object.defineProperty(globalThis, "eval", {
    value: evaluate,
    writable: true,
    configurable: true,
  });
}

/** Makes every evaluator throw (see the module doc). */
export function refuseEvaluators(): void {
  const refuser = () =>
    function () {
      throw new TypeError("code generation from strings is not available here");
    };
  for (const [, original] of KINDS) replace(original, refuser());
  Object.defineProperty(globalThis, "eval", {
    value: refuser(),
    writable: true,
    configurable: true,
  });
}

/**
 * Puts `replacement` wherever `original` is reachable: its prototype's `constructor` and, for
 * `Function`, the global.
 */
function replace(original: AnyRecord, replacement: AnyRecord): void {
  const prototype = original.prototype;
  Object.defineProperty(replacement, "prototype", { value: prototype });
  Object.defineProperty(replacement, "name", { value: original.name });
  Object.defineProperty(prototype, "constructor", {
    value: replacement,
    writable: true,
    configurable: true,
  });
  if (original === Function) {
    Object.defineProperty(globalThis, "Function", {
      value: replacement,
      writable: true,
      configurable: true,
    });
  }
}
