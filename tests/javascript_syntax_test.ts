/**
 * Untrusted JS/TS is parsed and type-stripped in syntax processes, never in the service's
 * thread: hostile input neither stalls nor grows the service, a check past its deadline is
 * answered and its process replaced, and syntax problems name the offending token the way V8
 * does, with the same message and position in `/validate_code` and in a run's stderr. Real
 * processes throughout: the service, its syntax processes, and programs that misbehave.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "./helpers/assert.ts";
import { spawnService } from "./helpers/service_process.ts";
import { until } from "./helpers/wait.ts";
import { run, SEED, startRuntime } from "./javascript_helpers.ts";
import type { Runtime } from "../src/runtime.ts";
import { SyntaxService } from "../src/sandbox/javascript/syntax_service.ts";
import { SELF_SYNTAX_FLAG, SYNTAX_ENTRY } from "../src/sandbox/javascript/syntax_command.ts";
import { SyntaxProcess } from "../src/sandbox/javascript/syntax_process.ts";
import { encodeFrame, FrameReader } from "../src/sandbox/javascript/syntax_protocol.ts";
import { describeToken } from "../src/sandbox/javascript/syntax_message.ts";
import { SourceMap } from "../src/sandbox/javascript/source_map.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/**
 * About 60 KiB of valid TypeScript the TypeScript parser spends seconds on: nested ternaries
 * whose parenthesised branches could each start an arrow function, so it tries both readings
 * at every level (11 s on the 2-core VM, in the service's thread before syntax processes).
 */
function slowTypeScript(depth = 14): string {
  const statement = "x = " + "a ? (b): c => ".repeat(depth) + "d;\n";
  return statement.repeat(Math.ceil(60 * 1024 / statement.length));
}

/** 34 KiB of TypeScript nested deeper than the parser's wasm stack: it breaks the parser. */
function parserBreaking(index: number): string {
  const head = `const a${index}: number[] = `;
  return head + "[".repeat(34 * 1024 - head.length);
}

/** Live syntax processes whose parent is `parent`. */
function syntaxPids(parent = Deno.pid): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`);
      if (!cmdline.includes(SYNTAX_ENTRY.pathname) && !cmdline.includes(SELF_SYNTAX_FLAG)) continue;
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (fields[0] !== "Z" && Number(fields[1]) === parent) pids.push(Number(entry.name));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/** Scheduler state of `pid` (R running, S sleeping...), or "" when it is gone. */
function processState(pid: number): string {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  } catch {
    return "";
  }
}

/** Resident memory of `pid` in bytes (what `Deno.memoryUsage().rss` says inside it). */
function residentBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(status.match(/^VmRSS:\s+(\d+) kB$/m)![1]) * 1024;
}

async function postJson(url: string, path: string, body: unknown) {
  const response = await fetch(url + path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

/** Starts the service (JS and TS only) as a process of its own. */
async function serviceProcess() {
  const service = spawnService("main.ts", { FAAS_LANGUAGES: "javascript,typescript" });
  const url = await service.listening();
  return {
    url,
    pid: service.child.pid,
    async [Symbol.asyncDispose]() {
      // A clean stop: the service stops its syntax processes and runners itself.
      service.child.kill("SIGTERM");
      await service.child.status;
      await service[Symbol.asyncDispose]();
    },
  };
}

Deno.test(
  "syntax: checking hostile TypeScript does not stall the service's other routes",
  opts,
  async () => {
    await using service = await serviceProcess();
    const { url } = service;
    assertEquals((await postJson(url, "/run_code", { language: "js", code: SEED })).status, 200);
    const started = performance.now();
    const checked = postJson(url, "/validate_code", {
      language: "typescript",
      code: slowTypeScript(),
    }).then((answer) => ({ ...answer, ms: performance.now() - started }));
    const ran = postJson(url, "/run_code", { language: "js", code: SEED })
      .then((answer) => ({ ...answer, ms: performance.now() - started }));
    let done = false;
    checked.finally(() => done = true);
    const healthMs: number[] = [];
    while (!done) {
      const probe = performance.now();
      const health = await fetch(url + "/health");
      await health.body?.cancel();
      healthMs.push(performance.now() - probe);
    }
    const validation = await checked;
    const trivial = await ran;
    console.log(
      `validate ${Math.round(validation.ms)} ms, trivial run ${Math.round(trivial.ms)} ms, ` +
        `/health max ${Math.round(Math.max(...healthMs))} ms over ${healthMs.length} probes`,
    );
    assertEquals(validation.status, 200);
    assertEquals(validation.body.valid, false);
    assertMatch(validation.body.error.message, /^the syntax check took longer than \d+ ms$/);
    assertEquals([validation.body.error.line, validation.body.error.column], [1, 1]);
    // The service's thread stayed free: every probe during the check was answered promptly.
    assert(healthMs.length >= 5, `expected several probes during the check, got ${healthMs}`);
    assert(Math.max(...healthMs) < 500, `a /health probe took ${Math.max(...healthMs)} ms`);
    // A trivial run waits at most for the deadline and a replacement process.
    assertEquals(trivial.body.output.ret_val, "42");
    assert(trivial.ms < 5_000, `a trivial run took ${trivial.ms} ms`);
  },
);

Deno.test(
  "syntax: TypeScript that breaks the parser does not grow the service",
  opts,
  async () => {
    await using service = await serviceProcess();
    const { url, pid } = service;
    // Warm: the routes, the schemas and a first check of each language are loaded.
    for (const language of ["js", "ts", "js", "ts"]) {
      await postJson(url, "/validate_code", { language, code: "let x = 1;\nreturn x;" });
    }
    const before = residentBytes(pid);
    for (let i = 0; i < 80; i++) {
      const { status, body } = await postJson(url, "/validate_code", {
        language: "typescript",
        code: parserBreaking(i),
      });
      assertEquals(status, 200);
      assertEquals(body.valid, false);
      assertStringIncludes(body.error.message, "the TypeScript parser gave up on this code");
    }
    const growth = residentBytes(pid) - before;
    console.log(`service RSS grew by ${(growth / 1024 / 1024).toFixed(1)} MiB`);
    // Before syntax processes, the same 80 inputs grew the service by 253 MiB.
    assert(growth < 48 * 1024 * 1024, `the service grew by ${growth} bytes`);
    const later = await postJson(url, "/validate_code", {
      language: "typescript",
      code: "const n: number = 1;\nreturn n;",
    });
    assertEquals(later.body, { valid: true, error: null });
  },
);

let runtime: Runtime;

Deno.test("syntax: a runtime with a short check deadline starts", opts, async () => {
  runtime = await startRuntime({}, { syntax: { deadline: { baseMs: 300, perMiBMs: 0 } } });
});

Deno.test(
  "syntax: a syntax process has no permission, no remote or npm modules, a heap cap, a lower priority",
  opts,
  () => {
    const [pid] = syntaxPids();
    const argv = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0");
    for (const flag of ["--no-config", "--no-remote", "--no-npm", "--no-prompt"]) {
      assert(argv.includes(flag), `expected ${flag} in ${argv.join(" ")}`);
    }
    assert(argv.some((arg) => arg.startsWith("--v8-flags=--max-old-space-size=")));
    assert(!argv.some((arg) => arg.startsWith("--allow")), argv.join(" "));
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // A process group of its own (killed whole), and a niceness above the service's.
    assertEquals(Number(fields[2]), pid);
    assert(Number(fields[16]) > 0, `expected a positive niceness, got ${fields[16]}`);
    // Where the host has prlimit: memory and CPU time bounded (an orphan cannot parse forever).
    if (runtime.info().isolation.rlimit) {
      const limits = Deno.readTextFileSync(`/proc/${pid}/limits`);
      assertMatch(limits, /^Max cpu time\s+300\s+300\s+seconds/m);
      assertMatch(limits, /^Max data size\s+\d+\s+\d+\s+bytes/m);
    }
  },
);

Deno.test(
  "syntax: a check past its deadline is answered as a syntax failure, and the next works",
  opts,
  async () => {
    const validation = await runtime.validate(slowTypeScript(), "typescript");
    assertEquals(validation, {
      valid: false,
      error: { message: "the syntax check took longer than 300 ms", line: 1, column: 1 },
    });
    const outcome = await run(runtime, slowTypeScript(), { language: "typescript" });
    assertEquals(outcome.status, "error");
    assertEquals(outcome.error, undefined);
    assertEquals(
      outcome.stderr,
      "Uncaught SyntaxError: the syntax check took longer than 300 ms\n    at main.ts:1:1\n",
    );
    assertEquals(await runtime.validate("const n: number = 1;", "typescript"), {
      valid: true,
      error: null,
    });
    assertEquals((await run(runtime, SEED)).retVal, "42");
  },
);

Deno.test(
  "syntax: a syntax process killed from outside is replaced",
  opts,
  async () => {
    const [before] = syntaxPids();
    assert(before !== undefined, "expected a syntax process");
    Deno.kill(before, "SIGKILL");
    // The check waits for the replacement instead of failing.
    assertEquals(await runtime.validate("return 1 +", "javascript"), {
      valid: false,
      error: { message: "Unexpected end of input", line: 1, column: 11 },
    });
    const after = syntaxPids();
    assertEquals(after.length, 1);
    assert(after[0] !== before);
  },
);

Deno.test(
  "syntax: a check whose process is killed from outside is checked again on the replacement",
  opts,
  async () => {
    const others = syntaxPids();
    const patient = new SyntaxService({ deadline: { baseMs: 20_000, perMiBMs: 0 } });
    try {
      await patient.start();
      const [pid] = syntaxPids().filter((pid) => !others.includes(pid));
      // Valid, and slow enough to be caught while its process parses it.
      const code = slowTypeScript(11);
      const checked = patient.prepare(code, { language: "typescript", purpose: "validate" });
      await until(() => processState(pid) === "R", { what: "the check to start" });
      Deno.kill(pid, "SIGKILL");
      assertEquals(await checked, { ok: true, code });
      assert(!syntaxPids().includes(pid));
    } finally {
      await patient.shutdown();
    }
  },
);

Deno.test(
  "syntax: TypeScript that breaks the parser is answered, and its process replaced",
  opts,
  async () => {
    const [before] = syntaxPids();
    const broken = await run(runtime, parserBreaking(0), { language: "typescript" });
    assertEquals(broken.status, "error");
    assertStringIncludes(broken.stderr, "the TypeScript parser gave up on this code");
    const later = await run(runtime, "const n: number = 41;\nreturn n + 1;", {
      language: "typescript",
    });
    assertEquals(later.retVal, "42");
    assert(!syntaxPids().includes(before), "expected the broken parser's process to be gone");
  },
);

/** Snippets and the problem V8 reports for them, at the position of the token it names. */
const PROBLEMS: [string, string, number, number][] = [
  ["const a = 1;\nconst b = ;", "Unexpected token ';'", 2, 11],
  ["if (x) {\n  y = 1;\n}\n}", "Unexpected token '}'", 4, 1],
  ["let x = 1\nfoo bar", "Unexpected identifier 'bar'", 2, 5],
  ["return 1 +", "Unexpected end of input", 1, 11],
  ["console.log(1, 2", "missing ) after argument list", 1, 17],
  ["x = 1 2", "Unexpected number", 1, 7],
  ["x = 'a' 'b'", "Unexpected string", 1, 9],
  ["x = 'open", "Invalid or unexpected token", 1, 5],
  ["let await = 1", "Unexpected reserved word", 1, 5],
  ["let x = 1;\nlet x = 2;", "Identifier 'x' has already been declared", 2, 5],
];

Deno.test(
  "syntax: problems name the token as V8 does, the same in /validate_code and in a run",
  opts,
  async () => {
    for (const language of ["javascript", "typescript"] as const) {
      const file = language === "typescript" ? "main.ts" : "main.js";
      for (const [code, message, line, column] of PROBLEMS) {
        const validation = await runtime.validate(code, language);
        assertEquals(validation, { valid: false, error: { message, line, column } }, code);
        const outcome = await run(runtime, code, { language });
        assertEquals(outcome.status, "error");
        assertEquals(
          outcome.stderr,
          `Uncaught SyntaxError: ${message}\n    at ${file}:${line}:${column}\n`,
          code,
        );
      }
    }
    // After TypeScript's own syntax, and after code that had to be transformed.
    const typed = await runtime.validate("let a: number = 1;\nfoo(a bar);", "typescript");
    assertEquals(typed.error, { message: "missing ) after argument list", line: 2, column: 7 });
    const annotation = await runtime.validate("const a = 1;\nlet b: = 2;", "typescript");
    assertEquals(annotation.error, { message: "Unexpected token '='", line: 2, column: 8 });
    const transformed = await runtime.validate("enum E { A }\nconst x = ;", "typescript");
    assertEquals(transformed.error, { message: "Unexpected token ';'", line: 2, column: 11 });
  },
);

Deno.test("syntax: the token named is the one V8 itself names", opts, () => {
  const AsyncFunction = (async () => {}).constructor as new (body: string) => unknown;
  for (const [code, message] of PROBLEMS) {
    let v8 = "";
    try {
      new AsyncFunction(code);
    } catch (error) {
      v8 = (error as Error).message;
    }
    // Where the input ends, V8 names the brace it closes a body with; the check says why.
    if (message !== "Unexpected end of input") assertEquals(message, v8, code);
  }
  const cases: [string, number, string][] = [
    ["x = 1 #a", 6, "Unexpected identifier '#a'"],
    ["x = 1 @", 6, "Invalid or unexpected token"],
    ["x = 1 ...a", 6, "Unexpected token '...'"],
    ["x = 1 true", 6, "Unexpected token 'true'"],
    ["x = 1 enum", 6, "Unexpected reserved word"],
    ["x = 1 static", 6, "Unexpected identifier 'static'"],
    ["x = 1 \\u0061", 6, "Unexpected identifier 'a'"],
    ["x = 3in", 4, "Invalid or unexpected token"],
    ["x = 1 .5", 6, "Unexpected number"],
    ["x = a ?? b || c", 11, "Unexpected token '||'"],
  ];
  for (const [code, offset, expected] of cases) {
    let v8 = "";
    try {
      new AsyncFunction(code);
    } catch (error) {
      v8 = (error as Error).message;
    }
    assertEquals(v8, expected, code);
    assertEquals(describeToken(code, offset), expected, code);
  }
  assertEquals(
    describeToken("x = 1 " + "y".repeat(1000), 6),
    `Unexpected identifier '${"y".repeat(64)}…'`,
  );
});

Deno.test(
  "syntax: stack frames of transformed TypeScript are mapped in a syntax process",
  opts,
  async () => {
    const outcome = await run(
      runtime,
      "enum E { A, B }\n\nconst e = new Error('at B');\nconsole.log(e.stack);\nthrow e;",
      { language: "typescript" },
    );
    assertEquals(outcome.status, "error");
    assertStringIncludes(outcome.stdout, "at main.ts:3:11");
    assertStringIncludes(outcome.stderr, "at main.ts:3:11");
    // The map is version 3 VLQ: `AAAA;AACA` maps line 2 column 0 to line 2 column 0.
    const map = new SourceMap(
      '{"version":3,"sources":["a"],"names":[],"mappings":"AAAA;AACA,IAAI"}',
    );
    assertEquals(map.originalPosition({ line: 2, column: 3 }), { line: 2, column: 0 });
    assertEquals(map.originalPosition({ line: 2, column: 4 }), { line: 2, column: 4 });
    assertEquals(map.originalPosition({ line: 3, column: 0 }), undefined);
  },
);

Deno.test("syntax: the runtime's shutdown leaves no syntax process", opts, async () => {
  assert(syntaxPids().length > 0);
  await runtime.shutdown();
  assertEquals(syntaxPids(), []);
});

Deno.test(
  "syntax: the service's own executable serves as the syntax process",
  opts,
  async () => {
    const others = syntaxPids();
    const self = new SyntaxService({ launch: "self" });
    try {
      await self.start();
      const [pid] = syntaxPids().filter((pid) => !others.includes(pid));
      assertStringIncludes(Deno.readTextFileSync(`/proc/${pid}/cmdline`), SELF_SYNTAX_FLAG);
      assertEquals(
        await self.prepare("let n: number = 1;\nreturn n +;", {
          language: "typescript",
          purpose: "run",
        }),
        { ok: false, problem: { message: "Unexpected token ';'", line: 2, column: 11 } },
      );
      const stripped = await self.prepare("let n: number = 1;", {
        language: "typescript",
        purpose: "run",
      });
      assertEquals(stripped, { ok: true, code: "let n         = 1;" });
    } finally {
      await self.shutdown();
    }
  },
);

Deno.test(
  "syntax: the parser's verdict on code seen lately is reused without asking a process",
  opts,
  async () => {
    const others = syntaxPids();
    const service = new SyntaxService({ processes: 1 });
    try {
      await service.start();
      const [pid] = syntaxPids().filter((pid) => !others.includes(pid));
      const run = { language: "typescript", purpose: "run" } as const;
      const code = "let n: number = 1;\nreturn n +;";
      const first = await service.prepare(code, run);
      assertEquals(first.ok, false);
      // The only process cannot answer now: whatever answers comes from the cache.
      Deno.kill(pid, "SIGSTOP");
      try {
        assertEquals(await service.prepare(code, run), first);
        assertEquals(syntaxPids().filter((pid) => !others.includes(pid)), [pid]);
      } finally {
        Deno.kill(pid, "SIGCONT");
      }
      // Other code, or the same code checked for another purpose, still goes to the process.
      assertEquals(await service.prepare("let m: string = '';", run), {
        ok: true,
        code: "let m         = '';",
      });
    } finally {
      await service.shutdown();
    }
  },
);

Deno.test(
  "syntax: a syntax service that cannot boot fails to start and leaves no process",
  opts,
  async () => {
    const others = syntaxPids();
    const late = new SyntaxService({ bootTimeoutMs: 1 });
    let failure = "";
    await late.start().catch((error) => failure = error.message);
    assertMatch(failure, /^cannot start the syntax service: syntax process boot exceeded 1 ms/);
    assertEquals(late.healthy(), false);
    assertEquals(syntaxPids().filter((pid) => !others.includes(pid)), []);
  },
);

Deno.test(
  "syntax: a shutdown while processes boot waits for them to be gone",
  opts,
  async () => {
    const others = syntaxPids();
    const service = new SyntaxService({ processes: 2 });
    const starting = service.start();
    starting.catch(() => {});
    await until(() => syntaxPids().length > others.length, { what: "a process to boot" });
    await service.shutdown();
    assertEquals(syntaxPids().filter((pid) => !others.includes(pid)), []);
    await starting.catch(() => {});
  },
);

/**
 * A real process speaking the protocol badly: it says `ready`, then answers the first request
 * with what `reply` makes of it (bytes to write).
 */
function misbehaving(reply: string): SyntaxProcess {
  const program = `
    const out = Deno.stdout.writable.getWriter();
    const frame = (value) => {
      const header = new TextEncoder().encode(JSON.stringify(value));
      const bytes = new Uint8Array(8 + header.length);
      new DataView(bytes.buffer).setUint32(0, 4 + header.length);
      new DataView(bytes.buffer).setUint32(4, header.length);
      bytes.set(header, 8);
      return bytes;
    };
    await out.write(frame({ t: "ready" }));
    for await (const _ of Deno.stdin.readable) { await out.write(${reply}); }
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-config", program],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return new SyntaxProcess(child, "misbehaving");
}

Deno.test(
  "syntax: an answer that is oversized or garbage gets its process killed",
  opts,
  async () => {
    const cases: [string, RegExp][] = [
      // A length prefix of 1 GiB: refused before a byte of its body is buffered.
      ["new Uint8Array([64, 0, 0, 0, 1, 2, 3])", /at most 4096 bytes, got one of 1073741824/],
      ['frame({ t: "prepared", id: 1, ok: "yes", rss: 1 })', /unexpected frame/],
      ['frame({ t: "prepared", id: 7, ok: true, rss: 1 })', /not pending/],
      // A header that is not UTF-8, and one longer than its frame.
      ["new Uint8Array([0, 0, 0, 6, 0, 0, 0, 2, 0xff, 0xfe])", /invalid|encoded data/i],
      ["new Uint8Array([0, 0, 0, 6, 0, 0, 0, 9, 0x7b, 0x7d])", /frame header/],
      // Code announced longer than the payload that carries it.
      [
        'frame({ t: "prepared", id: 1, ok: true, rss: 1, codeBytes: 5 })',
        /unexpected frame/,
      ],
    ];
    for (const [reply, reason] of cases) {
      const misbehaver = misbehaving(reply);
      await misbehaver.ready;
      const exchange = await misbehaver.request(
        { t: "prepare", language: "javascript", code: "return 1", output: false },
        { deadlineMs: 10_000, maxAnswerBytes: 4096 },
      );
      assertEquals(exchange.kind, "garbage", reply);
      if (exchange.kind === "garbage") assertMatch(exchange.reason, reason);
      const status = await misbehaver.exited;
      assertEquals(status.signal, "SIGKILL");
    }
    const reader = new FrameReader();
    const frame = encodeFrame({ a: 1 }, [new Uint8Array([7])]);
    assertEquals(reader.push(frame.subarray(0, 3), 100), []);
    assertEquals(reader.push(frame.subarray(3), 100), [
      { header: '{"a":1}', payload: new Uint8Array([7]) },
    ]);
  },
);
