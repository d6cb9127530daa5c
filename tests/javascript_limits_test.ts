/**
 * Resource limits of JS runs: time, heap, ArrayBuffers, output. Each attempt is followed by
 * a normal run that must still succeed and a check that no runner is left spinning a core.
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
const MAX_OUTPUT = 32 * 1024;
let runtime: Runtime;

async function assertStillServes(): Promise<void> {
  const outcome = await run(runtime, SEED);
  assertEquals(outcome.status, "success", outcome.stderr);
  assertEquals(outcome.stdout, "Hello World\n");
  assertEquals(outcome.retVal, "42");
  await assertNoSpinningRunner(runtime);
}

function assertTimedOut(outcome: RunOutcome, timeoutMs: number): void {
  assertEquals(outcome.status, "timeout");
  assertEquals(outcome.error, `execution timed out after ${timeoutMs} ms`);
}

Deno.test("limits: runtime starts", opts, async () => {
  runtime = await startRuntime({ memoryLimitMb: 128, maxOutputBytes: MAX_OUTPUT });
});

Deno.test("limits: while(true){} times out and keeps what was printed", opts, async () => {
  const outcome = await run(runtime, "console.log('started');\nwhile (true) {}", {
    timeoutMs: 500,
    tenant: "loop",
  });
  assertTimedOut(outcome, 500);
  assertEquals(outcome.stdout, "started\n");
  await assertStillServes();
});

Deno.test("limits: Atomics.wait forever times out", opts, async () => {
  const outcome = await run(
    runtime,
    "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);",
    { timeoutMs: 500 },
  );
  assertTimedOut(outcome, 500);
  await assertStillServes();
});

Deno.test("limits: a catastrophic regex times out", opts, async () => {
  const outcome = await run(runtime, "return /^(a+)+$/.test('a'.repeat(60) + 'b');", {
    timeoutMs: 500,
  });
  assertTimedOut(outcome, 500);
  await assertStillServes();
});

Deno.test("limits: an async loop that never yields to timers times out", opts, async () => {
  const outcome = await run(runtime, "while (true) { await null; }", { timeoutMs: 500 });
  assertTimedOut(outcome, 500);
  await assertStillServes();
});

Deno.test("limits: a heap bomb ends as memory_limit", opts, async () => {
  const outcome = await run(
    runtime,
    "const a = [];\nwhile (true) a.push(new Array(100000).fill(a.length));",
    { timeoutMs: 20_000 },
  );
  assertEquals(outcome.status, "memory_limit");
  assertEquals(outcome.error, "memory limit of 128 MiB exceeded");
  await assertStillServes();
});

Deno.test("limits: an ArrayBuffer bomb ends as memory_limit", opts, async () => {
  const outcome = await run(
    runtime,
    "const a = [];\nwhile (true) a.push(new Uint8Array(64 * 1024 * 1024).fill(1));",
    { timeoutMs: 20_000 },
  );
  assertEquals(outcome.status, "memory_limit");
  assertStringIncludes(outcome.error ?? "", "memory");
  await assertStillServes();
});

Deno.test("limits: one huge ArrayBuffer is refused", opts, async () => {
  const outcome = await run(runtime, "new Uint8Array(8 * 1024 * 1024 * 1024);", {
    timeoutMs: 20_000,
  });
  assertEquals(outcome.status, "memory_limit");
  await assertStillServes();
});

Deno.test(
  "limits: a stdout flood keeps its head and tail and runs to its timeout",
  opts,
  async () => {
    const outcome = await run(
      runtime,
      "console.log('first line');\nwhile (true) console.log('flood flood flood');",
      { timeoutMs: 1_000 },
    );
    assertTimedOut(outcome, 1_000);
    assertEquals(outcome.truncated, true);
    assert(
      outcome.stdout.startsWith("first line\nflood flood flood\n"),
      outcome.stdout.slice(0, 80),
    );
    assert(/\n\[… \d+ bytes of output dropped …\]\n/.test(outcome.stdout), "the dropped line");
    assert(outcome.stdout.endsWith("flood\n"));
    // Bounded, whatever was printed: the cap plus the line that says what was dropped.
    assert(new TextEncoder().encode(outcome.stdout).length <= MAX_OUTPUT + 100);
    await assertStillServes();
  },
);

Deno.test("limits: output past the cap keeps the result at its end", opts, async () => {
  const code = "for (let i = 0; i < 5000; i++) console.log('progress', i);\n" +
    "console.log('__COZE_RETURN_VAL_START__');\nconsole.log(JSON.stringify({score: 1}));\n" +
    "console.log('__COZE_RETURN_VAL_END__');";
  const outcome = await run(runtime, code);
  assertEquals(outcome.status, "success", outcome.error);
  assertEquals(outcome.truncated, true);
  assertEquals(outcome.retVal, '{"score":1}');
  assert(outcome.stdout.startsWith("progress 0\n"));
  assert(!outcome.stdout.includes("__COZE_RETURN_VAL"), "markers are taken out");
});

Deno.test(
  "limits: one oversized stderr write keeps head and tail, cut between characters",
  opts,
  async () => {
    const outcome = await run(runtime, "console.error('é'.repeat(40000)); return 1;");
    assertEquals(outcome.status, "success");
    assertEquals(outcome.truncated, true);
    const [head, tail] = outcome.stderr.split(/\n\[… \d+ bytes of output dropped …\]\n/);
    assert(/^é+$/.test(head) && /^é*\n$/.test(tail), "cut between characters");
    assert(new TextEncoder().encode(head + tail).length <= MAX_OUTPUT);
    await assertStillServes();
  },
);

Deno.test("limits: an uncaught error larger than the cap is error, truncated", opts, async () => {
  const outcome = await run(runtime, "throw new Error('e'.repeat(100000));");
  assertEquals(outcome.status, "error");
  assertEquals(outcome.truncated, true);
  assert(outcome.stderr.startsWith("Uncaught Error: eee"));
  await assertStillServes();
});

Deno.test("limits: with the stop policy, output past the cap stops the run", opts, async () => {
  const stopping = await startRuntime(
    { memoryLimitMb: 128, maxOutputBytes: MAX_OUTPUT, outputPolicy: "stop" },
  );
  try {
    const flood = await run(stopping, "while (true) console.log('flood flood flood');", {
      timeoutMs: 20_000,
    });
    assertEquals(flood.status, "output_limit");
    assertEquals(flood.truncated, true);
    assert(flood.stdout.startsWith("flood flood flood\n"));
    assertEquals(flood.error, `output limit of ${MAX_OUTPUT} bytes exceeded`);
    const big = await run(stopping, "console.log('z'.repeat(20 * 1024 * 1024));", {
      timeoutMs: 20_000,
    });
    assertEquals(big.status, "output_limit");
    const fine = await run(stopping, SEED);
    assertEquals(fine.retVal, "42");
  } finally {
    await stopping.shutdown();
  }
});

Deno.test("limits: a return value larger than the cap is output_limit", opts, async () => {
  const outcome = await run(runtime, "return 'x'.repeat(100000);");
  assertEquals(outcome.status, "output_limit");
  assertEquals(outcome.truncated, true);
  // The cap counts UTF-8 bytes: 2 bytes per "é", 3 per "日", fewer UTF-16 units than the cap.
  for (
    const code of [
      `return_val('é'.repeat(${MAX_OUTPUT / 2 + 1}))`,
      `return '日'.repeat(${Math.ceil(MAX_OUTPUT / 3)})`,
    ]
  ) {
    const wide = await run(runtime, code);
    assertEquals([wide.status, wide.retVal, wide.truncated], ["output_limit", "", true], code);
  }
  const fits = await run(runtime, `return_val('é'.repeat(${MAX_OUTPUT / 2}))`);
  assertEquals(fits.status, "success");
  await assertStillServes();
});

Deno.test(
  "limits: one write larger than a frame is kept as head and tail, not a crash",
  opts,
  async () => {
    const outcome = await run(runtime, "console.log('z'.repeat(20 * 1024 * 1024));", {
      timeoutMs: 20_000,
    });
    assertEquals(outcome.status, "success", outcome.error);
    assertEquals(outcome.truncated, true);
    assert(new TextEncoder().encode(outcome.stdout).length <= MAX_OUTPUT + 100);
    await assertStillServes();
  },
);

Deno.test("limits: printing a string that exhausts memory is memory_limit", opts, async () => {
  const outcome = await run(runtime, "console.log('z'.repeat(80 * 1024 * 1024));", {
    timeoutMs: 20_000,
  });
  assertEquals(outcome.status, "memory_limit", outcome.error);
  await assertStillServes();
});

Deno.test("limits: output under the cap is not truncated", opts, async () => {
  const outcome = await run(runtime, "console.log('y'.repeat(1000)); return 1;");
  assertEquals(outcome.status, "success");
  assertEquals(outcome.truncated, false);
  assertEquals(outcome.stdout.length, 1001);
});

Deno.test(
  "limits: code and input beyond one frame are refused without a runner",
  opts,
  async () => {
    const outcome = await run(runtime, "return input.length", {
      input: "x".repeat(70 * 1024 * 1024),
    });
    assertEquals(outcome.status, "error");
    assertStringIncludes(outcome.stderr, "must stay under 64 MiB");
    const large = await run(runtime, "return input.length", { input: "x".repeat(4 * 1024 * 1024) });
    assertEquals(large.retVal, String(4 * 1024 * 1024));
    await assertStillServes();
  },
);

Deno.test("limits: runtime shuts down", opts, async () => {
  await runtime.shutdown();
});
