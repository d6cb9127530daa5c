/**
 * A test runtime that starts a real OS process per run, to prove the service leaves no
 * child behind. Code `spawn <seconds>` runs `sleep <seconds>` in its own process group;
 * any other code succeeds at once. Each spawned pid is announced on stderr as a JSON line
 * `{"spawned": pid}`. Shutdown kills every process group and answers their runs `crashed`.
 *
 * @module
 */

import {
  type Language,
  type PoolStats,
  type RunJob,
  type RunOutcome,
  type Runtime,
  type RuntimeInfo,
  SandboxStartError,
  type ValidationResult,
} from "../../src/runtime.ts";

/** See the module doc. */
export class SpawnRuntime implements Runtime {
  /** Languages served. */
  readonly languages: readonly Language[];
  #children = new Map<number, Deno.ChildProcess>();
  #stopped = false;

  #startChild: string | undefined;

  /**
   * Creates a runtime serving `languages`. With `startChild`, `start()` spawns
   * `sleep <startChild>` and never finishes, like a runtime stuck booting its sandboxes.
   */
  constructor(languages: readonly Language[], options: { startChild?: string } = {}) {
    this.languages = languages;
    this.#startChild = options.startChild;
  }

  start(): Promise<void> {
    if (this.#startChild === undefined) return Promise.resolve();
    this.#spawn(this.#startChild);
    return new Promise(() => {});
  }

  async run(job: RunJob): Promise<RunOutcome> {
    if (job.onStart?.() === false) throw new SandboxStartError("the run was already answered");
    const startedAt = performance.now();
    const seconds = /^spawn (\S+)$/.exec(job.code.trim())?.[1];
    const outcome = (status: RunOutcome["status"], error?: string): RunOutcome => ({
      stdout: "",
      stderr: "",
      retVal: "",
      status,
      exitCode: status === "success" ? 0 : -1,
      durationMs: Math.round(performance.now() - startedAt),
      truncated: false,
      instanceId: "spawn",
      error,
    });
    if (seconds === undefined) return outcome("success");
    const child = this.#spawn(seconds);
    const timer = setTimeout(() => this.#kill(child.pid), job.timeoutMs);
    try {
      const status = await child.status;
      if (this.#stopped) return outcome("crashed", "the sandbox was shut down");
      return status.success ? outcome("success") : outcome("timeout", "execution timed out");
    } finally {
      clearTimeout(timer);
      this.#children.delete(child.pid);
    }
  }

  validate(): Promise<ValidationResult> {
    return Promise.resolve({ valid: true, error: null });
  }

  stats(): PoolStats {
    const active = this.#children.size;
    return { totalInstances: active, idleInstances: 0, activeInstances: active };
  }

  info(): RuntimeInfo {
    return { available: !this.#stopped, version: "spawn 1.0", isolation: { process: true } };
  }

  async shutdown(): Promise<void> {
    this.#stopped = true;
    const children = [...this.#children.values()];
    for (const child of children) this.#kill(child.pid);
    await Promise.all(children.map((child) => child.status));
  }

  #spawn(seconds: string): Deno.ChildProcess {
    const child = new Deno.Command("sleep", {
      args: [seconds],
      detached: true,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    this.#children.set(child.pid, child);
    console.error(JSON.stringify({ spawned: child.pid }));
    return child;
  }

  #kill(pid: number): void {
    try {
      Deno.kill(-pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}
