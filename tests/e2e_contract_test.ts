/**
 * The wire contract, literally, through HTTP against the real service (main.ts) with both
 * real runtimes: one service shared by every step. With FAAS_TEST_URL set, against the
 * service running there instead (a container: deploy/container_test.sh).
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "./helpers/assert.ts";
import { postJson, runCode, serviceUnderTest } from "./e2e_helpers.ts";
import { bodyLimitBytes, parseConfig } from "../src/config.ts";

const MAX_OUTPUT = 4096;
const MEMORY_MB = 128;

Deno.test({
  name: "e2e: the contract through HTTP for JavaScript, TypeScript and Python",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await using service = await serviceUnderTest({
      FAAS_MAX_OUTPUT_BYTES: String(MAX_OUTPUT),
      FAAS_MEMORY_LIMIT_MB: String(MEMORY_MB),
    });
    const { url } = service;
    // One tenant by default: its runs reuse warm sandboxes, which keeps the suite fast.
    const run = (request: Record<string, unknown>) =>
      runCode(url, { ext: { space_id: "contract" }, ...request });

    await t.step("the seed examples answer the documented 200 in every language", async () => {
      const js = await run({
        language: "javascript",
        code: "console.log('Hello World'); return 42;",
      });
      assertEquals(js.output, { stdout: "Hello World\n", stderr: "", ret_val: "42" });
      assertEquals(js.error, "");
      assertEquals(js.metadata.status, "success");
      assertEquals(js.metadata.exit_code, 0);
      assertEquals(js.metadata.language, "javascript");
      assertEquals(js.metadata.truncated, false);
      assert(js.metadata.task_id.length > 0 && js.metadata.instance_id.length > 0);
      const ts = await run({
        language: "typescript",
        code: "const n: number = 42;\nconsole.log('Hello World');\nreturn n;",
      });
      assertEquals(ts.output, { stdout: "Hello World\n", stderr: "", ret_val: "42" });
      assertEquals(ts.metadata.language, "typescript");
      const py = await run({ language: "python", code: "print('Hello World')\n42" });
      assertEquals(py.output, { stdout: "Hello World\n", stderr: "", ret_val: "42" });
      assertEquals(py.metadata.language, "python");
      assertEquals(py.error, "");
    });

    await t.step("language aliases in any case map to the canonical names", async () => {
      const cases: [string, string, string][] = [
        ["JS", "javascript", "return 1"],
        ["JavaScript", "javascript", "return 1"],
        ["Ts", "typescript", "const x: number = 1; return x"],
        ["TYPESCRIPT", "typescript", "return 1"],
        ["Py", "python", "1"],
        ["PYTHON3", "python", "1"],
        ["Python", "python", "1"],
      ];
      for (const [alias, canonical, code] of cases) {
        const answer = await run({ language: alias, code });
        assertEquals(answer.metadata.language, canonical, alias);
        assertEquals(answer.output.ret_val, "1", alias);
      }
    });

    await t.step("the Go client's request shape (ext, priority, 5000 ms) runs", async () => {
      const answer = await run({
        language: "python",
        code: "print('ok')",
        timeout: 5000,
        priority: "normal",
        ext: { space_id: "123" },
        unknown_field: true,
      });
      assertEquals(answer.output.stdout, "ok\n");
    });

    await t.step("ret_val precedence in JavaScript", async () => {
      const cases: [string, string][] = [
        ["return_val('verbatim'); return 5;", "verbatim"],
        ["return_val({a: 1}); return 5;", '{"a":1}'],
        ["return_val(7); console.log('{\"x\": 1}');", "7"],
        ["return 'hi';", '"hi"'],
        ["return {a: [1, 'x']};", '{"a":[1,"x"]}'],
        ["return null;", "null"],
        ["return 10n;", "10"],
        ["return undefined;", ""],
        ["console.log('no return');", ""],
      ];
      for (const [code, expected] of cases) {
        assertEquals((await run({ language: "js", code })).output.ret_val, expected, code);
      }
      const fn = await run({ language: "js", code: "return () => 1;" });
      assertEquals(fn.output.ret_val, "() => 1");
    });

    await t.step("ret_val precedence in Python", async () => {
      const cases: [string, string][] = [
        ["return_val('verbatim')\n5", "verbatim"],
        ["return_val({'a': 1})\n5", '{"a": 1}'],
        ["return_val(7)\nprint('{\"x\": 1}')", "7"],
        ["{'b': [1, 2], 'c': None}", '{"b": [1, 2], "c": null}'],
        ["'hi'", '"hi"'],
        ["1.5", "1.5"],
        ["None", ""],
        ["x = 5", ""],
        ["def f():\n    return 1\nf()", "1"],
      ];
      for (const [code, expected] of cases) {
        assertEquals((await run({ language: "python", code })).output.ret_val, expected, code);
      }
      const object = await run({ language: "python", code: "class A: pass\nA()" });
      assertMatch(object.output.ret_val, /^<__main__\.A object at 0x[0-9a-f]+>$/);
    });

    await t.step("the marker block and the JSON-line rule take text out of stdout", async () => {
      const marker = '__COZE_RETURN_VAL_START__\\n{\\"score\\": 1}\\n__COZE_RETURN_VAL_END__';
      for (
        const [language, code] of [
          ["js", `console.log("log 1"); console.log("${marker}"); console.log("log 2");`],
          ["python", `print("log 1")\nprint("${marker}")\nprint("log 2")`],
        ]
      ) {
        const answer = await run({ language, code });
        assertEquals(answer.output.ret_val, '{"score": 1}', language);
        assertEquals(answer.output.stdout, "log 1\nlog 2\n", language);
      }
      for (
        const [language, code] of [
          ["js", `console.log("a"); console.log(JSON.stringify({s: 1})); console.log("[1]");`],
          ["python", `import json\nprint("a")\nprint(json.dumps({"s": 1}))\nprint("[1]")`],
        ]
      ) {
        const answer = await run({ language, code });
        assertEquals(answer.output.ret_val.replace(/\s/g, ""), '{"s":1}', language);
        assertEquals(answer.output.stdout, "a\n[1]\n", language);
      }
      // The evaluator template: a function that prints its result between the markers.
      const evaluator = [
        "def return_val(value):",
        "    print('__COZE_RETURN_VAL_START__')",
        "    print(value)",
        "    print('__COZE_RETURN_VAL_END__')",
        "def exec_evaluation(turn):",
        "    print('scoring', turn['id'])",
        "    return {'score': 0.5, 'reason': 'half'}",
        "import json",
        "return_val(json.dumps(exec_evaluation({'id': 7})))",
      ].join("\n");
      const answer = await run({ language: "python", code: evaluator });
      assertEquals(JSON.parse(answer.output.ret_val), { score: 0.5, reason: "half" });
      assertEquals(answer.output.stdout, "scoring 7\n");
    });

    await t.step("evaluator-shaped programs with their own printing return_val", async () => {
      // The platform wraps user evaluators in programs that define their own return_val:
      // JavaScript's prints the value as a line, Python's prints it between the markers.
      const jsEvaluator = [
        "function return_val(value) { console.log(value == null ? '' : String(value)); }",
        "class EvalOutput { constructor(score, reason) { this.score = score; this.reason = reason; } }",
        "const turn = { eval_target: { actual_output: 'hello 🌍' } };",
        "function exec_evaluation(turn) {",
        "  console.log('checking', turn.eval_target.actual_output);",
        "  return new EvalOutput(0.5, 'half 中文');",
        "}",
        "(function () {",
        "  let result = null;",
        "  try { result = exec_evaluation(turn); } catch (error) {",
        "    console.error(error.constructor.name + ': ' + error.message);",
        "    process.exit(1);",
        "  }",
        "  return_val(JSON.stringify(result));",
        "})();",
      ].join("\n");
      const js = await run({ language: "js", code: jsEvaluator, timeout: 5000 });
      assertEquals(js.output.stdout, "checking hello 🌍\n");
      assertEquals(JSON.parse(js.output.ret_val), { score: 0.5, reason: "half 中文" });
      const jsFailing = await run({
        language: "js",
        code: jsEvaluator.replace("console.log('checking'", "null.x; console.log('checking'"),
      });
      assertEquals([jsFailing.metadata.status, jsFailing.metadata.exit_code], ["error", 1]);
      assertStringIncludes(jsFailing.output.stderr, "TypeError");
      assertEquals([jsFailing.output.ret_val, jsFailing.error], ["", ""]);

      const pyEvaluator = [
        "import json",
        "import sys",
        "import asyncio",
        "from dataclasses import dataclass",
        "def return_val(value):",
        "    print('__COZE_RETURN_VAL_START__')",
        "    print('' if value is None else str(value))",
        "    print('__COZE_RETURN_VAL_END__')",
        "@dataclass",
        "class EvalOutput:",
        "    score: float",
        "    reason: str",
        "turn = {'eval_target': {'actual_output': 'hello 🌍'}}",
        "def exec_evaluation(turn):",
        "    print('checking', turn['eval_target']['actual_output'])",
        "    return EvalOutput(score=0.5, reason='half 中文')",
        "try:",
        "    result = exec_evaluation(turn)",
        "except Exception as e:",
        "    print(f'{type(e).__name__}: {e}', file=sys.stderr)",
        "    sys.exit(1)",
        "return_val(json.dumps({'score': result.score, 'reason': result.reason}))",
      ].join("\n");
      const py = await run({ language: "python", code: pyEvaluator, timeout: 5000 });
      assertEquals(py.output.stdout, "checking hello 🌍\n");
      assertEquals(JSON.parse(py.output.ret_val), { score: 0.5, reason: "half 中文" });
      const pyFailing = await run({
        language: "python",
        code: pyEvaluator.replace(
          "    print('checking'",
          "    raise KeyError('x')\n    print('checking'",
        ),
      });
      assertEquals([pyFailing.metadata.status, pyFailing.metadata.exit_code], ["error", 1]);
      assertEquals(pyFailing.output.stderr, "KeyError: 'x'\n");

      // The syntax check the platform runs through /run_code with a 10 s timeout.
      const jsCheck = (code: string) =>
        [
          "function return_val(value) { console.log(String(value)); }",
          `const userCode = ${JSON.stringify(code)};`,
          "try { new Function(userCode); return_val(JSON.stringify({ valid: true, error: null })); }",
          "catch (error) { return_val(JSON.stringify({ valid: false, error: { message: error.message } })); }",
        ].join("\n");
      const valid = await run({ language: "js", code: jsCheck("return 1;"), timeout: 10_000 });
      assertEquals(JSON.parse(valid.output.ret_val), { valid: true, error: null });
      const invalid = await run({ language: "js", code: jsCheck("return {;"), timeout: 10_000 });
      assertEquals(JSON.parse(invalid.output.ret_val).valid, false);
    });

    await t.step("every run draws its own random numbers", async () => {
      for (
        const [language, code] of [
          ["python", "import random\nrandom.random()"],
          ["js", "return Math.random();"],
        ]
      ) {
        const values = new Set<string>();
        for (const tenant of ["r1", "r2", "r1", undefined]) {
          const ext = tenant ? { space_id: tenant } : undefined;
          values.add((await run({ language, code, ext })).output.ret_val);
        }
        assertEquals(values.size, 4, `${language}: ${[...values].join(", ")}`);
      }
    });

    await t.step("input is visible in both languages, whatever JSON it is", async () => {
      const values: unknown[] = [{ a: [1, "x"], b: { c: null } }, [1, 2], "str", 3, true, null];
      for (const value of values) {
        const js = await run({
          language: "js",
          code: "return_val(JSON.stringify(input));",
          input: value,
        });
        assertEquals(JSON.parse(js.output.ret_val), value, `js ${JSON.stringify(value)}`);
        const ts = await run({
          language: "ts",
          code: "const v: unknown = input; return_val(JSON.stringify(v));",
          input: value,
        });
        assertEquals(JSON.parse(ts.output.ret_val), value, `ts ${JSON.stringify(value)}`);
        const py = await run({
          language: "python",
          code: "import json\njson.dumps(input)",
          input: value,
        });
        assertEquals(
          JSON.parse(JSON.parse(py.output.ret_val)),
          value,
          `py ${JSON.stringify(value)}`,
        );
      }
      const absentJs = await run({ language: "js", code: "return typeof input;" });
      assert(
        ['"undefined"', '"object"'].includes(absentJs.output.ret_val),
        absentJs.output.ret_val,
      );
      const absentPy = await run({ language: "python", code: "repr(input)" });
      assertEquals(absentPy.output.ret_val, '"None"');
    });

    await t.step("unicode and emoji pass through code, output and ret_val", async () => {
      const js = await run({
        language: "js",
        code: "console.log('héllo 🌍 中文'); console.error('é🌍'); return '😀';",
      });
      assertEquals(js.output, { stdout: "héllo 🌍 中文\n", stderr: "é🌍\n", ret_val: '"😀"' });
      const py = await run({
        language: "python",
        code: "import sys\nprint('héllo 🌍 中文')\nsys.stderr.write('é🌍\\n')\nreturn_val('😀')",
      });
      assertEquals(py.output, { stdout: "héllo 🌍 中文\n", stderr: "é🌍\n", ret_val: "😀" });
    });

    await t.step("CRLF line endings run", async () => {
      const cases: [string, string][] = [
        ["js", "const x = 1;\r\nconsole.log(x);\r\nreturn x + 1;"],
        ["ts", "const x: number = 1;\r\nconsole.log(x);\r\nreturn x + 1;"],
        ["python", "x = 1\r\nif x:\r\n    print(x)\r\nx + 1"],
      ];
      for (const [language, code] of cases) {
        const answer = await run({ language, code });
        assertEquals(answer.output.stdout, "1\n", language);
        assertEquals(answer.output.ret_val, "2", language);
      }
    });

    await t.step("a very long single line of output under the cap comes back whole", async () => {
      const length = MAX_OUTPUT - 1;
      const js = await run({ language: "js", code: `console.log("x".repeat(${length}));` });
      assertEquals(js.output.stdout, "x".repeat(length) + "\n");
      assertEquals(js.metadata.status, "success");
      const py = await run({ language: "python", code: `print("x" * ${length})` });
      assertEquals(py.output.stdout, "x".repeat(length) + "\n");
      assertEquals(py.metadata.truncated, false);
    });

    await t.step(
      "output at the cap is whole; past it, head and tail with the dropped bytes",
      async () => {
        const cases: [string, string, string, string][] = [
          [
            "js",
            "stdout",
            `console.log("x".repeat(${MAX_OUTPUT - 1}))`,
            `console.log("x".repeat(${MAX_OUTPUT}))`,
          ],
          [
            "js",
            "stderr",
            `console.error("x".repeat(${MAX_OUTPUT - 1}))`,
            `console.error("x".repeat(${MAX_OUTPUT}))`,
          ],
          [
            "python",
            "stdout",
            `import sys\nsys.stdout.write("x" * ${MAX_OUTPUT})`,
            `import sys\nsys.stdout.write("x" * ${MAX_OUTPUT + 1})`,
          ],
          [
            "python",
            "stderr",
            `import sys\nsys.stderr.write("x" * ${MAX_OUTPUT})`,
            `import sys\nsys.stderr.write("x" * ${MAX_OUTPUT + 1})`,
          ],
        ];
        for (const [language, stream, at, over] of cases) {
          const what = `${language} ${stream}`;
          const fits = await run({ language, code: at });
          assertEquals(fits.metadata.status, "success", what);
          assertEquals(fits.metadata.truncated, false, what);
          assertEquals(
            new TextEncoder().encode(fits.output[stream as "stdout"]).length,
            MAX_OUTPUT,
            what,
          );
          const cut = await run({ language, code: over });
          assertEquals(cut.metadata.status, "success", what);
          assertEquals(cut.metadata.truncated, true, what);
          assertEquals(cut.error, "", what);
          const text = cut.output[stream as "stdout"];
          assert(/\n\[… 1 bytes of output dropped …\]\n/.test(text), `${what}: ${text.slice(-80)}`);
          assert(new TextEncoder().encode(text).length <= MAX_OUTPUT + 64, what);
        }
        for (const language of ["js", "python"]) {
          const code = language === "js"
            ? "while (true) console.log('flood 🌊');"
            : "while True: print('flood 🌊')";
          const flood = await run({ language, code, timeout: 1_000 });
          assertEquals(flood.metadata.status, "timeout", language);
          assertEquals(flood.metadata.truncated, true, language);
          assert(!flood.output.stdout.includes("\uFFFD"), "cut on a character boundary");
          assert(new TextEncoder().encode(flood.output.stdout).length <= MAX_OUTPUT + 64, language);
        }
      },
    );

    await t.step(
      "an uncaught exception is a 200 with the trace in stderr and no error",
      async () => {
        const js = await run({ language: "js", code: "const a = 1;\nconst b = 2;\nnull.foo;" });
        assertEquals(js.metadata.status, "error");
        assertEquals(js.error, "");
        assertStringIncludes(js.output.stderr, "TypeError");
        assertStringIncludes(js.output.stderr, ":3:");
        const ts = await run({
          language: "ts",
          code: "const a: number = 1;\nthrow new Error('boom');",
        });
        assertEquals(ts.metadata.status, "error");
        assertEquals(ts.error, "");
        assertStringIncludes(ts.output.stderr, "boom");
        assertStringIncludes(ts.output.stderr, ":2:");
        const py = await run({
          language: "python",
          code: "x = 1\ny = 2\nraise ValueError('boom')",
        });
        assertEquals(py.metadata.status, "error");
        assertEquals(py.error, "");
        assertStringIncludes(py.output.stderr, "line 3");
        assertStringIncludes(py.output.stderr, "ValueError: boom");
        assert(!py.output.stderr.includes("fork_server"), "no frames of the sandbox");
      },
    );

    await t.step("exit codes: process.exit, Deno.exit, sys.exit", async () => {
      const cases: [string, string, number, string][] = [
        ["js", "console.log('before'); process.exit(3);", 3, "error"],
        ["js", "Deno.exit(4);", 4, "error"],
        ["js", "Deno.exit(0);", 0, "success"],
        ["python", "import sys\nprint('before')\nsys.exit(3)", 3, "error"],
        ["python", "import sys\nsys.exit(0)", 0, "success"],
      ];
      for (const [language, code, exitCode, status] of cases) {
        const answer = await run({ language, code });
        assertEquals(answer.metadata.exit_code, exitCode, code);
        assertEquals(answer.metadata.status, status, code);
        assertEquals(answer.error, "", code);
      }
      const js = await run({ language: "js", code: "console.log('before'); process.exit(3);" });
      assertEquals(js.output.stdout, "before\n");
    });

    await t.step("timeouts: sync loops, awaits and sleeps are answered as timeout", async () => {
      const cases: [string, string][] = [
        ["js", "console.log('started'); while (true) {}"],
        ["ts", "let n: number = 0; while (true) { n++; }"],
        ["js", "await new Promise((resolve) => setTimeout(resolve, 60_000));"],
        ["js", "/(a+)+$/.test('a'.repeat(40) + '!');"],
        ["python", "import time\nprint('started', flush=True)\ntime.sleep(60)"],
        ["python", "while True: pass"],
      ];
      // The two that print before they hang get longer: on a loaded machine (six runs at once,
      // four of them spinning) a 500 ms budget can end before a fresh sandbox reaches its print.
      const printsFirst = new Set([0, 4]);
      const answers = await Promise.all(
        cases.map(([language, code], i) =>
          run({ language, code, timeout: printsFirst.has(i) ? 2000 : 500 })
        ),
      );
      for (const [i, answer] of answers.entries()) {
        const what = cases[i].join(": ");
        assertEquals(answer.metadata.status, "timeout", what);
        assertStringIncludes(answer.error, "timed out", what);
      }
      assertEquals(answers[0].output.stdout, "started\n");
      assertEquals(answers[4].output.stdout, "started\n");
    });

    await t.step("memory bombs are answered as memory_limit", async () => {
      const cases: [string, string][] = [
        ["js", "const a = []; while (true) a.push(new Array(1e6).fill(1));"],
        ["js", "const a = []; while (true) a.push(new ArrayBuffer(1e8));"],
        ["python", "a = []\nwhile True: a.append(bytearray(10**8))"],
        ["python", "x = 'x' * (10**10)"],
      ];
      for (const [language, code] of cases) {
        const answer = await run({ language, code, timeout: 20_000 });
        assertEquals(answer.metadata.status, "memory_limit", code);
        assert(answer.error.length > 0, code);
      }
    });

    await t.step("/validate_code reports 1-based line and column of the user's code", async () => {
      const cases: [string, string, number, number][] = [
        ["js", "const a = 1;\nconst b = 2;\nlet c )", 3, 7],
        ["javascript", "const a = 1;\r\nconst b = 2;\r\nlet c )", 3, 7],
        ["ts", "const a: number = 1;\nconst b = 2;\nlet c )", 3, 7],
        ["python", "x = 1\ny = 2\nz = (1 +", 3, 5],
        ["py", "x = 1\ny = 2\nif x\n    pass", 3, 5],
      ];
      for (const [language, code, line, column] of cases) {
        const { status, body } = await postJson(url, "/validate_code", { language, code });
        assertEquals(status, 200);
        assertEquals(body.valid, false, code);
        const error = body.error as { message: string; line: number; column: number };
        assertEquals([error.line, error.column], [line, column], `${language}: ${error.message}`);
        assert(error.message.length > 0);
      }
      for (
        const [language, code] of [
          ["js", "const a = await Promise.resolve(1); return a;"],
          ["ts", "interface A { x: number }\nconst a: A = { x: 1 };\nreturn a;"],
          ["python", "def f(x):\n    return x\nf(1)"],
        ]
      ) {
        const { status, body } = await postJson(url, "/validate_code", { language, code });
        assertEquals([status, body], [200, { valid: true, error: null }], language);
      }
    });

    await t.step(
      "errors that are not runs: JSON bodies whose error names the problem",
      async () => {
        const bad: [unknown, string][] = [
          ["{bad", "JSON"],
          [{ language: "js" }, "code"],
          [{ language: "js", code: "" }, "code"],
          [{ language: "cobol", code: "x" }, "language"],
          [{ code: "x" }, "language"],
          [{ language: "js", code: "x", timeout: 0 }, "timeout"],
          [{ language: "js", code: "x", timeout: "5000" }, "timeout"],
          [{ language: "js", code: "x", timeout: 1.5 }, "timeout"],
          [{ language: "js", code: "x", priority: "asap" }, "priority"],
          [{ language: "js", code: "x", ext: { space_id: 5 } }, "space_id"],
          [[1], "object"],
        ];
        for (const [body, named] of bad) {
          const answer = await postJson(url, "/run_code", body);
          assertEquals(answer.status, 400, JSON.stringify(body));
          assertStringIncludes(String(answer.body.error), named);
          assert(Array.isArray(answer.body.details), "details");
        }
        const validate = await postJson(url, "/validate_code", { language: "js" });
        assertEquals(validate.status, 400);
        assertStringIncludes(String(validate.body.error), "code");

        const limit = bodyLimitBytes(parseConfig({}));
        const huge = JSON.stringify({ language: "js", code: "x".repeat(limit) });
        const tooLarge = await postJson(url, "/run_code", huge);
        assertEquals(tooLarge.status, 413);
        assertStringIncludes(String(tooLarge.body.error), "limit");

        const notFound = await fetch(url + "/nope");
        assertEquals(notFound.status, 404);
        assertStringIncludes((await notFound.json()).error, "/nope");
        const wrongMethod = await fetch(url + "/run_code");
        assertEquals(wrongMethod.status, 405);
        assertStringIncludes((await wrongMethod.json()).error, "POST");
      },
    );
  },
});
