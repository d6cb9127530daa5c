/**
 * Tests of the benchmark harness's pieces, most against real subprocess servers: statistics,
 * the load generator (round-robin over servers), the programs and their checks, the
 * process-per-request baselines, the boot, warm-context and fork floors, the Zipf sampler and
 * the many-tenant load shapes, the floors and targets of the report, CPU cgroups, process-tree
 * memory and CPU time, and starting/stopping servers. No timing is asserted: the machine is
 * shared and speed is proven by the benchmark run only.
 */

import assert from "node:assert/strict";
import { measureBootFloor } from "../bench/boot_floor.ts";
import { CpuGroup } from "../bench/cpu_group.ts";
import { checkRunSucceeded, runLoad } from "../bench/load.ts";
import {
  descendants,
  MemorySampler,
  startTimeOf,
  treeCpuMs,
  treeMemory,
} from "../bench/proc_tree.ts";
import {
  EVALUATOR_LOG,
  expectedScore,
  HOSTILE_STATUS,
  hostileProgram,
  program,
  requestBody,
} from "../bench/programs.ts";
import {
  describeFigure,
  makeFigure,
  makeReference,
  meets,
  renderMarkdown,
} from "../bench/report.ts";
import { freePort, ServerStartError, startServer } from "../bench/server_process.ts";
import { percentile, ratio, summarize } from "../bench/stats.ts";
import {
  resolvePython,
  startContextFloor,
  startFloor,
  startForkFloor,
  startSpawnBaseline,
} from "../bench/targets.ts";
import {
  HOSTILE_TENANTS,
  HOSTILE_TIMEOUT_MS,
  runHostileNeighbours,
  runZipfMix,
  ZIPF_MIX,
  zipfTenants,
} from "../bench/tenants.ts";
import { seededRandom, zipfSampler, zipfWeights } from "../bench/zipf.ts";

Deno.test("percentile interpolates between ranks and handles the edges", () => {
  const sorted = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  assert.deepEqual(percentile(sorted, 50), 5.5);
  assert.deepEqual(percentile(sorted, 0), 1);
  assert.deepEqual(percentile(sorted, 100), 10);
  assert.deepEqual(percentile(sorted, 90), 9.1);
  assert.deepEqual(percentile([7], 99), 7);
  assert.ok(Number.isNaN(percentile([], 50)));
});

Deno.test("summarize counts errors by kind and computes throughput over the span", () => {
  const summary = summarize([30, 10, 20], {
    errorKinds: { http_503: 2, status_timeout: 1 },
    elapsedMs: 1_500,
  });
  assert.deepEqual(summary.ok, 3);
  assert.deepEqual(summary.errors, 3);
  assert.deepEqual(summary.p50, 20);
  assert.deepEqual(summary.mean, 20);
  assert.deepEqual(summary.min, 10);
  assert.deepEqual(summary.max, 30);
  assert.deepEqual(summary.throughput, 2);
});

Deno.test("ratio is null when a side is missing or the reference is zero", () => {
  assert.deepEqual(ratio(4, 2), 2);
  assert.deepEqual(ratio(null, 2), null);
  assert.deepEqual(ratio(4, 0), null);
  assert.deepEqual(ratio(NaN, 2), null);
});

Deno.test("checkRunSucceeded accepts only a success status without an error", () => {
  assert.deepEqual(checkRunSucceeded({ metadata: { status: "success" }, error: "" }), undefined);
  assert.deepEqual(
    checkRunSucceeded({ metadata: { status: "timeout" }, error: "x" }),
    "status_timeout",
  );
  assert.deepEqual(
    checkRunSucceeded({ metadata: { status: "success" }, error: "boom" }),
    "error_field",
  );
  assert.deepEqual(checkRunSucceeded({}), "status_missing");
  assert.deepEqual(checkRunSucceeded("nope"), "bad_body");
});

Deno.test("runLoad against the no-op floor: counts, per-request bodies, non-200s", async () => {
  const floor = await startFloor();
  try {
    const seen: number[] = [];
    const result = await runLoad(`${floor.url}/run_code`, {
      concurrency: 4,
      requests: 25,
      body: (index) => {
        seen.push(index);
        return { language: "js", code: "return 1", ext: { space_id: `t-${index}` } };
      },
    });
    assert.deepEqual(result.sent, 25);
    assert.deepEqual(result.ok, 25);
    assert.deepEqual(result.errors, 0);
    assert.deepEqual(seen.sort((a, b) => a - b), Array.from({ length: 25 }, (_, i) => i));
    assert.ok(result.p50 > 0 && result.p99 >= result.p50 && result.throughput > 0);

    const missing = await runLoad(`${floor.url}/no_such_route`, {
      concurrency: 2,
      requests: 4,
      body: () => ({}),
    });
    assert.deepEqual(missing.ok, 0);
    assert.deepEqual(missing.errorKinds, { http_404: 4 });
    assert.match(missing.errorSamples.http_404, /not found/i);

    const judged = await runLoad(`${floor.url}/run_code`, {
      concurrency: 1,
      requests: 3,
      body: () => ({}),
      check: () => "wrong_result",
    });
    assert.deepEqual(judged.errorKinds, { wrong_result: 3 });
  } finally {
    const stopped = await floor.stop();
    assert.deepEqual(stopped.forced, false);
    assert.deepEqual(stopped.leftovers, 0);
  }
});

Deno.test("runLoad with a duration stops starting requests after it", async () => {
  const floor = await startFloor();
  try {
    const result = await runLoad(`${floor.url}/run_code`, {
      concurrency: 2,
      durationMs: 200,
      body: () => ({}),
    });
    assert.ok(result.ok > 0);
    assert.deepEqual(result.errors, 0);
    assert.deepEqual(result.ok, result.sent);
  } finally {
    await floor.stop();
  }
});

Deno.test("runLoad counts a refused connection as a transport error", async () => {
  const result = await runLoad(`http://127.0.0.1:${freePort()}/run_code`, {
    concurrency: 1,
    requests: 2,
    body: () => ({}),
  });
  assert.deepEqual(result.ok, 0);
  assert.deepEqual(result.errorKinds, { transport: 2 });
});

Deno.test("runLoad rejects a plan without a bound or with a bad concurrency", async () => {
  await assert.rejects(
    () => runLoad("http://127.0.0.1:1/", { concurrency: 1, body: () => ({}) }),
    { name: "RangeError", message: /either durationMs or requests/ },
  );
  await assert.rejects(
    () => runLoad("http://127.0.0.1:1/", { concurrency: 0, requests: 1, body: () => ({}) }),
    { name: "RangeError", message: /concurrency must be a positive integer/ },
  );
});

Deno.test("requestBody gives one tenant, a new tenant per request, or none", () => {
  const prog = program("python", "evaluator");
  const one = requestBody(prog, "one");
  const fresh = requestBody(prog, "new");
  const none = requestBody(prog, "none");
  const tenant = (body: unknown) => (body as { ext?: { space_id: string } }).ext?.space_id;
  assert.deepEqual(tenant(one(0)), tenant(one(1)));
  assert.ok(tenant(fresh(0)) !== tenant(fresh(1)));
  assert.deepEqual(tenant(none(0)), undefined);
  assert.deepEqual((one(0) as { input: unknown }).input !== undefined, true);
});

Deno.test("the deno run baseline runs the JS and TS programs and their checks pass", async () => {
  const server = await startSpawnBaseline("deno-run", { python: "python3" });
  try {
    for (const language of ["javascript", "typescript"] as const) {
      for (const kind of ["trivial", "evaluator"] as const) {
        const prog = program(language, kind);
        const result = await runLoad(`${server.url}/run_code`, {
          concurrency: 1,
          requests: 1,
          body: requestBody(prog, "one"),
          check: prog.check,
        });
        assert.deepEqual(result.errorKinds, {}, `${language} ${kind}`);
        assert.deepEqual(result.ok, 1);
      }
    }
  } finally {
    await server.stop();
  }
});

Deno.test("the python3 baseline runs the Python programs and their checks pass", async () => {
  const server = await startSpawnBaseline("python3", { python: await resolvePython("python3") });
  try {
    for (const kind of ["trivial", "evaluator"] as const) {
      const prog = program("python", kind);
      const result = await runLoad(`${server.url}/run_code`, {
        concurrency: 2,
        requests: 2,
        body: requestBody(prog, "new"),
        check: prog.check,
      });
      assert.deepEqual(result.errorKinds, {}, kind);
    }
    // A failing run is an error of the run, not a transport failure.
    const failing = await runLoad(`${server.url}/run_code`, {
      concurrency: 1,
      requests: 1,
      body: () => ({ language: "python", code: "raise ValueError('x')" }),
    });
    assert.deepEqual(failing.errorKinds, { status_error: 1 });
    assert.match(failing.errorSamples.status_error, /ValueError: x/);
  } finally {
    await server.stop();
  }
});

Deno.test("the evaluator check wants the template's marker block taken out, the right score", () => {
  const prog = program("javascript", "evaluator");
  const answer = (score: number, options: { stdout?: string; reason?: string } = {}) => ({
    output: {
      stdout: options.stdout ?? EVALUATOR_LOG,
      ret_val: JSON.stringify({ score, reason: options.reason ?? "token F1: 22 shared tokens" }),
    },
    metadata: { status: "success" },
    error: "",
  });
  const right = Math.round(expectedScore() * 1000) / 1000;
  assert.deepEqual(prog.check(answer(right)), undefined);
  assert.deepEqual(prog.check(answer(0.01)), "wrong_result");
  assert.deepEqual(prog.check(answer(right, { reason: "r" })), "wrong_result");
  const markers = `${EVALUATOR_LOG}__COZE_RETURN_VAL_START__\n{}\n__COZE_RETURN_VAL_END__\n`;
  assert.deepEqual(prog.check(answer(right, { stdout: markers })), "wrong_result");
});

Deno.test("the evaluators are shaped like the platform's template in every language", () => {
  const python = program("python", "evaluator").code;
  for (const module of ["json", "sys", "asyncio"]) {
    assert.match(python, new RegExp(`^import ${module}$`, "m"));
  }
  assert.match(python, /^from dataclasses import asdict, dataclass$/m);
  assert.match(python, /^@dataclass\nclass EvalOutput:/m);
  for (const language of ["javascript", "typescript", "python"] as const) {
    const code = program(language, "evaluator").code;
    assert.match(code, /class EvalOutput/, language);
    assert.match(code, /return_val\(value/, language);
    assert.match(code, /__COZE_RETURN_VAL_START__[\s\S]*__COZE_RETURN_VAL_END__/, language);
  }
});

Deno.test("the numpy program exists in Python only; its check wants a JSON number", () => {
  assert.throws(() => program("javascript", "numpy"), {
    name: "RangeError",
    message: /expected a program kind that exists in javascript, got "numpy"/,
  });
  const prog = program("python", "numpy");
  assert.match(prog.code, /^import numpy as np$/m);
  const answer = (retVal: string) => ({
    output: { stdout: "", ret_val: retVal },
    metadata: { status: "success" },
    error: "",
  });
  assert.deepEqual(prog.check(answer(String(Math.fround(expectedScore())))), undefined);
  assert.deepEqual(prog.check(answer("np.float32(0.7096774)")), "wrong_result");
  assert.deepEqual(prog.check(answer("0.5")), "wrong_result");
});

Deno.test("a hostile program's check accepts only the end the service must give it", () => {
  const answer = (status: string) => ({ metadata: { status }, error: "stopped" });
  for (const kind of ["loop", "heap_bomb", "buffer_bomb"] as const) {
    const prog = hostileProgram(kind);
    assert.deepEqual(prog.check(answer(HOSTILE_STATUS[kind])), undefined, kind);
    assert.deepEqual(prog.check(answer("crashed")), "status_crashed", kind);
  }
  assert.deepEqual(HOSTILE_STATUS.loop, "timeout");
  assert.deepEqual(HOSTILE_STATUS.buffer_bomb, "memory_limit");
});

Deno.test("requestBody takes a tenant function and a timeout", () => {
  const body = requestBody(program("javascript", "trivial"), (index) => `t-${index % 2}`, {
    timeoutMs: 2_000,
  });
  const first = body(0) as { ext: { space_id: string }; timeout: number };
  assert.deepEqual(first.ext.space_id, "t-0");
  assert.deepEqual((body(3) as { ext: { space_id: string } }).ext.space_id, "t-1");
  assert.deepEqual(first.timeout, 2_000);
});

Deno.test("treeMemory sums a process and its children; descendants finds them", async () => {
  const before = treeMemory(Deno.pid);
  assert.ok(before.rssBytes > 0);
  const child = new Deno.Command("sleep", { args: ["30"] }).spawn();
  try {
    assert.ok(descendants(Deno.pid).includes(child.pid));
    const during = treeMemory(Deno.pid);
    assert.ok(during.processes >= before.processes + 1);
    const sampler = new MemorySampler(Deno.pid, 10);
    const peak = sampler.stop();
    assert.ok(peak.samples >= 2 && peak.peakRssBytes > 0);
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
  assert.deepEqual(treeMemory(2 ** 22 + 12345), { rssBytes: 0, processes: 0 });
});

Deno.test("startServer reports a server that exits before it is ready", async () => {
  let error: unknown;
  try {
    await startServer({
      name: "broken",
      args: ["eval", "console.error('cannot bind: config missing'); Deno.exit(3)"],
    });
  } catch (caught) {
    error = caught;
  }
  assert.ok(error instanceof ServerStartError);
  assert.match(error.message, /broken exited with code 3/);
  assert.match(error.message, /cannot bind: config missing/);
});

Deno.test("stop kills a server's descendants that outlive it", async () => {
  const dir = await Deno.makeTempDir();
  const script = `${dir}/leaky.ts`;
  await Deno.writeTextFile(
    script,
    `const orphan = new Deno.Command("setsid", { args: ["sleep", "60"] }).spawn();
orphan.unref();
const server = Deno.serve({ hostname: "127.0.0.1", port: Number(Deno.env.get("FAAS_PORT")), onListen() {} },
  () => new Response("ok"));
Deno.addSignalListener("SIGTERM", () => server.shutdown());
await server.finished;
`,
  );
  const server = await startServer({ name: "leaky", args: ["run", "--allow-all", script] });
  try {
    const family = descendants(server.pid);
    assert.deepEqual(family.length, 1);
    const stopped = await server.stop();
    assert.deepEqual(stopped.code, 0);
    assert.deepEqual(stopped.leftovers, 1);
    assert.deepEqual(startTimeOf(family[0]), undefined, "the orphan is still running");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("renderMarkdown shows figures with their ratios and the notes", () => {
  const figures = [
    makeFigure({ scenario: "sequential", metric: "p50", language: "python", program: "trivial" }, {
      unit: "ms",
      better: "lower",
      service: 2,
      spawn: 40,
      spawnName: "python3 per request",
      floor: 0.5,
    }),
    makeFigure({
      scenario: "throughput",
      metric: "runs_per_s",
      language: "python",
      program: "evaluator",
      concurrency: 16,
      tenancy: "one",
    }, { unit: "runs/s", better: "higher", service: 300, spawn: 20, floor: 9000 }),
    makeFigure({ scenario: "memory", metric: "rss_idle" }, {
      unit: "MiB",
      better: "lower",
      service: null,
      floor: 40,
    }),
  ];
  assert.deepEqual(figures[0].vsSpawn, 0.05);
  assert.deepEqual(figures[0].vsFloor, 4);
  assert.deepEqual(figures[2].vsFloor, null);
  const markdown = renderMarkdown({
    startedAt: "",
    mode: "quick",
    machine: {},
    serviceEnv: {},
    notes: ["main.ts does not exist yet"],
    figures,
    runs: [],
  });
  assert.match(
    markdown,
    /\| Python \| trivial \| 2\.00 \/ – \/ – \| 40\.0 \/ – \/ – \| \*\*20\.0× faster\*\*/,
  );
  assert.match(markdown, /\| Python \| 16 \| one \| 300 \|.*\*\*15\.0× more\*\*/);
  assert.match(markdown, /RSS idle \(process tree\) \| MiB \| – \|/);
  assert.match(markdown, /- main\.ts does not exist yet/);
});

Deno.test("measureBootFloor boots processes with a no-permission worker at a positive rate", async () => {
  const result = await measureBootFloor({ durationMs: 300 });
  assert.deepEqual(result.errorKinds, {});
  assert.deepEqual(result.concurrency, navigator.hardwareConcurrency);
  assert.ok(result.ok >= 1 && result.ok === result.sent);
  assert.ok(result.throughput > 0 && result.p50 > 0);
  assert.ok(result.elapsedMs >= 300);

  await assert.rejects(() => measureBootFloor({ durationMs: 10, loops: 0 }), {
    name: "RangeError",
    message: /loops must be a positive integer/,
  });
});

Deno.test("renderMarkdown shows the boot floor with the new-tenant throughput it bounds", () => {
  const key = {
    scenario: "throughput",
    metric: "runs_per_s",
    language: "javascript",
    program: "evaluator",
    concurrency: 16,
  } as const;
  const bootKey = { scenario: "boot_floor", metric: "boots_per_s" } as const;
  const figures = [
    makeFigure({ ...key, tenancy: "one" }, {
      unit: "runs/s",
      better: "higher",
      service: 300,
      spawn: 20,
      floor: 9000,
    }),
    makeFigure({ ...key, tenancy: "new" }, {
      unit: "runs/s",
      better: "higher",
      service: 30,
      spawn: 20,
      floor: 9000,
      bootFloor: 40,
    }),
    makeFigure(bootKey, { unit: "boots/s", better: "higher", bootFloor: 40 }),
  ];
  assert.deepEqual(figures[0].bootFloor, undefined);
  assert.deepEqual(figures[1].vsBootFloor, 0.75);
  assert.deepEqual(figures[2].bootFloor, 40);
  const summary = { ...summarize([20, 30], { elapsedMs: 50 }), concurrency: 2, sent: 2 };
  const markdown = renderMarkdown({
    startedAt: "",
    mode: "quick",
    machine: {},
    serviceEnv: {},
    notes: [],
    figures,
    runs: [{ target: "boot floor", key: bootKey, summary: { ...summary, errorSamples: {} } }],
  });
  assert.match(markdown, /\| ÷ floor \| ÷ boot floor \(boots\/s\) \|/);
  assert.match(markdown, /\| JS \| 16 \| one \| 300 \|.*\| 0\.03× \| {2}\|\n/);
  assert.match(markdown, /\| JS \| 16 \| new each \| 30\.0 \|.*\| 0\.75× \(40\.0\) \|\n/);
  assert.match(
    markdown,
    /\| fresh process \+ no-permission worker boots \(boot floor\) \| boots\/s \| – \| 40\.0 \(2 loops\) \|/,
  );

  // Without a boot floor (Python only), the throughput table has no such column.
  const python = renderMarkdown({
    startedAt: "",
    mode: "quick",
    machine: {},
    serviceEnv: {},
    notes: [],
    figures: [makeFigure({ ...key, language: "python", tenancy: "new" }, {
      unit: "runs/s",
      better: "higher",
      service: 30,
    })],
    runs: [],
  });
  assert.doesNotMatch(python, /boot floor/);
});

Deno.test("seededRandom gives the same sequence for a seed, another for another seed", () => {
  const draw = (seed: number) => {
    const random = seededRandom(seed);
    return Array.from({ length: 5 }, () => random());
  };
  assert.deepEqual(draw(7), draw(7));
  assert.notDeepEqual(draw(7), draw(8));
  assert.ok(draw(7).every((u) => u >= 0 && u < 1));
  assert.throws(() => seededRandom(1.5), { name: "RangeError", message: /integer seed/ });
});

Deno.test("zipfWeights follow 1/k^s and sum to 1", () => {
  const weights = zipfWeights(24, 1.1);
  assert.deepEqual(weights.length, 24);
  assert.ok(Math.abs(weights.reduce((sum, w) => sum + w, 0) - 1) < 1e-12);
  assert.ok(Math.abs(weights[0] / weights[1] - 2 ** 1.1) < 1e-9);
  assert.ok(weights.every((w, i) => i === 0 || w < weights[i - 1]));
  assert.deepEqual(zipfWeights(3, 0), [1 / 3, 1 / 3, 1 / 3]);
  assert.throws(() => zipfWeights(0, 1.1), { name: "RangeError", message: /expected n ≥ 1/ });
  assert.throws(() => zipfWeights(3, -1), { name: "RangeError", message: /exponent s ≥ 0/ });
});

Deno.test("zipfSampler draws ranks with the Zipf frequencies, the same for a seed", () => {
  const draws = 50_000;
  const next = zipfSampler(24, { s: 1.1, seed: 3 });
  const counts = new Array(24).fill(0);
  for (let i = 0; i < draws; i++) counts[next()]++;
  const weights = zipfWeights(24, 1.1);
  for (const rank of [0, 1, 5, 23]) {
    // Four standard deviations of a binomial count: fails by chance about once in 15 000 runs.
    const sd = Math.sqrt(draws * weights[rank] * (1 - weights[rank]));
    assert.ok(
      Math.abs(counts[rank] - draws * weights[rank]) < 4 * sd,
      `rank ${rank}: ${counts[rank]}`,
    );
  }
  const again = zipfSampler(24, { s: 1.1, seed: 3 });
  const other = zipfSampler(24, { s: 1.1, seed: 4 });
  const first = Array.from({ length: 50 }, () => again());
  assert.deepEqual(first, Array.from({ length: 50 }, zipfSampler(24, { s: 1.1, seed: 3 })));
  assert.notDeepEqual(first, Array.from({ length: 50 }, () => other()));
  assert.deepEqual(zipfSampler(1, { s: 1.1, seed: 1 })(), 0);
});

Deno.test("zipfTenants names the same tenant for an index whatever the order of calls", () => {
  const forward = zipfTenants(ZIPF_MIX, { prefix: "z-" });
  const backward = zipfTenants(ZIPF_MIX, { prefix: "z-" });
  const names = Array.from({ length: 30 }, (_, i) => forward(i));
  assert.deepEqual(Array.from({ length: 30 }, (_, i) => backward(29 - i)).reverse(), names);
  assert.ok(names.every((name) => /^z-\d+$/.test(name)));
  assert.ok(names.filter((name) => name === "z-0").length > 3, "rank 0 is the most frequent");
});

/** An in-process /run_code server for the harness's own tests: records each request. */
function recordingServer(answer: (body: Record<string, unknown>) => unknown) {
  const bodies: Record<string, unknown>[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const body = await request.json();
    bodies.push(body);
    return Response.json(answer(body));
  });
  return { url: `http://127.0.0.1:${server.addr.port}/run_code`, bodies, server };
}

const SUCCESS = { metadata: { status: "success" }, error: "" };

Deno.test("runLoad sends request i to url i mod n: round-robin over servers", async () => {
  const a = recordingServer(() => SUCCESS);
  const b = recordingServer(() => SUCCESS);
  try {
    const result = await runLoad([a.url, b.url], {
      concurrency: 3,
      requests: 10,
      body: (index) => ({ index }),
    });
    assert.deepEqual(result.ok, 10);
    const indexes = (server: typeof a) => server.bodies.map((body) => body.index).sort();
    assert.deepEqual(indexes(a), [0, 2, 4, 6, 8]);
    assert.deepEqual(indexes(b), [1, 3, 5, 7, 9]);
    await assert.rejects(() => runLoad([], { concurrency: 1, requests: 1, body: () => ({}) }), {
      name: "RangeError",
      message: /at least one url/,
    });
  } finally {
    await a.server.shutdown();
    await b.server.shutdown();
  }
});

Deno.test("runZipfMix measures the seeded sequence from its first draw", async () => {
  const server = recordingServer(() => SUCCESS);
  try {
    const run = await runZipfMix(server.url, {
      program: { ...program("javascript", "trivial"), check: () => undefined },
      mix: ZIPF_MIX,
      concurrency: 2,
      warmupMs: 50,
      durationMs: 150,
      prefix: "zipf-",
    });
    const measured = server.bodies.slice(-run.measured.sent);
    const tenant = (body: Record<string, unknown>) => (body.ext as { space_id: string }).space_id;
    const expected = zipfTenants(ZIPF_MIX, { prefix: "zipf-" });
    assert.deepEqual(measured.map(tenant).sort(), measured.map((_, i) => expected(i)).sort());
    assert.deepEqual(run.distinctTenants, new Set(measured.map(tenant)).size);
    assert.ok(run.topShare > 0 && run.topShare <= 1);
  } finally {
    await server.server.shutdown();
  }
});

Deno.test("runHostileNeighbours measures the normal tenants alone, then beside hostile ones", async () => {
  const hostileSeen = new Set<string>();
  const server = recordingServer((body) => {
    const code = String(body.code);
    const tenant = (body.ext as { space_id: string }).space_id;
    if (code.includes("while (true) {}")) {
      hostileSeen.add(tenant);
      assert.deepEqual(body.timeout, HOSTILE_TIMEOUT_MS.loop);
      return { metadata: { status: "timeout" }, error: "timed out" };
    }
    if (code.includes("hold.push")) {
      hostileSeen.add(tenant);
      return { metadata: { status: "memory_limit" }, error: "memory" };
    }
    return SUCCESS;
  });
  try {
    const run = await runHostileNeighbours(server.url, {
      program: { ...program("javascript", "trivial"), check: () => undefined },
      normalTenants: 3,
      normalConcurrency: 2,
      hostileConcurrency: 1,
      warmupMs: 50,
      durationMs: 100,
      prefix: "h-",
    });
    assert.ok(run.calm.ok > 0 && run.beside.ok > 0);
    assert.deepEqual(run.hostile.map(({ kind }) => kind), [...HOSTILE_TENANTS]);
    for (const { kind, result } of run.hostile) {
      assert.ok(result.ok > 0 && result.errors === 0, kind);
    }
    assert.deepEqual(hostileSeen.size, HOSTILE_TENANTS.length);
    const normal = new Set(
      server.bodies.filter((body) =>
        !String(body.code).includes("hold") && !String(body.code).includes("while")
      )
        .map((body) => (body.ext as { space_id: string }).space_id),
    );
    assert.deepEqual([...normal].sort(), ["h-normal-0", "h-normal-1", "h-normal-2"]);
  } finally {
    await server.server.shutdown();
  }
});

Deno.test("makeReference computes the ratio and whether a ratio or value target is met", () => {
  const atLeast = { of: "ratio", bound: "min", limit: 0.25 } as const;
  assert.deepEqual(makeReference(50, { name: "floor", value: 100, target: atLeast }), {
    name: "floor",
    value: 100,
    ratio: 0.5,
    target: atLeast,
    met: true,
  });
  assert.deepEqual(makeReference(20, { name: "floor", value: 100, target: atLeast }).met, false);
  assert.deepEqual(makeReference(null, { name: "floor", value: 100, target: atLeast }).met, null);
  assert.deepEqual(makeReference(20, { name: "floor", value: null }).ratio, null);
  const atMost = { of: "value", bound: "max", limit: 300 } as const;
  assert.deepEqual(makeReference(280, { name: "one", value: 10, target: atMost }).met, true);
  assert.deepEqual(makeReference(301, { name: "one", value: null, target: atMost }).met, false);
  assert.deepEqual(meets(atMost, { service: 300, ratio: null }), true);
});

Deno.test("renderMarkdown lists every figure with a floor in the floors table, first", () => {
  const figures = [
    makeFigure({
      scenario: "throughput",
      metric: "runs_per_s",
      language: "javascript",
      program: "evaluator",
      concurrency: 16,
      tenancy: "one",
    }, {
      unit: "runs/s",
      better: "higher",
      service: 500,
      reference: {
        name: "warm-context floor",
        value: 1000,
        target: { of: "ratio", bound: "min", limit: 0.25 },
      },
    }),
    makeFigure({
      scenario: "zipf",
      metric: "p99",
      language: "javascript",
      program: "evaluator",
      concurrency: 16,
    }, {
      unit: "ms",
      better: "lower",
      service: 450,
      reference: {
        name: "one tenant",
        value: 90,
        target: { of: "value", bound: "max", limit: 300 },
      },
    }),
    makeFigure(
      { scenario: "sequential", metric: "p50", language: "python", program: "evaluator" },
      {
        unit: "ms",
        better: "lower",
        service: 30,
        reference: { name: "python fork floor", value: null },
      },
    ),
  ];
  const markdown = renderMarkdown({
    startedAt: "",
    mode: "quick",
    machine: {},
    serviceEnv: {},
    notes: [],
    figures,
    runs: [],
  });
  assert.ok(markdown.startsWith("### Against the floors"));
  assert.match(
    markdown,
    /\| JS evaluator, one tenant, c16, runs\/s \| runs\/s \| 500 \| warm-context floor \| 1000 \| 0\.50× \| ≥ 0\.25× \| yes \|/,
  );
  assert.match(
    markdown,
    /\| JS evaluator, Zipf mix of tenants, c16, p99 \| ms \| 450 \| one tenant \| 90\.0 \| 5\.00× \| ≤ 300 ms \| \*\*no\*\* \|/,
  );
  assert.match(
    markdown,
    /\| Python evaluator, sequential, p50 \| ms \| 30\.0 \| python fork floor \| – \| – \| – \| – \|/,
  );
  assert.deepEqual(
    describeFigure({
      scenario: "sequential",
      metric: "p50",
      language: "python",
      program: "evaluator",
      tenancy: "new",
    }),
    "Python evaluator, sequential, a new tenant per request, p50",
  );
});

Deno.test("a CpuGroup holds what it wraps and is removed after, or says why there is none", async () => {
  const group = CpuGroup.create("bench test");
  if (typeof group === "string") {
    assert.match(group, /cgroup/);
    return;
  }
  try {
    const { command, args } = group.wrap("cat", ["/proc/self/cgroup"]);
    const output = await new Deno.Command(command, { args, stdout: "piped" }).output();
    const leaf = group.path.slice(group.path.lastIndexOf("/"));
    assert.match(new TextDecoder().decode(output.stdout), new RegExp(`${leaf}\\n`));
  } finally {
    assert.deepEqual(group.remove(), true);
  }
  await assert.rejects(() => Deno.stat(group.path), Deno.errors.NotFound);
});

Deno.test("treeCpuMs grows with the CPU a process uses; 0 for a process that is gone", () => {
  const before = treeCpuMs(Deno.pid);
  const deadline = performance.now() + 20_000;
  // Busy until the kernel has charged 100 ms more (ticks are 10 ms); wall time varies with load.
  while (treeCpuMs(Deno.pid) - before < 100 && performance.now() < deadline) {
    for (let i = 0; i < 1e6; i++) Math.sqrt(i);
  }
  assert.ok(treeCpuMs(Deno.pid) - before >= 100);
  assert.deepEqual(treeCpuMs(2 ** 22 + 12345), 0);
});

Deno.test("the warm-context floor runs each program in a worker's fresh context", async () => {
  const [server] = await startContextFloor({ count: 1 });
  try {
    for (const kind of ["trivial", "evaluator"] as const) {
      const prog = program("javascript", kind);
      const result = await runLoad(`${server.url}/run_code`, {
        concurrency: 2,
        requests: 4,
        body: requestBody(prog, "one"),
        check: prog.check,
      });
      assert.deepEqual(result.errorKinds, {}, kind);
    }
    // A global one run sets is not there for the next: each run has a context of its own.
    const leak = await runLoad(`${server.url}/run_code`, {
      concurrency: 1,
      requests: 2,
      body: () => ({
        language: "javascript",
        code: "const seen = globalThis.mark; globalThis.mark = 1; return seen ?? 'fresh';",
      }),
      check: (answer) =>
        (answer as { output: { ret_val: string } }).output.ret_val === '"fresh"'
          ? undefined
          : "leak",
    });
    assert.deepEqual(leak.errorKinds, {});
    const failing = await runLoad(`${server.url}/run_code`, {
      concurrency: 1,
      requests: 1,
      body: () => ({ language: "javascript", code: "throw new TypeError('x')" }),
    });
    assert.deepEqual(failing.errorKinds, { status_error: 1 });
  } finally {
    const stopped = await server.stop();
    assert.deepEqual(stopped.leftovers, 0);
  }
});

Deno.test("the python fork floor runs overlapping programs in forked children", async () => {
  const server = await startForkFloor({ python: await resolvePython("python3") });
  try {
    for (const kind of ["trivial", "evaluator"] as const) {
      const prog = program("python", kind);
      const result = await runLoad(`${server.url}/run_code`, {
        concurrency: 3,
        requests: 6,
        body: requestBody(prog, "one"),
        check: prog.check,
      });
      assert.deepEqual(result.errorKinds, {}, kind);
    }
    const other = await runLoad(`${server.url}/run_code`, {
      concurrency: 2,
      requests: 2,
      body: (index) => ({
        language: "python",
        code: index === 0 ? "raise ValueError('x')" : "while True: pass",
        // Only the loop is meant to time out: a fork on a loaded machine may take 200 ms.
        timeout: index === 0 ? 10_000 : 200,
      }),
      check: (answer) => (answer as { metadata: { status: string } }).metadata.status,
    });
    assert.deepEqual(other.errorKinds, { error: 1, timeout: 1 });
    assert.match(other.errorSamples.error, /ValueError: x/);
  } finally {
    const stopped = await server.stop();
    assert.deepEqual(stopped.leftovers, 0);
  }
});
