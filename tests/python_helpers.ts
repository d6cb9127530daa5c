/**
 * Shared setup of the Python runtime tests.
 *
 * @module
 */

import type { RunJob, Runtime, RuntimeSettings } from "../src/runtime.ts";
import {
  createPythonRuntime as createRuntime,
  type PythonRuntimeOptions,
} from "../src/sandbox/python/mod.ts";

/** Python used by the tests: FAAS_PYTHON when set, else python3 on PATH. */
export const PYTHON = Deno.env.get("FAAS_PYTHON") ?? "python3";

/** Settings for a small runtime under test. */
export function testSettings(overrides: Partial<RuntimeSettings> = {}): RuntimeSettings {
  return {
    poolSize: 2,
    maxInstances: 8,
    memoryLimitMb: 256,
    maxOutputBytes: 64 * 1024,
    outputPolicy: "truncate",
    requireIsolation: [],
    debug: false,
    ...overrides,
  };
}

/** The Python runtime's factory, with the tests' Python unless `options` name another. */
export function createPythonRuntime(
  settings: RuntimeSettings,
  options: PythonRuntimeOptions = {},
): Runtime {
  return createRuntime(settings, { python: PYTHON, ...options });
}

let counter = 0;

/** A job running `code` with a 5 s timeout unless told otherwise. */
export function job(code: string, extra: Partial<RunJob> = {}): RunJob {
  return { taskId: `t${++counter}`, language: "python", code, timeoutMs: 5_000, ...extra };
}

interface ProcessInfo {
  pid: number;
  ppid: number;
  uid: number;
  state: string;
  cmdline: string;
}

/** Live (non-zombie) processes of this machine. */
export async function listProcesses(): Promise<ProcessInfo[]> {
  const found: ProcessInfo[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const status = await Deno.readTextFile(`/proc/${entry.name}/status`);
      if (/^State:\s+Z/m.test(status)) continue;
      const cmdline = await Deno.readTextFile(`/proc/${entry.name}/cmdline`);
      found.push({
        pid: Number(entry.name),
        ppid: Number(/^PPid:\s+(\d+)/m.exec(status)?.[1] ?? -1),
        uid: Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1),
        state: /^State:\s+(\w)/m.exec(status)?.[1] ?? "?",
        cmdline,
      });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** Pids of the fork servers started by this process. */
export async function forkServerPids(): Promise<number[]> {
  return (await listProcesses())
    .filter((p) => p.ppid === Deno.pid && p.cmdline.includes("The Python fork server"))
    .map((p) => p.pid);
}

/**
 * Processes of the uid range that are not a warm spare (a spare is a fork of a fork server,
 * waiting for its job): what a run left behind.
 */
export async function leftoverProcesses(first: number, count: number): Promise<string[]> {
  const processes = await listProcesses();
  const servers = new Set(await forkServerPids());
  const isSpare = (p: ProcessInfo) =>
    servers.has(p.ppid) && p.state !== "R" && p.cmdline.includes("The Python fork server");
  return processes.filter((p) => p.uid >= first && p.uid < first + count && !isSpare(p))
    .map((p) => `${p.pid} (uid ${p.uid}, parent ${p.ppid}: ${p.cmdline.slice(0, 40)})`);
}

/**
 * Waits until a run left no process behind; rejects after `timeoutMs`. Cleanup runs after
 * the answer and there is no event for "process N exited" to await here, so this polls.
 */
export async function assertNoProcessesLeft(
  first: number,
  count: number,
  timeoutMs = 5_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const left = await leftoverProcesses(first, count);
    if (left.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(`expected no sandbox processes left, found ${left.join(", ")}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
