/**
 * Shared fixtures of the JS/TS runtime tests: a started runtime, a run shortcut, and
 * checks on the runner processes themselves (none left spinning a core, none left over).
 *
 * @module
 */

import nodeAssert from "node:assert/strict";
import {
  createJavaScriptRuntime,
  type JavaScriptRuntimeOptions,
} from "../src/sandbox/javascript/mod.ts";
import { SELF_RUNNER_FLAG } from "../src/sandbox/javascript/runner_command.ts";
import type { Language, RunJob, RunOutcome, Runtime, RuntimeSettings } from "../src/runtime.ts";
import { HttpRuntime, REMOTE_URL, skipInProcessCheck } from "./helpers/remote.ts";

/** Settings small enough for tests, overridable per suite. */
export function testSettings(overrides: Partial<RuntimeSettings> = {}): RuntimeSettings {
  return {
    poolSize: 2,
    maxInstances: 8,
    memoryLimitMb: 128,
    maxOutputBytes: 64 * 1024,
    outputPolicy: "truncate",
    requireIsolation: [],
    debug: false,
    ...overrides,
  };
}

/**
 * Creates and starts a JS runtime with test settings; with FAAS_TEST_URL set, the runs go to
 * that service over HTTP instead (tests/helpers/remote.ts).
 */
export async function startRuntime(
  overrides: Partial<RuntimeSettings> = {},
  options: JavaScriptRuntimeOptions = {},
): Promise<Runtime> {
  const runtime = REMOTE_URL === undefined
    ? createJavaScriptRuntime(testSettings(overrides), {
      python: Deno.env.get("FAAS_PYTHON") ?? "python3",
      launch: launchFromEnv(),
      ...options,
    })
    : new HttpRuntime(REMOTE_URL, ["javascript", "typescript"], overrides);
  await runtime.start();
  return runtime;
}

/** Lets a whole suite run against self-launched runners: `JS_RUNNER_LAUNCH=self deno test ...`. */
function launchFromEnv(): "self" | "deno" | undefined {
  const launch = Deno.env.get("JS_RUNNER_LAUNCH");
  return launch === "self" || launch === "deno" ? launch : undefined;
}

let taskCounter = 0;

/** Runs `code` as JavaScript (or the given language) for an optional tenant. */
export function run(
  runtime: Runtime,
  code: string,
  options: { language?: Language; tenant?: string; input?: unknown; timeoutMs?: number } = {},
): Promise<RunOutcome> {
  const job: RunJob = {
    taskId: `test-${++taskCounter}`,
    language: options.language ?? "javascript",
    code,
    timeoutMs: options.timeoutMs ?? 5_000,
    tenant: options.tenant,
  };
  if ("input" in options) job.input = options.input;
  return runtime.run(job);
}

/** Pids of live runner processes started (through a jailer) by this test process. */
export async function runnerPids(): Promise<number[]> {
  const parents = new Map<number, number>();
  const runners: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`);
      if (stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z") continue;
      parents.set(Number(entry.name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
      const cmdline = await Deno.readTextFile(`/proc/${entry.name}/cmdline`);
      if (cmdline.includes("/js/runner.ts") || cmdline.includes(SELF_RUNNER_FLAG)) {
        runners.push(Number(entry.name));
      }
    } catch {
      // exited meanwhile
    }
  }
  const mine = (pid: number) => {
    for (let at = parents.get(pid); at !== undefined && at > 1; at = parents.get(at)) {
      if (at === Deno.pid) return true;
    }
    return false;
  };
  return runners.filter(mine);
}

async function runningThreads(pid: number): Promise<number> {
  let running = 0;
  try {
    for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
      const stat = await Deno.readTextFile(`/proc/${pid}/task/${task.name}/stat`);
      // The state follows the parenthesised command name.
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      if (state === "R") running++;
    }
  } catch {
    // exited meanwhile
  }
  return running;
}

/**
 * Fails when some runner keeps a thread runnable in nearly every sample over ~200 ms: an idle
 * runner sleeps, one stuck in a loop of a finished run never does.
 */
export async function assertNoSpinningRunner(runtime: Runtime): Promise<void> {
  if (skipInProcessCheck("the check for runners left spinning")) return;
  // Booting runners are busy by nature: sample once the pool is settled.
  for (let i = 0; i < 500; i++) {
    const stats = runtime.stats();
    if (stats.totalInstances === stats.idleInstances + stats.activeInstances) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const samples = 20;
  const busy = new Map<number, number>();
  for (let i = 0; i < samples; i++) {
    for (const pid of await runnerPids()) {
      if (await runningThreads(pid) > 0) busy.set(pid, (busy.get(pid) ?? 0) + 1);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const spinning = [...busy].filter(([, count]) => count >= samples - 2).map(([pid]) => pid);
  if (spinning.length > 0) {
    throw new Error(`expected no runner spinning a core, found pids ${spinning.join(", ")}`);
  }
}

/** The seed run, which must keep working after every attack. */
export const SEED = "console.log('Hello World'); return 42;";

/** Fails unless `actual` deep-equals `expected`. */
export function assertEquals(actual: unknown, expected: unknown, message?: string): void {
  nodeAssert.deepStrictEqual(actual, expected, message);
}

/** Fails unless `value` is truthy. */
export function assert(value: unknown, message?: string): asserts value {
  nodeAssert.ok(value, message);
}

/** Fails unless `text` contains `part`. */
export function assertStringIncludes(text: string, part: string): void {
  nodeAssert.ok(
    text.includes(part),
    `expected ${JSON.stringify(text)} to include ${JSON.stringify(part)}`,
  );
}

/** Fails unless `text` matches `pattern`. */
export function assertMatch(text: string, pattern: RegExp): void {
  nodeAssert.match(text, pattern);
}
