/**
 * Python runs against the fork floor, in one run on this machine: a warm interpreter forking a
 * bare child per run (baselines/python_fork_floor.py, no jail) versus the Python runtime
 * (a jailed zygote per slot forking a jailed run), both driven from this process, sequential
 * and at concurrency 16, for a trivial program and one shaped like the platform's evaluator
 * template. Rounds alternate between the two so the machine's load hits both alike.
 *
 * The runtime's sandboxes share one CPU cgroup (as much CPU as one ordinary process when the
 * machine is busy); the floor's processes are put into a cgroup of the same weight when this
 * runs as root, so that both get the same share of a machine other work keeps busy.
 *
 * Usage: deno run --allow-all bench/python_fork_floor.ts [--rounds=5] [--runs=40] [--c16-ms=3000]
 *
 * Environment: `FAAS_PYTHON` (the interpreter of both, default `python3`). With
 * `FAAS_PYTHON_PRELOAD=numpy`, a second runtime that preloads numpy runs an evaluator that uses
 * numpy and the trivial program, and the ratio of the two is printed.
 *
 * @module
 */

import { createPythonRuntime } from "../src/sandbox/python/mod.ts";
import type { Runtime } from "../src/runtime.ts";
import { percentile } from "./stats.ts";

/** The platform's evaluator template, in shape: imports, a dataclass, a marker block. */
export const EVALUATOR = `import json
import sys
import asyncio
from dataclasses import dataclass


@dataclass
class EvalOutput:
    score: float
    reason: str


def exec_evaluation(turn):
    actual = str(turn["output"]).lower().split()
    expected = str(turn["reference"]).lower().split()
    shared = len(set(actual) & set(expected))
    return EvalOutput(score=shared / max(1, len(expected)), reason=f"{shared} shared words")


result = exec_evaluation(input)
print("__COZE_RETURN_VAL_START__")
print(json.dumps({"score": result.score, "reason": result.reason}))
print("__COZE_RETURN_VAL_END__")
`;

/** An evaluator that scores with numpy (measured when numpy is preloaded). */
export const NUMPY_EVALUATOR = `import json
import numpy as np

scores = np.array([0.2, 0.9, 0.4, 0.7])
weights = np.linspace(1, 2, scores.size)
score = float(np.average(scores, weights=weights))
print("__COZE_RETURN_VAL_START__")
print(json.dumps({"score": round(score, 3), "best": int(np.argmax(scores))}))
print("__COZE_RETURN_VAL_END__")
`;

/** The input of the evaluator. */
export const TURN = { output: "a fixed number of clients", reference: "a fixed number of workers" };

/** The trivial program. */
export const TRIVIAL = "print('Hello World')\n42";

interface Target {
  name: string;
  run(code: string, input: unknown): Promise<void>;
  close(): Promise<void>;
}

function flag(name: string, fallback: number): number {
  const arg = Deno.args.find((a) => a.startsWith(`--${name}=`));
  return arg ? Number(arg.slice(name.length + 3)) : fallback;
}

/**
 * Moves `pid` (and the children it starts later) into a new CPU cgroup beside this process's
 * own, of the default weight; returns the dir to remove at the end, or undefined without one.
 */
function ownCpuCgroup(pid: number): string | undefined {
  const lines = Deno.readTextFileSync("/proc/self/cgroup").split("\n");
  const v1 = lines.find((line) => /^\d+:([^:]*,)?cpu(,[^:]*)?:/.test(line));
  const own = v1 ? v1.split(":")[2] : lines.find((line) => line.startsWith("0::"))?.slice(3);
  const root = v1 ? "/sys/fs/cgroup/cpu" : "/sys/fs/cgroup";
  if (own === undefined) return undefined;
  const dir = `${root}${own.replace(/\/$/, "")}/faas-floor-${Deno.pid}`;
  try {
    Deno.mkdirSync(dir);
    Deno.writeTextFileSync(`${dir}/cgroup.procs`, String(pid));
    return dir;
  } catch {
    return undefined;
  }
}

/** Starts the fork floor: one warm interpreter, jobs and answers as length-prefixed JSON. */
function startFloor(python: string): Target {
  const child = new Deno.Command(python, {
    args: ["-I", new URL("./baselines/python_fork_floor.py", import.meta.url).pathname],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const cgroup = ownCpuCgroup(child.pid);
  if (!cgroup) console.log("note: the floor runs without a CPU cgroup of its own");
  const writer = child.stdin.getWriter();
  const waiting = new Map<number, (answer: Record<string, unknown>) => void>();
  let nextId = 1;
  (async () => {
    let buffer = new Uint8Array(0);
    for await (const chunk of child.stdout) {
      const joined = new Uint8Array(buffer.length + chunk.length);
      joined.set(buffer);
      joined.set(chunk, buffer.length);
      buffer = joined;
      while (buffer.length >= 4) {
        const size = new DataView(buffer.buffer, buffer.byteOffset).getUint32(0);
        if (buffer.length < 4 + size) break;
        const answer = JSON.parse(new TextDecoder().decode(buffer.subarray(4, 4 + size)));
        buffer = buffer.slice(4 + size);
        waiting.get(answer.id)?.(answer);
        waiting.delete(answer.id);
      }
    }
  })();
  return {
    name: "fork floor",
    async run(code, input) {
      const id = nextId++;
      const data = new TextEncoder().encode(JSON.stringify({ id, code, input }));
      const frame = new Uint8Array(4 + data.length);
      new DataView(frame.buffer).setUint32(0, data.length);
      frame.set(data, 4);
      const answer = new Promise<Record<string, unknown>>((resolve) => waiting.set(id, resolve));
      await writer.write(frame);
      const { status } = await answer;
      if (status !== "success") throw new Error(`the floor's run failed: ${status}`);
    },
    async close() {
      await writer.close();
      await child.status;
      if (cgroup) Deno.removeSync(cgroup);
    },
  };
}

async function startRuntime(python: string, preload: string[] = []): Promise<Target> {
  const runtime: Runtime = createPythonRuntime({
    poolSize: 4,
    maxInstances: 16,
    memoryLimitMb: 256,
    maxOutputBytes: 1 << 20,
    pythonPath: python,
    requireIsolation: [],
    debug: false,
  }, { python, preload });
  await runtime.start();
  return {
    name: preload.length ? `runtime preloading ${preload.join(",")}` : "runtime",
    async run(code, input) {
      const out = await runtime.run({
        taskId: "bench",
        language: "python",
        code,
        input,
        timeoutMs: 10_000,
      });
      if (out.status !== "success") throw new Error(`the runtime's run failed: ${out.stderr}`);
    },
    close: () => runtime.shutdown(),
  };
}

async function sequential(target: Target, code: string, input: unknown, runs: number) {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    await target.run(code, input);
    times.push(performance.now() - started);
  }
  return times;
}

async function concurrent(target: Target, code: string, input: unknown, ms: number) {
  let done = 0;
  const until = performance.now() + ms;
  const started = performance.now();
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (performance.now() < until) {
      await target.run(code, input);
      done++;
    }
  }));
  return (done * 1000) / (performance.now() - started);
}

function median(values: number[]): number {
  return percentile([...values].sort((a, b) => a - b), 50);
}

async function main(): Promise<void> {
  const python = Deno.env.get("FAAS_PYTHON") ?? "python3";
  const rounds = flag("rounds", 5);
  const runs = flag("runs", 40);
  const c16Ms = flag("c16-ms", 3000);
  const preload = (Deno.env.get("FAAS_PYTHON_PRELOAD") ?? "").split(",").filter(Boolean);
  const targets = [startFloor(python), await startRuntime(python)];
  const numpy = preload.includes("numpy") ? await startRuntime(python, preload) : undefined;
  const series: Record<string, number[]> = {};
  const add = (key: string, values: number[]) => (series[key] ??= []).push(...values);
  for (const target of targets) {
    await sequential(target, TRIVIAL, null, 5); // warm-up
    await sequential(target, EVALUATOR, TURN, 5);
  }
  for (let round = 0; round < rounds; round++) {
    for (const target of targets) {
      add(`${target.name} trivial`, await sequential(target, TRIVIAL, null, runs));
      add(`${target.name} evaluator`, await sequential(target, EVALUATOR, TURN, runs));
      add(`${target.name} c16`, [await concurrent(target, EVALUATOR, TURN, c16Ms)]);
    }
  }
  if (numpy) {
    await sequential(numpy, NUMPY_EVALUATOR, null, 5);
    for (let round = 0; round < rounds; round++) {
      add("numpy trivial", await sequential(numpy, TRIVIAL, null, runs));
      add("numpy evaluator", await sequential(numpy, NUMPY_EVALUATOR, null, runs));
    }
    await numpy.close();
  }
  for (const target of targets) await target.close();
  const floor = (kind: string) => median(series[`fork floor ${kind}`]);
  for (const kind of ["trivial", "evaluator"]) {
    const value = median(series[`runtime ${kind}`]);
    console.log(
      `sequential ${kind}: floor p50 ${floor(kind).toFixed(2)} ms, runtime p50 ` +
        `${value.toFixed(2)} ms, ratio ${(value / floor(kind)).toFixed(2)}×`,
    );
  }
  if (numpy) {
    const evaluator = median(series["numpy evaluator"]);
    const trivial = median(series["numpy trivial"]);
    console.log(
      `numpy preloaded: numpy evaluator p50 ${evaluator.toFixed(2)} ms, trivial p50 ` +
        `${trivial.toFixed(2)} ms, ratio ${(evaluator / trivial).toFixed(2)}×`,
    );
  }
  const rate = median(series["runtime c16"]);
  console.log(
    `c16 evaluator: floor ${floor("c16").toFixed(1)} runs/s, runtime ${rate.toFixed(1)} runs/s, ` +
      `ratio ${(rate / floor("c16")).toFixed(2)}× (rounds: floor ` +
      `${series["fork floor c16"].map((r) => r.toFixed(0)).join(" ")}, runtime ` +
      `${series["runtime c16"].map((r) => r.toFixed(0)).join(" ")})`,
  );
}

if (import.meta.main) await main();
