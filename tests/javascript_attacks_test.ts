/**
 * Containment of hostile JS: one test per attempt. Many attempts are made twice, directly
 * and after escaping the run's vm context into the worker's realm (one line of code away,
 * so that realm must be locked down too). After each, a normal run must still succeed and
 * no runner may be left spinning a core.
 */

import {
  assert,
  assertEquals,
  assertNoSpinningRunner,
  assertStringIncludes,
  run,
  SEED,
  startRuntime,
} from "./javascript_helpers.ts";
import type { RunOutcome, Runtime } from "../src/runtime.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
let runtime: Runtime;

/**
 * Prelude giving attack code the worker's global (`W`) and a dynamic `imp(specifier)` that
 * runs in the worker's realm (an eval reached from a microtask has no vm referrer).
 */
const ESCAPE = "const W = console.log.constructor('return this')();\n" +
  "const imp = (spec, options) => W.Promise.resolve(`import(${JSON.stringify(spec)}, " +
  "${JSON.stringify(options ?? {})})`).then(W.eval);\n";

async function assertStillServes(): Promise<void> {
  const outcome = await run(runtime, SEED);
  assertEquals(outcome.status, "success", outcome.stderr);
  assertEquals(outcome.stdout, "Hello World\n");
  assertEquals(outcome.retVal, "42");
  await assertNoSpinningRunner(runtime);
}

function assertDenied(outcome: RunOutcome, text: string): void {
  assertEquals(outcome.status, "error", `expected the attempt to fail: ${outcome.retVal}`);
  assertStringIncludes(outcome.stderr, text);
}

Deno.test("attacks: runtime starts with every isolation layer this host offers", opts, async () => {
  runtime = await startRuntime();
  const isolation = runtime.info().isolation;
  assert(isolation.no_permissions_worker || isolation.revoked_permissions);
  if (Deno.uid() === 0) assert(isolation.uid, "runners drop root");
});

Deno.test("attacks: the escape prelude really reaches the worker realm", opts, async () => {
  // Without this, the escaped variants below would prove nothing. A tenant's first run runs
  // in its runner's worker realm itself (W is its global); its later runs in vm contexts.
  const code = ESCAPE +
    "const fs = await imp('node:fs'); return [W === globalThis, typeof fs.readFileSync]";
  const first = await run(runtime, code, { tenant: "escape" });
  assertEquals(first.retVal, '[true,"function"]');
  const second = await run(runtime, code, { tenant: "escape" });
  assertEquals(second.retVal, '[false,"function"]');
  const third = await run(runtime, code, { tenant: "escape" });
  assertEquals(third.instanceId, second.instanceId);
  assertEquals(third.retVal, '[false,"function"]');
});

Deno.test("attacks: reading a host file is denied", opts, async () => {
  assertDenied(await run(runtime, "return await Deno.readTextFile('/etc/passwd')"), "NotCapable");
  assertDenied(
    await run(runtime, ESCAPE + "return await W.Deno.readTextFile('/etc/passwd')"),
    "NotCapable",
  );
  assertDenied(
    await run(
      runtime,
      ESCAPE + "return (await imp('node:fs')).readFileSync('/etc/passwd', 'utf8')",
    ),
    "NotCapable",
  );
  await assertStillServes();
});

Deno.test("attacks: a static import of a file: URL is refused", opts, async () => {
  assertDenied(
    await run(runtime, "import secret from 'file:///etc/passwd';\nreturn secret;"),
    "SyntaxError",
  );
  assertDenied(
    await run(runtime, "return await import('file:///etc/passwd')"),
    "dynamic import callback",
  );
  assertDenied(
    await run(runtime, ESCAPE + "return await imp('file:///etc/passwd')"),
    "Requires read access",
  );
  await assertStillServes();
});

Deno.test("attacks: a JSON import of a host file is refused", opts, async () => {
  const file = new URL("../deno.json", import.meta.url).href;
  assertDenied(
    await run(
      runtime,
      ESCAPE + `return await imp(${JSON.stringify(file)}, {with: {type: 'json'}})`,
    ),
    "Requires read access",
  );
  await assertStillServes();
});

Deno.test("attacks: the service's environment is not readable", opts, async () => {
  assertDenied(await run(runtime, "return Deno.env.toObject()"), "NotCapable");
  assertDenied(
    await run(runtime, ESCAPE + "return JSON.stringify((await imp('node:process')).default.env)"),
    "NotCapable",
  );
  assertDenied(
    await run(runtime, "return await Deno.readTextFile('/proc/self/environ')"),
    "NotCapable",
  );
  await assertStillServes();
});

Deno.test(
  "attacks: fetch and connect reach neither loopback nor a server of ours",
  opts,
  async () => {
    let hits = 0;
    const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, () => {
      hits++;
      return new Response("secret");
    });
    const url = `http://127.0.0.1:${server.addr.port}/`;
    try {
      assertDenied(await run(runtime, `return await (await fetch('${url}')).text()`), "NotCapable");
      assertDenied(
        await run(
          runtime,
          `await Deno.connect({hostname: '127.0.0.1', port: ${server.addr.port}})`,
        ),
        "NotCapable",
      );
      assertDenied(
        await run(
          runtime,
          ESCAPE + `const net = await imp('node:net');\n` +
            `await new Promise((ok, fail) => net.connect(${server.addr.port}, '127.0.0.1', ok)` +
            `.on('error', fail));`,
        ),
        "NotCapable",
      );
    } finally {
      await server.shutdown();
    }
    assertEquals(hits, 0);
    await assertStillServes();
  },
);

Deno.test("attacks: processes cannot be started", opts, async () => {
  assertDenied(
    await run(runtime, "return (await new Deno.Command('/usr/bin/id').output()).code"),
    "NotCapable",
  );
  assertDenied(
    await run(
      runtime,
      ESCAPE + "return (await imp('node:child_process')).execFileSync('/usr/bin/id').toString()",
    ),
    "NotCapable",
  );
  await assertStillServes();
});

Deno.test("attacks: npm: packages cannot be imported", opts, async () => {
  assertDenied(await run(runtime, ESCAPE + "return await imp('npm:left-pad@1.3.0')"), "--no-npm");
  await assertStillServes();
});

Deno.test("attacks: two concurrent runs cannot talk over BroadcastChannel", opts, async () => {
  const open = ESCAPE +
    "const BC = W.BroadcastChannel ?? (await imp('node:worker_threads')).BroadcastChannel;\n" +
    "const channel = new BC('leak');\n";
  const [sender, listener] = await Promise.all([
    run(
      runtime,
      open + "for (let i = 0; i < 30; i++) { channel.postMessage('secret ' + i);\n" +
        "await new Promise((r) => setTimeout(r, 10)); }\nchannel.close(); return [typeof BroadcastChannel, 'sent'];",
      { tenant: "bc" },
    ),
    run(
      runtime,
      open + "let got = 0; channel.onmessage = () => got++;\n" +
        "await new Promise((r) => setTimeout(r, 400)); channel.close(); return got;",
      { tenant: "bc" },
    ),
  ]);
  assertEquals(sender.retVal, '["undefined","sent"]', sender.stderr);
  assertEquals(listener.retVal, "0", listener.stderr);
  assert(sender.instanceId !== listener.instanceId, "concurrent runs use separate runners");
  await assertStillServes();
});

Deno.test("attacks: the caches API is gone in every realm", opts, async () => {
  const probe = ESCAPE + "return [typeof caches, typeof W.caches, typeof W.CacheStorage]";
  const first = await run(runtime, probe, { tenant: "caches" });
  const second = await run(runtime, probe, { tenant: "caches" });
  assertEquals(first.retVal, '["undefined","undefined","undefined"]');
  assertEquals(second.retVal, first.retVal);
  await assertStillServes();
});

Deno.test("attacks: code cannot write to the service's stdout or stderr", opts, async () => {
  // The service runs in a child process here so its real stdout can be inspected.
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  const modUrl = new URL("../src/sandbox/javascript/mod.ts", import.meta.url).href;
  const attack = ESCAPE +
    "W.console.log('FORGED-1'); W.console.error('FORGED-2');\n" +
    "const p = (await imp('node:process')).default; p.stdout.write('FORGED-3\\n');\n" +
    "p.stderr.write('FORGED-4\\n'); (await imp('node:fs')).writeSync(1, 'FORGED-5\\n');\n" +
    "return typeof Deno.stdout;";
  await Deno.writeTextFile(
    script,
    `import { createJavaScriptRuntime } from ${JSON.stringify(modUrl)};
const runtime = createJavaScriptRuntime({ poolSize: 1, maxInstances: 2, memoryLimitMb: 128,
  maxOutputBytes: 65536, requireIsolation: [], debug: false });
await runtime.start();
// Once as a runner's first run (in the worker realm), once in a vm context of a later run.
const first = await runtime.run({ taskId: "t", language: "javascript", timeoutMs: 5000,
  tenant: "stdio", code: ${JSON.stringify(attack)} });
const outcome = await runtime.run({ taskId: "t", language: "javascript", timeoutMs: 5000,
  tenant: "stdio", code: ${JSON.stringify(attack)} });
console.log("RESULT " + JSON.stringify([first, outcome]));
await runtime.shutdown();
`,
  );
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        "--no-prompt",
        "--config",
        new URL("../deno.json", import.meta.url).pathname,
        script,
      ],
      stdin: "null",
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    assert(output.success, stderr);
    const lines = stdout.trim().split("\n");
    assertEquals(lines.length, 1, stdout);
    // The run's own console may carry FORGED-1/2 into its own result; nothing else may.
    assert(lines[0].startsWith("RESULT ") && !stderr.includes("FORGED"), stdout + stderr);
    const [first, outcome] = JSON.parse(lines[0].slice("RESULT ".length)) as RunOutcome[];
    // In the worker realm, W.console is the run's own console: its output is the run's.
    assertEquals(first.status, "success", first.stderr);
    assertEquals([first.stdout, first.stderr], ["FORGED-1\n", "FORGED-2\n"]);
    assertEquals(outcome.status, "success", outcome.stderr);
    assertEquals(outcome.retVal, '"undefined"');
    assert(!outcome.stdout.includes("FORGED"), "worker-realm writes never reach the run's output");
  } finally {
    await Deno.remove(script);
  }
  await assertStillServes();
});

Deno.test(
  "attacks: frames forged on the worker's channel cannot break the protocol",
  opts,
  async () => {
    const outcome = await run(
      runtime,
      ESCAPE + "const post = W.postMessage;\nreturn [typeof post, typeof W.close];",
    );
    assertEquals(outcome.retVal, '["undefined","undefined"]');
    await assertStillServes();
  },
);

Deno.test("attacks: Deno internals (core ops, raw printing) are gone", opts, async () => {
  const outcome = await run(
    runtime,
    ESCAPE + "return [Object.getOwnPropertySymbols(W.Deno).length, typeof W.Deno.core, " +
      "typeof W.__bootstrap]",
  );
  assertEquals(outcome.retVal, '[0,"undefined","undefined"]');
  await assertStillServes();
});

Deno.test("attacks: signal listeners cannot be installed", opts, async () => {
  assertDenied(
    await run(runtime, "Deno.addSignalListener('SIGTERM', () => {}); return 'added'"),
    "not available in the sandbox",
  );
  assertDenied(
    await run(runtime, ESCAPE + "(await imp('node:process')).default.on('SIGINT', () => {});"),
    "not available in the sandbox",
  );
  await assertStillServes();
});

Deno.test("attacks: permission requests are denied without a prompt", opts, async () => {
  const outcome = await run(
    runtime,
    "const a = (await Deno.permissions.request({name: 'read'})).state;\n" +
      "const b = (await Deno.permissions.query({name: 'net'})).state;\n" +
      "let c = 'denied';\ntry { c = (await Deno.Permissions.prototype.request.call(" +
      "Object.create(Deno.Permissions.prototype), {name: 'env'})).state; } " +
      "catch { c = 'threw'; }\nreturn [a, b, c];",
  );
  assertEquals(outcome.status, "success", outcome.stderr);
  const [a, b, c] = JSON.parse(outcome.retVal) as string[];
  assertEquals([a, b], ["denied", "denied"]);
  assert(c !== "granted", "the original Permissions API grants nothing either");
  await assertStillServes();
});

Deno.test(
  "attacks: prototype pollution does not reach a later run of the tenant",
  opts,
  async () => {
    const polluter = await run(
      runtime,
      "Object.prototype.polluted = 'yes'; Array.prototype.includes = () => true;\n" +
        "JSON.stringify = () => '\"hijacked\"'; globalThis.leak = 1; return 1;",
      { tenant: "pollution" },
    );
    const victim = await run(
      runtime,
      "return [({}).polluted, [1].includes(2), typeof leak];",
      { tenant: "pollution" },
    );
    // The polluter ran in its runner's own realm: that runner refuses the next run and is
    // retired; the victim runs on a fresh runner.
    assert(victim.instanceId !== polluter.instanceId, "the polluted runner was retired");
    assertEquals(victim.status, "success", victim.stderr);
    assertEquals(victim.retVal, '[null,false,"undefined"]');
    await assertStillServes();
  },
);

Deno.test(
  "attacks: prototype pollution in a vm context run does not reach the next run",
  opts,
  async () => {
    const tenant = { tenant: "pollution-vm" };
    const opener = await run(runtime, "return 0", tenant);
    const polluter = await run(
      runtime,
      "Object.prototype.polluted = 'yes'; Array.prototype.includes = () => true;\n" +
        "JSON.stringify = () => '\"hijacked\"'; globalThis.leak = 1; return 1;",
      tenant,
    );
    const victim = await run(
      runtime,
      "return [({}).polluted, [1].includes(2), typeof leak];",
      tenant,
    );
    // The opener's runner served only it; the tenant's next runs share a kept runner.
    assert(polluter.instanceId !== opener.instanceId, "a first run's runner is not reused");
    assertEquals(victim.instanceId, polluter.instanceId);
    assertEquals(victim.retVal, '[null,false,"undefined"]');
  },
);

Deno.test("attacks: a polluted worker realm cannot forge a later run's result", opts, async () => {
  const polluter = await run(
    runtime,
    ESCAPE + "W.Object.prototype.explicit = 'FORGED'; W.Object.prototype.returned = 'FORGED';\n" +
      "W.Object.prototype.exitCode = 9; W.JSON.stringify = () => '\"FORGED\"'; return 1;",
    { tenant: "forger" },
  );
  // Inline runners frame their results with this realm's JSON: the polluter may break itself.
  assert(polluter.status === "success" || polluter.status === "crashed", polluter.status);
  const victim = await run(runtime, "console.log('hi'); return {a: 1};", { tenant: "forger" });
  assertEquals([victim.status, victim.exitCode, victim.retVal], ["success", 0, '{"a":1}']);
  // The changed realm was detected before the next run: that run went to a fresh runner.
  assert(victim.instanceId !== polluter.instanceId, "the polluted runner is not reused");
  await assertStillServes();
});

Deno.test("attacks: subtle changes to the worker realm also retire its runner", opts, async () => {
  for (
    const change of [
      "W.Array.prototype.push = W.Array.prototype.push.bind([]);",
      "W.Deno.inspect = () => 'x';",
      "W.setTimeout = () => 0;",
      "Object.defineProperty(W.Promise.prototype, 'then', {writable: false});",
      "W.Object.preventExtensions(W.Math);",
    ]
  ) {
    // The change may break the changed run itself (its own result, whatever it is).
    const first = await run(runtime, ESCAPE + change + "\nreturn 1;", {
      tenant: "subtle",
      timeoutMs: 2_000,
    });
    const next = await run(runtime, "return 2;", { tenant: "subtle" });
    assertEquals(next.retVal, "2");
    assert(next.instanceId !== first.instanceId, `not retired after: ${change}`);
  }
  await assertStillServes();
});

Deno.test("attacks: timers of a run never fire in a later run of the tenant", opts, async () => {
  await run(runtime, "return 0", { tenant: "timers" });
  const setter = await run(
    runtime,
    "setInterval(() => console.log('LEAK interval'), 1);\n" +
      "setTimeout(() => { console.log('LEAK timeout'); return_val('LEAKED'); }, 20);\n" +
      "AbortSignal.timeout(20).onabort = () => console.log('LEAK abort');\n" +
      "const again = () => setImmediate(again);\nsetImmediate(again);\nreturn 1;",
    { tenant: "timers" },
  );
  const later = await run(
    runtime,
    "await new Promise((r) => setTimeout(r, 100));\nreturn 'clean';",
    { tenant: "timers" },
  );
  assertEquals(later.instanceId, setter.instanceId);
  assertEquals(later.stdout, "");
  assertEquals(later.retVal, '"clean"');
  await assertStillServes();
});

Deno.test(
  "attacks: a run that wraps node:vm in the worker's realm cannot reach the tenant's next run",
  opts,
  async () => {
    // It covers its tracks: every global and prototype that loading Node's modules changed is
    // put back, so only the wrapped Script.prototype.runInContext differs.
    const wrap = ESCAPE + `const watched = [W, W.MessagePort.prototype, W.EventTarget.prototype];
const saved = watched.map((o) => new Map(Reflect.ownKeys(o).map((k) => [k, Object.getOwnPropertyDescriptor(o, k)])));
const vm = W.process.getBuiltinModule('node:vm');
const original = vm.Script.prototype.runInContext;
vm.Script.prototype.runInContext = function (context, ...rest) {
  const result = original.call(this, context, ...rest);
  if (typeof result !== 'function') return result;
  return function () {
    const log = context.console.log;
    context.console.log = (...args) => log('HIJACKED', JSON.stringify(context.input), ...args);
    return result.apply(this, arguments);
  };
};
watched.forEach((o, i) => {
  for (const k of Reflect.ownKeys(o)) if (!saved[i].has(k)) delete o[k];
  for (const [k, d] of saved[i]) { try { Object.defineProperty(o, k, d); } catch {} }
});
return 'wrapped';`;
    const victim = "console.log('victim'); return input.secret.length";
    await run(runtime, "return 'first'", { tenant: "vm-wrap" });
    const wrapper = await run(runtime, wrap, { tenant: "vm-wrap" });
    assertEquals(wrapper.retVal, '"wrapped"', wrapper.stderr);
    for (let i = 0; i < 2; i++) {
      const outcome = await run(runtime, victim, {
        tenant: "vm-wrap",
        input: { secret: "S3CRET" },
      });
      assertEquals(outcome.status, "success", outcome.stderr);
      assertEquals(outcome.stdout, "victim\n");
      assert(outcome.instanceId !== wrapper.instanceId, "the wrapped runner was retired");
    }
    await assertStillServes();
  },
);

Deno.test("attacks: stacks a run can read never name the service's files", opts, async () => {
  const code = "const sync = new Error('sync').stack;\nawait null;\n" +
    "const later = new Error('later').stack;\nlet timer;\n" +
    "await new Promise((r) => setTimeout(() => { timer = new Error('timer').stack;\n" +
    "  console.trace('trace'); r(); }, 1));\n" +
    "return [sync, later, timer].join('\\n');";
  // First in a first run's worker realm, then in a kept runner's vm contexts.
  for (
    const outcome of [
      await run(runtime, code, { tenant: "stacks" }),
      await run(runtime, code, { tenant: "stacks" }),
      await run(runtime, code, { tenant: "stacks" }),
    ]
  ) {
    assertEquals(outcome.status, "success", outcome.stderr);
    const text = `${outcome.retVal}\n${outcome.stderr}`;
    for (const name of ["sync", "later", "timer", "trace"]) assertStringIncludes(text, name);
    // Deno's own frames (`ext:`) may show; nothing that names a file of the host.
    const home = new URL("../", import.meta.url).pathname;
    for (const leak of ["file:", home, "/src/", "realm.ts", "worker.ts"]) {
      assert(!text.includes(leak), `a stack names ${leak}: ${text}`);
    }
  }
  await assertStillServes();
});

Deno.test("attacks: Deno.exit and process.exit only end the run", opts, async () => {
  const direct = await run(runtime, "Deno.exit(3);");
  assertEquals([direct.status, direct.exitCode], ["error", 3]);
  const viaNode = await run(runtime, ESCAPE + "(await imp('node:process')).default.exit(4);");
  assertEquals([viaNode.status, viaNode.exitCode], ["error", 4]);
  const caught = await run(
    runtime,
    "try { Deno.exit(5) } catch {}\nwhile (true) {}",
    { timeoutMs: 2_000 },
  );
  assertEquals([caught.status, caught.exitCode], ["error", 5]);
  await assertStillServes();
});

Deno.test("attacks: signals reach neither the service nor other processes", opts, async () => {
  const victim = new Deno.Command("sleep", { args: ["60"], stdout: "null", stderr: "null" })
    .spawn();
  try {
    for (const pid of [Deno.pid, victim.pid]) {
      assertDenied(await run(runtime, `Deno.kill(${pid}, 'SIGKILL')`), "NotCapable");
      assertDenied(
        await run(runtime, ESCAPE + `(await imp('node:process')).default.kill(${pid}, 'SIGKILL')`),
        "NotCapable",
      );
    }
  } finally {
    victim.kill("SIGKILL");
    await victim.status;
  }
  await assertStillServes();
});

Deno.test(
  "attacks: a run that kills or aborts its own runner only crashes itself",
  opts,
  async () => {
    const killed = await run(
      runtime,
      ESCAPE + "const p = (await imp('node:process')).default; p.kill(p.pid, 'SIGKILL');",
    );
    assertEquals(killed.status, "crashed");
    const aborted = await run(runtime, ESCAPE + "(await imp('node:process')).default.abort();");
    assert(aborted.status === "crashed" || aborted.status === "error", aborted.status);
    const closed = await run(
      runtime,
      ESCAPE + "let p = W;\nwhile (p && !Object.getOwnPropertyNames(p).includes('close')) " +
        "p = Object.getPrototypeOf(p);\np?.close.call(W);\nreturn 1;",
      { tenant: "closer" },
    );
    assertEquals(closed.status, "success");
    assertEquals((await run(runtime, SEED, { tenant: "closer" })).retVal, "42");
    await assertStillServes();
  },
);

Deno.test("attacks: an unhandled rejection never takes the runner down", opts, async () => {
  const outcome = await run(
    runtime,
    "for (let i = 0; i < 100; i++) Promise.reject(new Error('r' + i));\n" +
      "return 1;",
  );
  assertEquals(outcome.status, "error");
  assertStringIncludes(outcome.stderr, "Uncaught");
  await assertStillServes();
});

Deno.test(
  "attacks: an extra worker started inside a runner gets no permissions",
  opts,
  async () => {
    const outcome = await run(
      runtime,
      ESCAPE + "const wt = await imp('node:worker_threads');\n" +
        "const w = new wt.Worker(\"const {parentPort} = require('worker_threads');\" +\n" +
        "  \"try { parentPort.postMessage(require('fs').readFileSync('/etc/passwd', 'utf8')) }\" +\n" +
        "  \" catch (e) { parentPort.postMessage('denied: ' + e.message) }\", {eval: true});\n" +
        "return await new Promise((r) => { w.on('message', r); w.on('error', (e) => r('error ' + e));" +
        " w.on('exit', () => r('exit')); });",
      { timeoutMs: 5_000 },
    );
    // Depending on the runner's memory headroom the isolate fails to start or starts without
    // permissions; it never reads the file.
    assert(!outcome.retVal.includes("root:"), outcome.retVal);
    await assertStillServes();
  },
);

Deno.test(
  "attacks: input that breaks the TypeScript parser breaks nothing after it",
  opts,
  async () => {
    const deep = "(".repeat(200_000) + "1" + ")".repeat(200_000);
    const broken = await run(runtime, `const a: number = ${deep};`, { language: "typescript" });
    assertEquals(broken.status, "error");
    const invalid = await runtime.validate(`const a: number = ${deep};`, "typescript");
    assertEquals(invalid.valid, false);
    const later = await run(runtime, "const n: number = 41;\nreturn n + 1;", {
      language: "typescript",
    });
    assertEquals(later.status, "success", later.stderr);
    assertEquals(later.retVal, "42");
    const jsDeep = await runtime.validate(`return ${deep};`, "javascript");
    assertEquals(jsDeep.valid, false);
    await assertStillServes();
  },
);

Deno.test("attacks: runtime shuts down", opts, async () => {
  await runtime.shutdown();
});
