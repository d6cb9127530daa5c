/**
 * A real in-process runtime for tests. Its "code" is a tiny script, one directive per line:
 *
 * - `print <text>` / `eprint <text>`: a line on stdout / stderr
 * - `sleep <ms>`: waits (the run's timeout applies)
 * - `gate <name>`: waits until the test calls {@link EchoRuntime.open} (timeout applies)
 * - `throw <message>`: an uncaught error (status `error`, trace on stderr, exit code 1)
 * - `exit <n>`: ends with exit code n (status `error` unless 0)
 * - `return <text>`: the return value
 * - `input`: prints the JSON of `input`
 * - `startfail <n>`: the first n attempts of this task fail before the code starts
 * - `crash`: the sandbox dies (status `crashed`)
 * - `hang`: never answers, whatever the timeout
 * - `bigout <n>`: writes n bytes to stdout (past the output cap: status `output_limit`)
 * - `!!` anywhere: a syntax error for `validate`; `validator_bug`: `validate` throws
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
  type RuntimeSettings,
  SandboxStartError,
  type ValidationResult,
} from "../../src/runtime.ts";
import type { RuntimeRegistration } from "../../src/runtimes.ts";

/** A run as the echo runtime saw it start. */
export interface StartedRun {
  /** The job. */
  job: RunJob;
  /** Attempt number for this task (1-based). */
  attempt: number;
}

/** See the module doc. */
export class EchoRuntime implements Runtime {
  /** Languages served. */
  readonly languages: readonly Language[];
  /** Settings received from the service (set by the factory). */
  settings: RuntimeSettings | undefined;
  /** Runs in the order they started user code. */
  readonly started: StartedRun[] = [];
  /** Every attempt, including ones failed before start. */
  readonly attempts = new Map<string, number>();
  /** What `info().available` reports. */
  available = true;
  /** When set, `start()` rejects with this message. */
  failStart: string | undefined;
  /** Set by `start()` / `shutdown()`. */
  state: "new" | "started" | "stopped" = "new";
  #gates = new Map<string, PromiseWithResolvers<void>>();
  #active = 0;
  #startListeners: (() => void)[] = [];
  #nextInstance = 0;
  #stopped = Promise.withResolvers<void>();

  /** Creates a runtime serving `languages`. */
  constructor(languages: readonly Language[]) {
    this.languages = languages;
  }

  /** A registration whose factory returns this runtime. */
  registration(): RuntimeRegistration {
    return {
      languages: this.languages,
      create: (settings) => {
        this.settings = settings;
        return this;
      },
    };
  }

  /** Opens a gate: runs waiting on it continue. */
  open(name: string): void {
    this.#gate(name).resolve();
  }

  /** Resolves once at least `count` runs have started user code. */
  waitForStarts(count: number): Promise<void> {
    if (this.started.length >= count) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    const check = () => {
      if (this.started.length < count) return;
      this.#startListeners = this.#startListeners.filter((listener) => listener !== check);
      resolve();
    };
    this.#startListeners.push(check);
    return promise;
  }

  start(): Promise<void> {
    if (this.failStart !== undefined) return Promise.reject(new Error(this.failStart));
    this.state = "started";
    this.settings?.onSandboxBoot?.(this.languages[0], 1, true);
    return Promise.resolve();
  }

  async run(job: RunJob): Promise<RunOutcome> {
    const attempt = (this.attempts.get(job.taskId) ?? 0) + 1;
    this.attempts.set(job.taskId, attempt);
    const lines = job.code.split("\n");
    const failures = Number(/^startfail (\d+)$/m.exec(job.code)?.[1] ?? 0);
    if (attempt <= failures) {
      throw new SandboxStartError(`echo sandbox ${attempt} failed to boot`);
    }
    if (this.state === "stopped") throw new SandboxStartError("the runtime is shut down");
    if (job.onStart?.() === false) throw new SandboxStartError("the run was already answered");
    this.started.push({ job, attempt });
    for (const listener of [...this.#startListeners]) listener();
    this.#active++;
    const startedAt = performance.now();
    const instanceId = `echo-${++this.#nextInstance}`;
    let stdout = "";
    let stderr = "";
    let retVal = "";
    const outcome = (
      status: RunOutcome["status"],
      extra: Partial<RunOutcome> = {},
    ): RunOutcome => ({
      stdout,
      stderr,
      retVal,
      status,
      exitCode: status === "success" ? 0 : 1,
      durationMs: Math.round(performance.now() - startedAt),
      truncated: false,
      instanceId,
      ...extra,
    });
    const deadline = startedAt + job.timeoutMs;
    const timedOut = () =>
      outcome("timeout", { error: `execution timed out after ${job.timeoutMs} ms` });
    const shutDown = () => outcome("crashed", { exitCode: -1, error: "the sandbox was shut down" });
    try {
      for (const line of lines) {
        const [, word = "", rest = ""] = /^(\S*)\s?(.*)$/.exec(line) ?? [];
        switch (word) {
          case "print":
            stdout += rest + "\n";
            break;
          case "eprint":
            stderr += rest + "\n";
            break;
          case "input":
            stdout += JSON.stringify(job.input ?? null) + "\n";
            break;
          case "return":
            retVal = rest;
            break;
          case "sleep": {
            const ms = Number(rest);
            const left = deadline - performance.now();
            const result = await this.#wait(delay(Math.max(0, Math.min(ms, left))), Infinity);
            if (result === "stopped") return shutDown();
            if (ms > left) return timedOut();
            break;
          }
          case "gate": {
            const result = await this.#wait(this.#gate(rest).promise, deadline);
            if (result === "stopped") return shutDown();
            if (result === "expired") return timedOut();
            break;
          }
          case "throw":
            stderr += `Error: ${rest}\n    at <anonymous>:1:7\n`;
            return outcome("error");
          case "exit": {
            const code = Number(rest);
            return outcome(code === 0 ? "success" : "error", { exitCode: code });
          }
          case "crash":
            return outcome("crashed", { exitCode: -1, error: "the echo sandbox died" });
          case "hang":
            await new Promise(() => {});
            break;
          case "bigout": {
            const cap = this.settings?.maxOutputBytes ?? Infinity;
            const size = Number(rest);
            stdout += "x".repeat(Math.min(size, cap));
            if (size > cap) {
              return outcome("output_limit", {
                truncated: true,
                error: `stdout exceeded ${cap} bytes; the run was stopped`,
              });
            }
            break;
          }
        }
      }
      return outcome("success");
    } finally {
      this.#active--;
    }
  }

  validate(code: string, _language: Language): Promise<ValidationResult> {
    if (code.includes("validator_bug")) throw new Error("validator bug\n    at secret.ts:1:1");
    const lines = code.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const column = lines[i].indexOf("!!");
      if (column >= 0) {
        return Promise.resolve({
          valid: false,
          error: { message: "unexpected '!!'", line: i + 1, column: column + 1 },
        });
      }
    }
    return Promise.resolve({ valid: true, error: null });
  }

  stats(): PoolStats {
    const idle = this.settings?.poolSize ?? 0;
    return {
      totalInstances: idle + this.#active,
      idleInstances: idle,
      activeInstances: this.#active,
    };
  }

  info(): RuntimeInfo {
    return { available: this.available, version: "echo 1.0", isolation: { test: true } };
  }

  shutdown(): Promise<void> {
    this.state = "stopped";
    this.#stopped.resolve();
    return Promise.resolve();
  }

  #gate(name: string): PromiseWithResolvers<void> {
    let gate = this.#gates.get(name);
    if (!gate) {
      gate = Promise.withResolvers<void>();
      this.#gates.set(name, gate);
    }
    return gate;
  }

  /** Waits for `promise`, the deadline or the shutdown, whichever comes first. */
  async #wait(
    promise: Promise<unknown>,
    deadline: number,
  ): Promise<"done" | "expired" | "stopped"> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<"expired">((resolve) => {
      if (deadline === Infinity) return;
      timer = setTimeout(() => resolve("expired"), Math.max(0, deadline - performance.now()));
    });
    try {
      return await Promise.race([
        promise.then(() => "done" as const),
        expired,
        this.#stopped.promise.then(() => "stopped" as const),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
