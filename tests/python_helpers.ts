/**
 * Shared setup of the Python runtime tests, and what they read of its processes in /proc.
 *
 * The process tree of a runtime: its jailer (a child of this process whose command line holds
 * `faas_jail/__main__.py`), the jailer's children, the zygotes (one per slot, same command
 * line), and each zygote's children, one process per run (the spare waiting for its job, or
 * the run). Run processes take the uids of the range the jailer claimed (it holds the range's
 * lock file open).
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

/** What the jailer and its zygotes carry in their command line. */
export const JAILER_MARK = "faas_jail/__main__.py";

/** Uids one jail claims (see faas_jail/slots.py). */
export const UID_RANGE_SIZE = 65_536;

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

/** One live process, as /proc shows it. */
export interface ProcessInfo {
  /** Its pid. */
  pid: number;
  /** Its parent's pid. */
  ppid: number;
  /** Its real uid. */
  uid: number;
  /** Its state letter (R, S, D, T, ...). */
  state: string;
  /** Its command line, arguments joined by NUL. */
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

/** Pids of the jailers started by this process. */
export async function jailerPids(): Promise<number[]> {
  return (await listProcesses())
    .filter((p) => p.ppid === Deno.pid && p.cmdline.includes(JAILER_MARK))
    .map((p) => p.pid);
}

/** Pids of the zygotes of `jailer` (its children that carry the mark). */
export async function zygotePids(jailer: number): Promise<number[]> {
  return (await listProcesses())
    .filter((p) => p.ppid === jailer && p.cmdline.includes(JAILER_MARK))
    .map((p) => p.pid);
}

/** The one jailer this process started since `before` was listed. */
export async function newJailer(before: readonly number[]): Promise<number> {
  const fresh = (await jailerPids()).filter((pid) => !before.includes(pid));
  if (fresh.length !== 1) {
    throw new Error(`expected one new jailer process, found ${fresh.length}`);
  }
  return fresh[0];
}

/** First uid of the range `jailer` claimed: the range's lock file is among its open files. */
export async function uidBase(jailer: number): Promise<number> {
  for await (const entry of Deno.readDir(`/proc/${jailer}/fd`)) {
    const target = await Deno.readLink(`/proc/${jailer}/fd/${entry.name}`).catch(() => "");
    const match = /\/uid-ranges\/(\d+)\.lock$/.exec(target);
    if (match) return Number(match[1]);
  }
  throw new Error(`expected jailer ${jailer} to hold a uid range lock`);
}

/**
 * Processes with a uid of the range at `first` that a run left behind: every such process
 * but a zygote's one waiting child (its next run's, with no child of its own).
 */
export async function leftoverProcesses(first: number): Promise<string[]> {
  const processes = await listProcesses();
  const byPid = new Map(processes.map((p) => [p.pid, p]));
  const childCount = new Map<number, number>();
  for (const p of processes) childCount.set(p.ppid, (childCount.get(p.ppid) ?? 0) + 1);
  const isZygote = (pid: number) => {
    const p = byPid.get(pid);
    const jailer = p && byPid.get(p.ppid);
    return !!p && !!jailer && p.cmdline.includes(JAILER_MARK) &&
      jailer.cmdline.includes(JAILER_MARK) && jailer.ppid === Deno.pid;
  };
  const isWaitingChild = (p: ProcessInfo) =>
    isZygote(p.ppid) && childCount.get(p.ppid) === 1 && !childCount.has(p.pid) &&
    p.cmdline.includes(JAILER_MARK);
  return processes
    .filter((p) => p.uid >= first && p.uid < first + UID_RANGE_SIZE && !isWaitingChild(p))
    .map((p) => `${p.pid} (uid ${p.uid}, parent ${p.ppid}: ${p.cmdline.slice(0, 60)})`);
}

/**
 * Waits until runs left no process behind; rejects after `timeoutMs`. A zygote reaps its run
 * before it answers, but what the run started dies with its pid namespace, and no event says
 * when: this polls /proc.
 */
export async function assertNoProcessesLeft(first: number, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const left = await leftoverProcesses(first);
    if (left.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(`expected no sandbox processes left, found ${left.join(", ")}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
