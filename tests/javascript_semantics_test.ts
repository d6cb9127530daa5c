/**
 * The JS/TS run semantics of the wire contract, proven through the Runtime interface on
 * real runner processes.
 */

import {
  assert,
  assertEquals,
  assertMatch,
  assertStringIncludes,
  run,
  SEED,
  startRuntime,
} from "./javascript_helpers.ts";
import type { Runtime } from "../src/runtime.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
let runtime: Runtime;

Deno.test("semantics: runtime starts and serves javascript and typescript", opts, async () => {
  runtime = await startRuntime();
  assertEquals([...runtime.languages], ["javascript", "typescript"]);
  assert(runtime.info().available);
});

Deno.test("semantics: the seed example prints Hello World and returns 42", opts, async () => {
  const outcome = await run(runtime, SEED);
  assertEquals(outcome.stdout, "Hello World\n");
  assertEquals(outcome.stderr, "");
  assertEquals(outcome.retVal, "42");
  assertEquals(outcome.status, "success");
  assertEquals(outcome.exitCode, 0);
  assertEquals(outcome.truncated, false);
  assertEquals(outcome.error, undefined);
  assert(outcome.instanceId.length > 0);
});

Deno.test("semantics: code is an async function body with top-level await", opts, async () => {
  const outcome = await run(
    runtime,
    "const v = await new Promise((r) => setTimeout(() => r(5), 5));\nreturn v * 2;",
  );
  assertEquals(outcome.retVal, "10");
  assertEquals(outcome.status, "success");
});

Deno.test("semantics: returned values are serialized as JSON", opts, async () => {
  assertEquals((await run(runtime, "return 'hi'")).retVal, '"hi"');
  assertEquals((await run(runtime, "return {a: [1, true, null]}")).retVal, '{"a":[1,true,null]}');
  assertEquals((await run(runtime, "return null")).retVal, "null");
  assertEquals((await run(runtime, "return 10n")).retVal, "10");
  const cyclic = await run(runtime, "const o = {}; o.o = o; return o");
  assertEquals(cyclic.retVal, "[object Object]");
});

Deno.test(
  "semantics: return_val sets ret_val verbatim for strings, JSON otherwise",
  opts,
  async () => {
    assertEquals((await run(runtime, "return_val('plain text')")).retVal, "plain text");
    assertEquals((await run(runtime, "return_val({score: 1})")).retVal, '{"score":1}');
    assertEquals((await run(runtime, "return_val(1); return_val(2)")).retVal, "2");
    assertEquals((await run(runtime, "return_val('explicit'); return 5")).retVal, "explicit");
  },
);

Deno.test("semantics: without a return value, ret_val comes from stdout rules", opts, async () => {
  const markers = await run(
    runtime,
    "console.log('log');\nconsole.log('__COZE_RETURN_VAL_START__');\n" +
      "console.log(JSON.stringify({score: 0.5}));\nconsole.log('__COZE_RETURN_VAL_END__');",
  );
  assertEquals(markers.retVal, '{"score":0.5}');
  assertEquals(markers.stdout, "log\n");
  const jsonLine = await run(runtime, "console.log('x'); console.log(JSON.stringify({ok: true}))");
  assertEquals(jsonLine.retVal, '{"ok":true}');
  assertEquals(jsonLine.stdout, "x\n");
  const none = await run(runtime, "console.log('nothing')");
  assertEquals(none.retVal, "");
  assertEquals(none.stdout, "nothing\n");
});

Deno.test("semantics: input is the request's JSON, undefined when absent", opts, async () => {
  const given = await run(
    runtime,
    "return {kind: typeof input, isObject: input instanceof Object, v: input.a[1]}",
    { input: { a: [1, 2] } },
  );
  assertEquals(given.retVal, '{"kind":"object","isObject":true,"v":2}');
  const absent = await run(runtime, "return typeof input");
  assertEquals(absent.retVal, '"undefined"');
});

Deno.test(
  "semantics: console.log/info/debug go to stdout, error/warn to stderr",
  opts,
  async () => {
    const outcome = await run(
      runtime,
      "console.log('a', 1); console.info('b'); console.debug('c');\nconsole.error('d'); console.warn('e');",
    );
    assertEquals(outcome.stdout, "a 1\nb\nc\n");
    assertEquals(outcome.stderr, "d\ne\n");
  },
);

Deno.test("semantics: console output is formatted as Deno formats it", opts, async () => {
  const outcome = await run(
    runtime,
    "console.log({a: [1, {b: 2}]}, new Map([[1, 'x']])); console.log('%s=%d', 'n', 5);",
  );
  assertEquals(outcome.stdout, '{ a: [ 1, { b: 2 } ] } Map(1) { 1 => "x" }\nn=5\n');
});

Deno.test(
  "semantics: an uncaught exception is status error with the user's line",
  opts,
  async () => {
    const outcome = await run(runtime, "const a = 1;\n\nthrow new Error('boom');");
    assertEquals(outcome.status, "error");
    assertEquals(outcome.exitCode, 1);
    assertEquals(outcome.error, undefined);
    assertStringIncludes(outcome.stderr, "Uncaught Error: boom");
    assertStringIncludes(outcome.stderr, "main.js:3:7");
    assert(!outcome.stderr.includes("worker.ts"), outcome.stderr);
  },
);

Deno.test("semantics: a thrown non-error value is reported too", opts, async () => {
  const outcome = await run(runtime, "throw {code: 7}");
  assertEquals(outcome.status, "error");
  assertStringIncludes(outcome.stderr, "Uncaught { code: 7 }");
});

Deno.test("semantics: a syntax error is status error with its position", opts, async () => {
  const outcome = await run(runtime, "let a = 1;\nlet = = 2;");
  assertEquals(outcome.status, "error");
  assertEquals(outcome.exitCode, 1);
  assertStringIncludes(outcome.stderr, "SyntaxError");
  assertStringIncludes(outcome.stderr, "main.js:2:7");
});

Deno.test("semantics: TypeScript is type-stripped, not type-checked", opts, async () => {
  const outcome = await run(
    runtime,
    "interface P { n: number }\nconst p: P = {n: 2} as P;\nconst wrong: string = 3 as unknown as string;\n" +
      "function id<T>(x: T): T { return x }\nreturn id<number>(p.n) + (wrong as any);",
    { language: "typescript" },
  );
  assertEquals(outcome.status, "success", outcome.stderr);
  assertEquals(outcome.retVal, "5");
});

Deno.test(
  "semantics: TypeScript enums work (they need code, not only stripping)",
  opts,
  async () => {
    const outcome = await run(runtime, "enum Color { Red = 1, Blue }\nreturn Color.Blue;", {
      language: "typescript",
    });
    assertEquals(outcome.retVal, "2");
  },
);

Deno.test("semantics: TypeScript stack traces keep the user's line numbers", opts, async () => {
  const outcome = await run(
    runtime,
    "type A = {\n  x: number;\n};\nconst a: A = {x: 1};\nthrow new Error('ts ' + a.x);",
    { language: "typescript" },
  );
  assertEquals(outcome.status, "error");
  assertStringIncludes(outcome.stderr, "Uncaught Error: ts 1");
  assertStringIncludes(outcome.stderr, "main.ts:5:7");
});

Deno.test(
  "semantics: a TypeScript syntax error is status error with its position",
  opts,
  async () => {
    const outcome = await run(runtime, "const a: number = 1;\nlet b: = 2;", {
      language: "typescript",
    });
    assertEquals(outcome.status, "error");
    assertEquals(outcome.exitCode, 1);
    assertStringIncludes(outcome.stderr, "SyntaxError");
    assertStringIncludes(outcome.stderr, "main.ts:2:8");
  },
);

Deno.test(
  "semantics: TypeScript that must be transformed (enum, namespace, parameter property) keeps the user's positions",
  opts,
  async () => {
    const cases: [string, string][] = [
      ["enum E { A, B }\nconst y = E.B;\nthrow new Error(String(y));", "at main.ts:3:7"],
      ["namespace N { export const a = 1 }\nthrow new Error(String(N.a))", "at main.ts:2:7"],
      [
        "class C {\n  constructor(private p: number) {}\n  m() { throw new Error('m') }\n}\nnew C(2).m();",
        "at C.m (main.ts:3:15)\n    at main.ts:5:10",
      ],
    ];
    for (const [code, frames] of cases) {
      const outcome = await run(runtime, code, { language: "typescript" });
      assertEquals(outcome.status, "error");
      assertStringIncludes(outcome.stderr, frames);
    }
    const logged = await run(runtime, "enum E { A }\nconsole.log(new Error('x').stack)", {
      language: "typescript",
    });
    assertStringIncludes(logged.stdout, "at main.ts:2:13");
    const invalid = await runtime.validate("enum E { A }\nconst x = ;", "typescript");
    assertEquals([invalid.error?.line, invalid.error?.column], [2, 11]);
    const read = await run(
      runtime,
      "enum E { A = 1 }\nconst e = new Error('x');\nreturn e.stack;",
      {
        language: "typescript",
      },
    );
    assertStringIncludes(read.retVal, "main.ts:2:11");
  },
);

Deno.test("semantics: input null and input arrays are passed as they are", opts, async () => {
  assertEquals((await run(runtime, "return input", { input: null })).retVal, "null");
  assertEquals(
    (await run(runtime, "return Array.isArray(input) && input.length", { input: [1, 2, 3] }))
      .retVal,
    "3",
  );
});

Deno.test("semantics: an unhandled rejection is status error", opts, async () => {
  const outcome = await run(
    runtime,
    "Promise.reject(new Error('lost'));\nawait new Promise((r) => setTimeout(r, 50));\nreturn 1;",
  );
  assertEquals(outcome.status, "error");
  assertEquals(outcome.exitCode, 1);
  assertStringIncludes(outcome.stderr, "Uncaught (in promise) Error: lost");
});

Deno.test("semantics: an error thrown in a timer callback is status error", opts, async () => {
  const outcome = await run(
    runtime,
    "setTimeout(() => { throw new Error('late') }, 1);\nawait new Promise((r) => setTimeout(r, 50));",
  );
  assertEquals(outcome.status, "error");
  assertStringIncludes(outcome.stderr, "Uncaught Error: late");
});

Deno.test(
  "semantics: clearTimeout and clearInterval cancel timers by handle or by number, in every run",
  opts,
  async () => {
    // A cancelled 1 ms timer would fire before the 20 ms one the code waits for last.
    const code = `const fired = [];
const t = setTimeout(() => fired.push("by handle"), 1);
clearTimeout(t);
const n = setTimeout(() => fired.push("by number"), 1);
clearTimeout(Number(n));
const early = setInterval(() => fired.push("interval"), 1);
clearInterval(early);
clearImmediate(setImmediate(() => fired.push("immediate")));
await new Promise((resolve) => setImmediate(resolve));
let ticks = 0;
await new Promise((resolve) => {
  const i = setInterval(() => { if (++ticks === 3) { clearInterval(i); resolve(); } }, 1);
});
await new Promise((r) => setTimeout(r, 20));
return { fired, ticks };`;
    // A tenant's first run runs in its runner's worker realm, later ones in vm contexts.
    const first = await run(runtime, code, { tenant: "clear-timers" });
    const second = await run(runtime, code, { tenant: "clear-timers" });
    const third = await run(runtime, code, { tenant: "clear-timers" });
    assertEquals(third.instanceId, second.instanceId);
    for (const outcome of [first, second, third]) {
      assertEquals(outcome.status, "success", outcome.stderr);
      assertEquals(outcome.retVal, '{"fired":[],"ticks":3}');
    }
  },
);

Deno.test("semantics: Deno.exit(n) ends the run with exit code n", opts, async () => {
  const failed = await run(runtime, "console.log('before');\nDeno.exit(7);\nconsole.log('after');");
  assertEquals(failed.status, "error");
  assertEquals(failed.exitCode, 7);
  assertEquals(failed.stdout, "before\n");
  const clean = await run(runtime, "return_val('ok'); Deno.exit(0);");
  assertEquals(clean.status, "success");
  assertEquals(clean.exitCode, 0);
  assertEquals(clean.retVal, "ok");
  assertEquals((await run(runtime, SEED)).retVal, "42");
});

Deno.test(
  "semantics: runs of one tenant reuse a runner but each gets a fresh realm",
  opts,
  async () => {
    await run(runtime, "return 0", { tenant: "realm" });
    const first = await run(runtime, "globalThis.leak = 1; var v = 2; return 1", {
      tenant: "realm",
    });
    const second = await run(runtime, "return [typeof leak, typeof v]", { tenant: "realm" });
    assertEquals(second.instanceId, first.instanceId);
    assertEquals(second.retVal, '["undefined","undefined"]');
  },
);

Deno.test("semantics: runs of different tenants never share a runner", opts, async () => {
  const a = await run(runtime, "return 1", { tenant: "tenant-a" });
  const b = await run(runtime, "return 1", { tenant: "tenant-b" });
  const anonymous = await run(runtime, "return 1");
  const anonymousAgain = await run(runtime, "return 1");
  const ids = new Set([
    a.instanceId,
    b.instanceId,
    anonymous.instanceId,
    anonymousAgain.instanceId,
  ]);
  assertEquals(ids.size, 4);
});

Deno.test("semantics: validate accepts a valid async function body", opts, async () => {
  assertEquals(await runtime.validate("const x = await 1;\nreturn x;", "javascript"), {
    valid: true,
    error: null,
  });
  assertEquals(await runtime.validate("let n: number = 1;\nreturn n;", "typescript"), {
    valid: true,
    error: null,
  });
});

Deno.test("semantics: validate reports line and column in the user's code", opts, async () => {
  const js = await runtime.validate("const a = 1;\nconst b = ;\n", "javascript");
  assertEquals(js.valid, false);
  assertEquals(js.error?.line, 2);
  assertEquals(js.error?.column, 11);
  const firstLine = await runtime.validate("let = = 2", "javascript");
  assertEquals(firstLine.error?.line, 1);
  assertEquals(firstLine.error?.column, 7);
  const ts = await runtime.validate("const a = 1;\nlet b: = 2;", "typescript");
  assertEquals(ts.valid, false);
  assertEquals(ts.error?.line, 2);
  assertEquals(ts.error?.column, 8);
  assertMatch(ts.error?.message ?? "", /./);
});

Deno.test("semantics: validate rejects code that escapes the function body", opts, async () => {
  const escaped = await runtime.validate(
    "}); globalThis.x = 1; (async function () {",
    "javascript",
  );
  assertEquals(escaped.valid, false);
});

Deno.test(
  "semantics: a brace that closes the function body early is reported where it stands",
  opts,
  async () => {
    const stray = await runtime.validate("}", "javascript");
    assertEquals([stray.valid, stray.error?.line, stray.error?.column], [false, 1, 1]);
    // Valid as a program once the body is closed: only the brace at 1:10 is wrong.
    const closed = await runtime.validate("return 1 }\nfunction x() {", "javascript");
    assertEquals([closed.valid, closed.error?.line, closed.error?.column], [false, 1, 10]);
    const ran = await run(runtime, "console.log(1)\n}\nreturn 2");
    assertEquals(ran.status, "error");
    assertStringIncludes(ran.stderr, "main.js:2:1");
    for (const [code, line, column] of [["let x: number = 1;\n}", 2, 1], ["}", 1, 1]] as const) {
      const ts = await runtime.validate(code, "typescript");
      assertEquals([ts.valid, ts.error?.line, ts.error?.column], [false, line, column]);
    }
  },
);

Deno.test("semantics: validate never runs the code", opts, async () => {
  const marker = await Deno.makeTempFile();
  await runtime.validate(`Deno.writeTextFileSync(${JSON.stringify(marker)}, "ran")`, "javascript");
  assertEquals(await Deno.readTextFile(marker), "");
  await Deno.remove(marker);
});

Deno.test("semantics: runtime shuts down and leaves no runner", opts, async () => {
  await runtime.shutdown();
  assertEquals(runtime.info().available, false);
});
