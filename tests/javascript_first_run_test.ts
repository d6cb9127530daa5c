/**
 * A tenant's first run runs in its runner's fresh worker, in that worker's own realm; the
 * tenant's later runs run on the same runner, in fresh vm contexts of a kept worker. These tests
 * prove both kinds of run look the same to user code, that the runner of a first run serves the
 * tenant's next runs (no second boot), and that a first run that changes its realm cannot reach
 * them.
 */

import {
  assert,
  assertEquals,
  assertStringIncludes,
  run,
  startRuntime,
} from "./javascript_helpers.ts";
import type { Runtime } from "../src/runtime.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
let runtime: Runtime;

/** Runs `code` twice for a new tenant: in a first run's realm, then in a kept worker's context. */
async function twice(code: string, tenant: string, input?: unknown) {
  const first = await run(runtime, code, { tenant, input });
  const second = await run(runtime, code, { tenant, input });
  assertEquals(second.instanceId, first.instanceId, "the first run's runner serves the next");
  return [first, second];
}

Deno.test("first run: runtime starts", opts, async () => {
  runtime = await startRuntime();
  assert(runtime.info().available);
});

Deno.test("first run: the first and a later run see the same globals and API", opts, async () => {
  const probe = "const names = Object.getOwnPropertyNames(globalThis).sort();\n" +
    "const kinds = {};\n" +
    "for (const name of names) kinds[name] = typeof globalThis[name];\n" +
    "for (const name of ['self', 'window', 'postMessage', 'close', 'onmessage', 'name',\n" +
    "  'BroadcastChannel', 'caches', 'importScripts', 'WorkerGlobalScope']) {\n" +
    "  kinds['?' + name] = typeof globalThis[name];\n" +
    "}\n" +
    "kinds['?Deno.stdout'] = typeof Deno.stdout;\n" +
    "kinds['?this'] = this === globalThis;\n" +
    "kinds['?input'] = JSON.stringify(input);\n" +
    "kinds['?inputProto'] = Object.getPrototypeOf(input) === Object.prototype;\n" +
    "console.log('%s=%d', 'n', 5, {a: [1]});\n" +
    "return_val(JSON.stringify(kinds));";
  const [first, second] = await twice(probe, "api", { n: [1, 2] });
  assertEquals(first.status, "success", first.stderr);
  assertEquals(second.status, "success", second.stderr);
  assertEquals(first.stdout, "n=5 { a: [ 1 ] }\n");
  assertEquals(second.stdout, first.stdout);
  const a = JSON.parse(first.retVal!);
  const b = JSON.parse(second.retVal!);
  assertEquals(a, b);
  assertEquals(a["?self"], "undefined");
  assertEquals(a["?BroadcastChannel"], "undefined");
  assertEquals(a["?Deno.stdout"], "undefined");
  assertEquals(a["?input"], '{"n":[1,2]}');
  assertEquals(a["?inputProto"], true);
  assertEquals(a.console, "object");
  assertEquals(a.return_val, "function");
});

Deno.test("first run: import() fails alike in the first and a later run", opts, async () => {
  const [first, second] = await twice("return await import('node:path')", "import");
  for (const outcome of [first, second]) {
    assertEquals(outcome.status, "error");
    assertStringIncludes(outcome.stderr, "dynamic import callback");
  }
});

Deno.test(
  "first run: stack line numbers are the user's in the first and a later run",
  opts,
  async () => {
    const code = "const a = 1;\n\nfunction f() { throw new Error('boom'); }\nf();";
    const [first, second] = await twice(code, "stack");
    for (const outcome of [first, second]) {
      assertEquals(outcome.status, "error");
      assertStringIncludes(outcome.stderr, "Uncaught Error: boom");
      assertStringIncludes(outcome.stderr, "at f (main.js:3:22)");
      assertStringIncludes(outcome.stderr, "at main.js:4:1");
      assert(!outcome.stderr.includes("sandbox:"), outcome.stderr);
    }
    // Line 1 shares its line with the wrapper in the worker realm: columns must still match.
    const [one, two] = await twice("throw new Error('x')", "stack-line-1");
    assertStringIncludes(one.stderr, "main.js:1:7");
    assertEquals(one.stderr, two.stderr);
    // Errors the code prints itself show the same frames too.
    const printed =
      "try { null.x } catch (e) { console.log(e) }\nsetTimeout(() => { throw 1 });\n" +
      "await new Promise((r) => setTimeout(r, 5));";
    const [p1, p2] = await twice(printed, "stack-printed");
    for (const outcome of [p1, p2]) {
      assertStringIncludes(outcome.stdout, "null (reading 'x')\n    at main.js:1:12\n");
      assert(!outcome.stdout.includes("sandbox:"), outcome.stdout);
      assertStringIncludes(outcome.stderr, "Uncaught 1");
    }
    // And so do stacks the code returns or hands to return_val.
    const returned = "const e = new Error('r');\nreturn_val(e.stack); return new Error('q').stack;";
    const [r1, r2] = await twice(returned, "stack-returned");
    for (const outcome of [r1, r2]) {
      assertEquals(outcome.retVal, "Error: r\n    at main.js:1:11");
    }
    const [q1, q2] = await twice("return new Error('q').stack;", "stack-returned-value");
    assertEquals(q1.retVal, JSON.stringify("Error: q\n    at main.js:1:8"));
    assertEquals(q2.retVal, q1.retVal);
    // TypeScript keeps its lines as well.
    const ts = "type A = {\n  x: number;\n};\nconst a: A = {x: 1};\nthrow new Error('ts ' + a.x);";
    for (let i = 0; i < 2; i++) {
      const outcome = await run(runtime, ts, { language: "typescript", tenant: "stack-ts" });
      assertStringIncludes(outcome.stderr, "main.ts:5:7");
    }
  },
);

Deno.test(
  "first run: globals a kept runner's run adds are gone in its next run",
  opts,
  async () => {
    const tenant = { tenant: "added" };
    await run(runtime, "return 0", tenant);
    const first = await run(
      runtime,
      "globalThis.leak = 1; sloppy = 2;\nsetTimeout(() => console.log('late'), 20); return 1;",
      tenant,
    );
    // The first run's timer would fire while this run waits, were it not cancelled.
    const second = await run(
      runtime,
      "await new Promise((r) => setTimeout(r, 100));\nreturn [typeof leak, typeof sloppy];",
      tenant,
    );
    assertEquals(second.instanceId, first.instanceId);
    assertEquals(first.stdout, "");
    assertEquals(second.retVal, '["undefined","undefined"]');
    assertEquals(second.stdout, "");
  },
);

Deno.test(
  "first run: a first run that pollutes its realm cannot reach the tenant's next runs",
  opts,
  async () => {
    const polluter = await run(
      runtime,
      "Object.prototype.polluted = 'yes'; String.prototype.trim = () => 'hijacked';\n" +
        "Object.defineProperty(globalThis, 'stuck', {value: 1}); return 1;",
      { tenant: "polluter" },
    );
    assertEquals(polluter.status, "success", polluter.stderr);
    const victim = await run(
      runtime,
      "return [({}).polluted, ' a '.trim(), typeof stuck];",
      { tenant: "polluter" },
    );
    assertEquals(victim.status, "success", victim.stderr);
    assertEquals(victim.retVal, '[null,"a","undefined"]');
    // The same runner: the polluted realm was a worker of its own, ended after its run.
    assertEquals(victim.instanceId, polluter.instanceId);
    const next = await run(runtime, "return [({}).polluted, ' b '.trim()]", { tenant: "polluter" });
    assertEquals(next.retVal, '[null,"b"]');
  },
);

Deno.test("first run: runtime shuts down", opts, async () => {
  await runtime.shutdown();
});
