/**
 * Shared setup of the Python runtime tests.
 *
 * @module
 */

import type { RunJob, RuntimeSettings } from "../src/runtime.ts";

/** Python used by the tests: FAAS_PYTHON when set, else python3 on PATH. */
export const PYTHON = Deno.env.get("FAAS_PYTHON") ?? "python3";

/** Settings for a small runtime under test. */
export function testSettings(overrides: Partial<RuntimeSettings> = {}): RuntimeSettings {
  return {
    poolSize: 2,
    maxInstances: 8,
    memoryLimitMb: 256,
    maxOutputBytes: 64 * 1024,
    pythonPath: PYTHON,
    requireIsolation: [],
    debug: false,
    ...overrides,
  };
}

let counter = 0;

/** A job running `code` with a 5 s timeout unless told otherwise. */
export function job(code: string, extra: Partial<RunJob> = {}): RunJob {
  return { taskId: `t${++counter}`, language: "python", code, timeoutMs: 5_000, ...extra };
}

/** Pids of live processes whose real uid lies in `[first, first + count)`. */
export async function processesOfUids(first: number, count: number): Promise<number[]> {
  const found: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    let status: string;
    try {
      status = await Deno.readTextFile(`/proc/${entry.name}/status`);
    } catch {
      continue;
    }
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1);
    const state = /^State:\s+(\w)/m.exec(status)?.[1];
    if (uid >= first && uid < first + count && state !== "Z") found.push(Number(entry.name));
  }
  return found;
}

/**
 * Waits until no process of the uid range is left; rejects after `timeoutMs`. Cleanup runs
 * after the answer and there is no event for "a process of uid N exited", so this polls.
 */
export async function assertNoProcessesLeft(
  first: number,
  count: number,
  timeoutMs = 5_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const left = await processesOfUids(first, count);
    if (left.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(`expected no sandbox processes left, found pids ${left.join(", ")}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
