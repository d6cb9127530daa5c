/**
 * Containment of hostile JS: one test per attempt. Many attempts are made directly and through
 * the classic escape (a function constructor reached from an object of the outer realm, and an
 * eval from a promise job, which has no referrer). In a tenant's first run the realm is the
 * fresh worker's own (the escape "reaches" nothing but that realm, whose evaluators compile
 * without a module loader); in its later runs the escape itself is refused (the kept worker's
 * evaluators refuse to compile). After each, a normal run must still succeed and no runner may
 * be left spinning a core.
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
import { inProcessOnly } from "./helpers/remote.ts";

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

/** What stops an escape: no module loader for code compiled from strings, or no compiling. */
const ESCAPE_BLOCKED = /dynamic import callback was not specified|code generation from strings/;

/** Fails unless the attempt failed, denied by `text` or stopped earlier by the escape's block. */
function assertContained(outcome: RunOutcome, text: string): void {
  assertEquals(outcome.status, "error", `expected the attempt to fail: ${outcome.retVal}`);
  assert(
    outcome.stderr.includes(text) || ESCAPE_BLOCKED.test(outcome.stderr),
    `expected ${JSON.stringify(text)} or a blocked escape in ${JSON.stringify(outcome.stderr)}`,
  );
}

let tenants = 0;

/** Runs `code` as a new tenant's first run, then as its second (a kept worker's context). */
async function inBothRealms(code: string, options: { timeoutMs?: number } = {}) {
  const tenant = `both-${++tenants}`;
  const first = await run(runtime, code, { tenant, ...options });
  const kept = await run(runtime, code, { tenant, ...options });
  assertEquals(kept.instanceId, first.instanceId, "the tenant's runner serves both");
  return [first, kept];
}

Deno.test("attacks: runtime starts with every isolation layer this host offers", opts, async () => {
  runtime = await startRuntime();
  const isolation = runtime.info().isolation;
  assert(isolation.no_permissions_worker || isolation.revoked_permissions);
  if (Deno.uid() === 0) assert(isolation.uid, "runners drop root");
});

Deno.test("attacks: the escape prelude reaches no realm that can import", opts, async () => {
  // A first run's realm is the run's own, fresh worker realm: the prelude's W is its global;
  // it compiles without a module loader. A later run's escape is refused outright.
  const code = ESCAPE + "const fs = await imp('node:fs'); return [W === globalThis, typeof fs]";
  const [first, kept] = await inBothRealms(code);
  assertDenied(first, "dynamic import callback was not specified");
  assertDenied(kept, "code generation from strings is not available");
  // `process` is the run's own (run_scope.ts): none of Node's ways out is on it.
  const direct = await inBothRealms(
    "return [typeof require, typeof Buffer, typeof process.getBuiltinModule, " +
      "typeof process.binding, typeof process.dlopen, typeof process.kill]",
  );
  for (const outcome of direct) {
    assertEquals(
      outcome.retVal,
      '["undefined","undefined","undefined","undefined","undefined","undefined"]',
    );
  }
});

Deno.test("attacks: reading a host file is denied", opts, async () => {
  assertDenied(await run(runtime, "return await Deno.readTextFile('/etc/passwd')"), "NotCapable");
  for (
    const code of [
      "return await W.Deno.readTextFile('/etc/passwd')",
      "return (await imp('node:fs')).readFileSync('/etc/passwd', 'utf8')",
    ]
  ) {
    for (const outcome of await inBothRealms(ESCAPE + code)) assertContained(outcome, "NotCapable");
  }
  await assertStillServes();
});

Deno.test("attacks: a static import of a file: URL is refused", opts, async () => {
  assertDenied(
    await run(runtime, "import secret from 'file:///etc/passwd';\nreturn secret;"),
    "SyntaxError",
  );
  for (const outcome of await inBothRealms("return await import('file:///etc/passwd')")) {
    assertDenied(outcome, "dynamic import callback");
  }
  for (const outcome of await inBothRealms(ESCAPE + "return await imp('file:///etc/passwd')")) {
    assertContained(outcome, "Requires read access");
  }
  await assertStillServes();
});

Deno.test("attacks: a JSON import of a host file is refused", opts, async () => {
  const file = new URL("../deno.json", import.meta.url).href;
  const code = ESCAPE + `return await imp(${JSON.stringify(file)}, {with: {type: 'json'}})`;
  for (const outcome of await inBothRealms(code)) assertContained(outcome, "Requires read access");
  await assertStillServes();
});

Deno.test("attacks: the service's environment is not readable", opts, async () => {
  assertDenied(await run(runtime, "return Deno.env.toObject()"), "NotCapable");
  const viaNode = ESCAPE + "return JSON.stringify((await imp('node:process')).default.env)";
  for (const outcome of await inBothRealms(viaNode)) assertContained(outcome, "NotCapable");
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
      for (
        const code of [
          `return await (await fetch('${url}')).text()`,
          `await Deno.connect({hostname: '127.0.0.1', port: ${server.addr.port}})`,
        ]
      ) {
        for (const outcome of await inBothRealms(code)) assertDenied(outcome, "NotCapable");
      }
      const viaNode = ESCAPE + `const net = await imp('node:net');\n` +
        `await new Promise((ok, fail) => net.connect(${server.addr.port}, '127.0.0.1', ok)` +
        `.on('error', fail));`;
      for (const outcome of await inBothRealms(viaNode)) assertContained(outcome, "NotCapable");
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
  const viaNode = ESCAPE +
    "return (await imp('node:child_process')).execFileSync('/usr/bin/id').toString()";
  for (const outcome of await inBothRealms(viaNode)) assertContained(outcome, "NotCapable");
  await assertStillServes();
});

Deno.test("attacks: npm: packages cannot be imported", opts, async () => {
  for (const outcome of await inBothRealms(ESCAPE + "return await imp('npm:left-pad@1.3.0')")) {
    assertContained(outcome, "--no-npm");
  }
  await assertStillServes();
});

Deno.test("attacks: two concurrent runs cannot talk over BroadcastChannel", opts, async () => {
  // Both stay busy for a while whatever they find, so the runs overlap.
  const open = "const BC = globalThis.BroadcastChannel;\n" +
    "const channel = typeof BC === 'function' ? new BC('leak') : undefined;\n";
  const [sender, listener] = await Promise.all([
    run(
      runtime,
      open + "for (let i = 0; i < 30; i++) { channel?.postMessage('secret ' + i);\n" +
        "await new Promise((r) => setTimeout(r, 10)); }\nreturn typeof BC;",
      { tenant: "bc-sender" },
    ),
    run(
      runtime,
      open + "let got = 0; if (channel) channel.onmessage = () => got++;\n" +
        "await new Promise((r) => setTimeout(r, 400)); return [typeof BC, got];",
      { tenant: "bc-listener" },
    ),
  ]);
  assertEquals(sender.retVal, '"undefined"', sender.stderr);
  assertEquals(listener.retVal, '["undefined",0]', listener.stderr);
  assert(sender.instanceId !== listener.instanceId, "concurrent runs use separate runners");
  // Nor through Node's worker_threads, which no realm can import.
  const viaNode = ESCAPE + "return typeof (await imp('node:worker_threads')).BroadcastChannel";
  for (const outcome of await inBothRealms(viaNode)) assertContained(outcome, "BroadcastChannel");
  await assertStillServes();
});

Deno.test("attacks: the caches API is gone in every realm", opts, async () => {
  for (const outcome of await inBothRealms("return [typeof caches, typeof CacheStorage]")) {
    assertEquals(outcome.retVal, '["undefined","undefined"]');
  }
  await assertStillServes();
});

Deno.test("attacks: code cannot write to the service's stdout or stderr", {
  ...opts,
  ...inProcessOnly("the stdout/stderr attack (it reads a service's own stdout)"),
}, async () => {
  // The service runs in a child process here so its real stdout can be inspected.
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  const modUrl = new URL("../src/sandbox/javascript/mod.ts", import.meta.url).href;
  const attacks = [
    "Deno.stdout?.writeSync(new TextEncoder().encode('FORGED-0\\n'));",
    ESCAPE + "W.console.log('FORGED-1'); W.console.error('FORGED-2');",
    ESCAPE + "const p = (await imp('node:process')).default; p.stdout.write('FORGED-3\\n');",
    ESCAPE + "(await imp('node:fs')).writeSync(1, 'FORGED-5\\n');",
  ].map((code) => code + "\nreturn typeof Deno.stdout;");
  await Deno.writeTextFile(
    script,
    `import { createJavaScriptRuntime } from ${JSON.stringify(modUrl)};
const runtime = createJavaScriptRuntime({ poolSize: 1, maxInstances: 2, memoryLimitMb: 128,
  maxOutputBytes: 65536, requireIsolation: [], debug: false });
await runtime.start();
const outcomes = [];
// Each as a runner's first run (its own realm), then in a kept worker's context.
for (const code of ${JSON.stringify(attacks)}) {
  for (let i = 0; i < 2; i++) {
    outcomes.push(await runtime.run({ taskId: "t", language: "javascript", timeoutMs: 5000,
      tenant: "stdio-" + code.length, code }));
  }
}
console.log("RESULT " + JSON.stringify(outcomes));
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
    assert(lines[0].startsWith("RESULT "), stdout);
    assert(!stderr.includes("FORGED"), stderr);
    const outcomes = JSON.parse(lines[0].slice("RESULT ".length)) as RunOutcome[];
    // A first run's W.console is the run's own console: its output is the run's, nothing more.
    for (const outcome of outcomes) {
      const written = outcome.stdout + outcome.stderr;
      assert(!/FORGED-[035]/.test(written), written);
    }
  } finally {
    await Deno.remove(script);
  }
  await assertStillServes();
});

Deno.test(
  "attacks: frames forged on the worker's channel cannot break the protocol",
  opts,
  async () => {
    // A first run can reach its worker's postMessage through the global's prototype: whatever
    // it posts is its own run's business, and the runner ends that worker after the run.
    const forge = "let p = globalThis;\n" +
      "while (p && !Object.getOwnPropertyNames(p).includes('postMessage')) p = Object.getPrototypeOf(p);\n" +
      "const post = p?.postMessage;\nif (post) {\n" +
      "  for (const id of [0, 1, 2, 99]) post.call(globalThis, {t: 'done', id, exitCode: 0, returned: '\"FORGED\"'});\n" +
      "  post.call(globalThis, {t: 'drain'}); post.call(globalThis, 'garbage');\n}\nreturn typeof post;";
    const [first, kept] = await inBothRealms(forge);
    assert(first.retVal === '"undefined"' || first.status !== "crashed", JSON.stringify(first));
    assertEquals(kept.retVal, '"undefined"');
    const next = await run(runtime, "return 'clean'", { tenant: `both-${tenants}` });
    assertEquals(next.retVal, '"clean"');
    await assertStillServes();
  },
);

Deno.test("attacks: Deno internals (core ops, raw printing) are gone", opts, async () => {
  const probe = "return [Object.getOwnPropertySymbols(Deno).length, typeof Deno.core, " +
    "typeof globalThis.__bootstrap, typeof Deno[Symbol.for('Deno.internal')]]";
  for (const outcome of await inBothRealms(probe)) {
    assertEquals(outcome.retVal, '[0,"undefined","undefined","undefined"]');
  }
  await assertStillServes();
});

Deno.test("attacks: host details are not answered", opts, async () => {
  const probe = "const r = [];\nfor (const f of [() => Deno.execPath(), () => Deno.cwd()]) {\n" +
    "  try { r.push(f()); } catch (e) { r.push(e.name); }\n}\n" +
    "r.push(String(Deno.ppid), String(Deno.mainModule));\nreturn r;";
  for (const outcome of await inBothRealms(probe)) {
    assertEquals(outcome.retVal, '["NotCapable","NotCapable","undefined","undefined"]');
  }
  await assertStillServes();
});

Deno.test("attacks: signal listeners cannot be installed", opts, async () => {
  for (
    const outcome of await inBothRealms(
      "Deno.addSignalListener('SIGTERM', () => {}); return 'added'",
    )
  ) {
    assertDenied(outcome, "not available in the sandbox");
  }
  const viaNode = ESCAPE + "(await imp('node:process')).default.on('SIGINT', () => {});";
  for (const outcome of await inBothRealms(viaNode)) {
    assertContained(outcome, "not available in the sandbox");
  }
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
    const pollute = "Object.prototype.polluted = 'yes'; Array.prototype.includes = () => true;\n" +
      "JSON.stringify = () => '\"hijacked\"'; globalThis.leak = 1;\n" +
      "try { URL.prototype.toString = () => 'hijacked'; } catch {}\n" +
      "try { TextEncoder.prototype.encode = () => 'hijacked'; } catch {}\nreturn 1;";
    const victim =
      "return [({}).polluted, [1].includes(2), typeof leak, String(new URL('http://a/')),\n" +
      "  new TextEncoder().encode('a').length];";
    const tenant = { tenant: "pollution" };
    // In the first run's realm, then in a kept worker's context: neither reaches the next run.
    for (let i = 0; i < 2; i++) {
      const polluter = await run(runtime, pollute, tenant);
      assertEquals(polluter.status, "success", polluter.stderr);
      const outcome = await run(runtime, victim, tenant);
      assertEquals(outcome.instanceId, polluter.instanceId);
      assertEquals(outcome.status, "success", outcome.stderr);
      assertEquals(outcome.retVal, '[null,false,"undefined","http://a/",1]');
    }
    await assertStillServes();
  },
);

Deno.test(
  "attacks: what runs share is frozen, and a kept worker's global is out of reach",
  opts,
  async () => {
    const tenant = { tenant: "frozen" };
    await run(runtime, "return 0", tenant);
    const probe = "const r = [];\n" +
      "for (const target of [URL.prototype, Object.getPrototypeOf(URL.prototype), TextEncoder, Object.getPrototypeOf(Deno)]) {\n" +
      "  r.push(Object.isFrozen(target));\n}\n" +
      "let global = 'unreached';\ntry {\n" +
      "  EventTarget.prototype.addEventListener.call(undefined, 'message', () => {}); global = 'listened';\n" +
      "} catch (e) { r.push(e.message); }\n" +
      "try { global = console.log.constructor('return this')(); } catch (e) { r.push(e.message); }\n" +
      "r.push(typeof global === 'string' ? global : 'reached');\nreturn r;";
    const outcome = await run(runtime, probe, tenant);
    assertEquals(outcome.status, "success", outcome.stderr);
    const [url, object, log, deno, ...rest] = JSON.parse(outcome.retVal);
    // The run's own Deno facade is its own; what it inherits is frozen.
    assertEquals([url, object, log], [true, true, true]);
    assertEquals(typeof deno, "boolean");
    assertEquals(rest.at(-1), "unreached");
    await assertStillServes();
  },
);

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
  "attacks: a finished run's listeners and loops never see the tenant's later runs",
  opts,
  async () => {
    const tenant = { tenant: "listener" };
    // First run: its own realm. It listens on its global and starts loops that no timer
    // tracks; the runner ends that worker after the run.
    const spy = "const seen = [];\n" +
      "EventTarget.prototype.addEventListener.call(globalThis, 'message', (e) => seen.push(e.data));\n" +
      "(async () => { while (true) { await crypto.subtle.digest('SHA-256', new Uint8Array(1));\n" +
      "  if (seen.length) console.log('SPY', JSON.stringify(seen)); } })();\nreturn 'listening';";
    const spied = await run(runtime, spy, tenant);
    assertEquals(spied.retVal, '"listening"', spied.stderr);
    for (let i = 0; i < 3; i++) {
      const victim = await run(runtime, "console.log('victim'); return input.secret", {
        ...tenant,
        input: { secret: `S3CRET-${i}` },
      });
      assertEquals(victim.status, "success", victim.stderr);
      assertEquals(victim.stdout, "victim\n");
      assertEquals(victim.retVal, JSON.stringify(`S3CRET-${i}`));
    }
    // In a kept worker's context: an op loop outlives its run. The runner is retired (it burns
    // CPU while idle), never seen again by the tenant's runs.
    const loop =
      "(async () => { while (true) { await crypto.subtle.digest('SHA-256', new Uint8Array(1)); } })();\n" +
      "return 'looping';";
    const looper = await run(runtime, loop, tenant);
    assertEquals(looper.retVal, '"looping"');
    await assertNoSpinningRunner(runtime);
    const after = await run(runtime, "return input.secret", { ...tenant, input: { secret: "x" } });
    assertEquals(after.retVal, '"x"');
    await assertStillServes();
  },
);

Deno.test("attacks: stacks a run can read never name the service's files", opts, async () => {
  const code = "const sync = new Error('sync').stack;\nawait null;\n" +
    "const later = new Error('later').stack;\nlet timer;\n" +
    "await new Promise((r) => setTimeout(() => { timer = new Error('timer').stack;\n" +
    "  console.trace('trace'); r(); }, 1));\n" +
    "let json; JSON.stringify({toJSON() { json = new Error('json').stack; return 1; }});\n" +
    "let inspected; console.log({ get x() { inspected = new Error('inspect').stack; return 1; } });\n" +
    "return_val([sync, later, timer, json].join('\\n'));\n" +
    "return {toJSON() { return new Error('returned').stack; }};";
  const thrower =
    "throw { get stack() { throw new Error(new Error('getter').stack); }, message: 'm' };";
  // First in a first run's worker realm, then in a kept runner's vm contexts.
  for (
    const outcome of [
      ...(await inBothRealms(code)),
      await run(runtime, code, { tenant: `both-${tenants}` }),
    ]
  ) {
    assertEquals(outcome.status, "success", outcome.stderr);
    const text = `${outcome.retVal}\n${outcome.stderr}`;
    for (const name of ["sync", "later", "timer", "trace", "json"]) {
      assertStringIncludes(text, name);
    }
    const home = new URL("../", import.meta.url).pathname;
    for (const leak of ["file:", home, "/src/", "/sandbox/", "run_scope", "worker"]) {
      assert(!text.includes(leak), `a stack names ${leak}: ${text}`);
    }
  }
  // An error whose stack getter throws is still the run's error, not a crash.
  for (const outcome of await inBothRealms(thrower)) {
    assertEquals(outcome.status, "error", outcome.error);
    assert(!outcome.stderr.includes("file:"), outcome.stderr);
  }
  await assertStillServes();
});

Deno.test("attacks: Deno.exit and process.exit only end the run", opts, async () => {
  // A first run's, and a kept worker's (after a first run), each end only the run.
  const first = await run(runtime, "Deno.exit(3);", { tenant: "exit-first" });
  await run(runtime, "return 0", { tenant: "exit-kept" });
  const kept = await run(runtime, "Deno.exit(3);", { tenant: "exit-kept" });
  for (const outcome of [first, kept]) {
    assertEquals([outcome.status, outcome.exitCode], ["error", 3]);
  }
  for (
    const outcome of await inBothRealms(ESCAPE + "(await imp('node:process')).default.exit(4);")
  ) {
    assertContained(outcome, "exit");
  }
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
      const viaNode = ESCAPE + `(await imp('node:process')).default.kill(${pid}, 'SIGKILL')`;
      for (const outcome of await inBothRealms(viaNode)) assertContained(outcome, "NotCapable");
    }
  } finally {
    victim.kill("SIGKILL");
    await victim.status;
  }
  await assertStillServes();
});

Deno.test(
  "attacks: a run that closes its worker only ends itself",
  opts,
  async () => {
    const close =
      "let p = globalThis;\nwhile (p && !Object.getOwnPropertyNames(p).includes('close')) " +
      "p = Object.getPrototypeOf(p);\np?.close.call(globalThis);\nreturn typeof p?.close;";
    const [first, kept] = await inBothRealms(close);
    assertEquals(first.retVal, '"undefined"', JSON.stringify(first));
    assertEquals(kept.retVal, '"undefined"', JSON.stringify(kept));
    assertEquals((await run(runtime, SEED, { tenant: `both-${tenants}` })).retVal, "42");
    await assertStillServes();
  },
);

Deno.test("attacks: an unhandled rejection never takes the runner down", opts, async () => {
  const code = "for (let i = 0; i < 100; i++) Promise.reject(new Error('r' + i));\nreturn 1;";
  for (const outcome of await inBothRealms(code)) {
    assertEquals(outcome.status, "error");
    assertStringIncludes(outcome.stderr, "Uncaught");
  }
  await assertStillServes();
});

Deno.test(
  "attacks: no run can start a worker of its own",
  opts,
  async () => {
    const direct = "return [typeof Worker, typeof SharedWorker]";
    for (const outcome of await inBothRealms(direct)) {
      assertEquals(outcome.retVal, '["undefined","undefined"]');
    }
    const viaNode = ESCAPE + "const wt = await imp('node:worker_threads');\n" +
      "return typeof new wt.Worker('1', {eval: true});";
    for (const outcome of await inBothRealms(viaNode)) assertContained(outcome, "Worker");
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
