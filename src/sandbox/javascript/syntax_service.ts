/**
 * The syntax service: a small pool of warm syntax processes that strip TypeScript and check
 * JavaScript for the JS runtime, so that parsing untrusted code never runs in the service's
 * thread. Measured before it existed, on this project's 2-core VM: one 60 KiB TypeScript input
 * held the service's thread for 11-15 s (every route waited, `/health` included), and 80 inputs
 * of 34 KiB that broke the TypeScript parser grew the service by 253 MiB.
 *
 * Each request has a deadline that grows with the code's size; past it the process is killed
 * (its whole process group) and replaced, and the request is answered with a problem saying the
 * check took too long. A process that runs out of memory, answers garbage, or whose parser broke
 * is replaced too. Every failure of the check itself is answered as a problem at line 1,
 * column 1, never as an exception: a run is then answered as a syntax failure (status `error`)
 * and `/validate_code` as `valid: false` with the message, since a client that retries non-200
 * answers (the platform's does, three times) would otherwise send the same input again.
 *
 * Checks for runs go before checks for `/validate_code`; the queue is bounded, and when it is
 * full a validation is refused (answered as a problem saying the checker is busy), while a run's
 * check takes the place of the newest waiting validation: runs are bounded by the scheduler's
 * slots already.
 *
 * @module
 */

import { LRUCache } from "lru-cache";
import type { SyntaxProblem } from "../../runtime.ts";
import type { RunnerLaunch } from "./runner_command.ts";
import { SourcePositions } from "./source_positions.ts";
import { type Exchange, startSyntaxProcess, type SyntaxProcess } from "./syntax_process.ts";
import type { Mapping, RequestContent, ScriptLanguage } from "./syntax_protocol.ts";

/** Code and output the cache of verdicts holds at most, in UTF-16 units (16 MiB of memory). */
const CACHE_CHARS = 8 * 1024 * 1024;
/** Longer code is never cached: one would push out many evaluators. */
const MAX_CACHED_CHARS = 256 * 1024;

/** How a check's deadline grows with the code: `baseMs + perMiBMs × MiB of code`. */
export interface SyntaxDeadline {
  /** Deadline of a check of empty code, in ms. */
  baseMs: number;
  /** Added per MiB of code (UTF-16 units), in ms. */
  perMiBMs: number;
}

/** Settings of the syntax service; every one has a default. */
export interface SyntaxServiceOptions {
  /** Syntax processes (default: one per 2 CPU cores, at least 1). */
  processes?: number;
  /** Checks that may wait for a process (default 256). */
  maxQueued?: number;
  /** Deadline of each check (default {@link DEFAULT_DEADLINE}). */
  deadline?: SyntaxDeadline;
  /** V8 heap cap of each member, in MiB (default 1024). */
  heapMb?: number;
  /**
   * Bound each process's memory with RLIMIT_DATA through `prlimit` (default false: only when
   * the host has it, which the caller knows).
   */
  dataLimit?: boolean;
  /** How processes are started (default `"self"` in a compiled binary, else `"deno"`). */
  launch?: RunnerLaunch;
  /** Longest a process boot may take, in ms (default 30 s). */
  bootTimeoutMs?: number;
  /** Resident memory past which a process is replaced after its answer, in MiB (default 512). */
  recycleRssMb?: number;
}

/** What a check is for. */
export interface PrepareOptions {
  /** Language of the code. */
  language: ScriptLanguage;
  /**
   * `"run"`: the JavaScript to run is needed, and the check goes first and is never refused;
   * `"validate"`: only the verdict.
   */
  purpose: "run" | "validate";
}

/**
 * Result of {@link SyntaxService.prepare}: the JavaScript to run (with `positions` when
 * TypeScript had to be transformed and its lines moved), or the problem that prevents it.
 */
export type PreparedSource =
  | { ok: true; code: string; positions?: SourcePositions }
  | { ok: false; problem: SyntaxProblem };

/**
 * Default deadline. Measured through a syntax process on the 2-core VM (shared with other work,
 * load 2.5-4): a check of a few KiB takes 0.2 ms; of 16 MiB, for a run: 2.0 s for stripped
 * TypeScript, 4.7-9.2 s for TypeScript with an enum (transformed, 30 MiB of code and a source
 * map back), 4.9 s for TypeScript that fails at its end (three parses to name the problem);
 * 60 KiB of nested ternaries whose branches may be arrows: 11 s. A check gets 1 s plus 1 s per
 * MiB: 17 s at the 16 MiB code cap, and a hostile 60 KiB input holds a process for 1.06 s.
 */
export const DEFAULT_DEADLINE: SyntaxDeadline = { baseMs: 1_000, perMiBMs: 1_000 };

/**
 * V8 heap of a syntax member, in MiB. The largest legitimate need measured: acorn's tree of
 * 16 MiB of object literals that fail at their end, about 450 MiB.
 */
const DEFAULT_HEAP_MB = 1024;

/**
 * Address space V8 and Deno reserve in a syntax process before any parsing, which RLIMIT_DATA
 * counts (measured on Deno 2.9.6: boots at 640 MiB, fails at 512), plus the TypeScript parser's
 * wasm memory, which grows with the input and is not on the V8 heap.
 */
const DATA_BASE_MB = 640;
const WASM_MB = 1024;

const MIB = 1024 * 1024;
/** Answer bound of a verdict alone (a problem message is at most 2 KiB). */
const VERDICT_ANSWER_BYTES = 64 * 1024;
/**
 * Answer bound of code, per UTF-16 unit of input: stripped code has as many units (up to 3
 * UTF-8 bytes each), a transform makes code longer (an enum member becomes a line of its own)
 * and adds a source map. Measured: 16 MiB of TypeScript with an enum answered 63 MB.
 */
const OUTPUT_ANSWER_FACTOR = 24;
/** Largest answer read at all: more than a runner accepts (64 MiB of code and input). */
const MAX_ANSWER_BYTES = 96 * MIB;
/** Boot retries after failures wait this long, doubling up to {@link MAX_BOOT_BACKOFF_MS}. */
const BOOT_BACKOFF_MS = 250;
const MAX_BOOT_BACKOFF_MS = 5_000;

type Refusal = { kind: "refused"; message: string };

interface Job {
  request: RequestContent;
  purpose: "run" | "validate";
  deadlineMs: number;
  maxAnswerBytes: number;
  retried: boolean;
  resolve: (exchange: Exchange | Refusal) => void;
}

/** The pool of syntax processes; {@link SyntaxService.start} it before use. */
export class SyntaxService {
  #options: Required<Omit<SyntaxServiceOptions, "dataLimit">> & { dataLimit: boolean };
  #processes = new Set<SyntaxProcess>();
  /** The parser's answers for code seen lately (a tenant sends the same evaluator again). */
  #verdicts = new LRUCache<string, PreparedSource>({
    maxSize: CACHE_CHARS,
    sizeCalculation: (source, key) => key.length + (source.ok ? source.code.length : 0) + 256,
  });
  #idle: SyntaxProcess[] = [];
  #runs: Job[] = [];
  #validations: Job[] = [];
  #booting = 0;
  #bootFailures = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #boots = new Set<Promise<void>>();
  #stop = new AbortController();
  #started = false;
  #closed = false;

  /** A service with `options` over the defaults; nothing starts before {@link start}. */
  constructor(options: SyntaxServiceOptions = {}) {
    this.#options = {
      processes: options.processes ??
        Math.max(1, Math.floor((navigator.hardwareConcurrency ?? 1) / 2)),
      maxQueued: options.maxQueued ?? 256,
      deadline: options.deadline ?? DEFAULT_DEADLINE,
      heapMb: options.heapMb ?? DEFAULT_HEAP_MB,
      dataLimit: options.dataLimit ?? false,
      launch: options.launch ?? (Deno.build.standalone ? "self" : "deno"),
      bootTimeoutMs: options.bootTimeoutMs ?? 30_000,
      recycleRssMb: options.recycleRssMb ?? 512,
    };
  }

  /**
   * Boots every process and waits until they are warm.
   *
   * @throws {Error} when a process cannot boot (none is left running then).
   */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    const boots = Array.from({ length: this.#options.processes }, () => this.#boot());
    const failed = (await Promise.allSettled(boots)).find((boot) => boot.status === "rejected");
    if (failed) {
      await this.shutdown();
      throw new Error(`cannot start the syntax service: ${message(failed.reason)}`);
    }
  }

  /**
   * Checks `code` as an async function body (TypeScript after stripping its types) and, for a
   * run, returns the JavaScript to run. Never rejects for anything the code or the processes
   * do: every failure is a problem.
   */
  async prepare(code: string, options: PrepareOptions): Promise<PreparedSource> {
    const { language, purpose } = options;
    const output = purpose === "run" && language === "typescript";
    const key = code.length <= MAX_CACHED_CHARS ? `${language}:${output}:${code}` : undefined;
    const known = key === undefined ? undefined : this.#verdicts.get(key);
    if (known) return known;
    const verdict = await this.#prepare(code, { language, purpose }, output);
    if (key !== undefined && verdict.parsed) this.#verdicts.set(key, verdict.source);
    return verdict.source;
  }

  /** The answer of a syntax process; `parsed` when it is the parser's (the same every time). */
  async #prepare(
    code: string,
    options: PrepareOptions,
    output: boolean,
  ): Promise<{ source: PreparedSource; parsed: boolean }> {
    const { language, purpose } = options;
    const job = this.#job({ t: "prepare", language, code, output }, {
      purpose,
      size: code.length,
      maxAnswerBytes: output
        ? Math.min(MAX_ANSWER_BYTES, VERDICT_ANSWER_BYTES + OUTPUT_ANSWER_FACTOR * code.length)
        : VERDICT_ANSWER_BYTES,
    });
    const exchange = await this.#submit(job);
    if (exchange.kind !== "answer" || exchange.answer.t !== "prepared") {
      return { source: { ok: false, problem: this.#failure(exchange, job) }, parsed: false };
    }
    const answer = exchange.answer;
    if (!answer.ok) return { source: { ok: false, problem: answer.problem }, parsed: true };
    if (!output) return { source: { ok: true, code }, parsed: true };
    if (answer.code === undefined) {
      const problem = atStart("the syntax check answered without the code");
      return { source: { ok: false, problem }, parsed: false };
    }
    const mapping = answer.mapping;
    if (!mapping) return { source: { ok: true, code: answer.code }, parsed: true };
    const positions = new SourcePositions((positions) => this.#map(mapping, positions));
    return { source: { ok: true, code: answer.code, positions }, parsed: true };
  }

  /**
   * False once stopped, or while no process runs and the last boot failed (every check is then
   * answered as a problem saying the checker is unavailable).
   */
  healthy(): boolean {
    return this.#started && !this.#closed &&
      (this.#processes.size > 0 || this.#bootFailures === 0);
  }

  /** Stops every process, booting ones included, and answers every waiting check. Idempotent. */
  async shutdown(): Promise<void> {
    this.#closed = true;
    this.#stop.abort();
    clearTimeout(this.#retryTimer);
    for (const job of this.#runs.splice(0).concat(this.#validations.splice(0))) {
      job.resolve({ kind: "refused", message: "the syntax checker is shutting down" });
    }
    const processes = [...this.#processes];
    for (const member of processes) member.kill();
    await Promise.all([
      ...processes.map((member) => member.exited),
      ...[...this.#boots].map((boot) => boot.catch(() => {})),
    ]);
  }

  async #map(mapping: Mapping, positions: [number, number][]) {
    const job = this.#job({ t: "map", mapping, positions }, {
      purpose: "run",
      size: mapping.map.length,
      maxAnswerBytes: VERDICT_ANSWER_BYTES + 32 * positions.length,
    });
    const exchange = await this.#submit(job);
    if (exchange.kind !== "answer" || exchange.answer.t !== "mapped") {
      throw new Error(`expected mapped positions, got ${exchange.kind}`);
    }
    if (exchange.answer.positions.length !== positions.length) {
      throw new Error("expected one mapped position per position");
    }
    return exchange.answer.positions;
  }

  #job(
    request: Job["request"],
    limits: { purpose: Job["purpose"]; size: number; maxAnswerBytes: number },
  ): Job {
    const { baseMs, perMiBMs } = this.#options.deadline;
    return {
      request,
      purpose: limits.purpose,
      deadlineMs: Math.ceil(baseMs + perMiBMs * limits.size / MIB),
      maxAnswerBytes: limits.maxAnswerBytes,
      retried: false,
      resolve: () => {},
    };
  }

  #submit(job: Job): Promise<Exchange | Refusal> {
    if (this.#closed) {
      return Promise.resolve({ kind: "refused", message: "the syntax checker is shutting down" });
    }
    if (!this.#started) {
      return Promise.reject(new Error("the syntax service is not started: call start() first"));
    }
    const { promise, resolve } = Promise.withResolvers<Exchange | Refusal>();
    job.resolve = resolve;
    if (this.#runs.length + this.#validations.length >= this.#options.maxQueued) {
      const busy: Refusal = {
        kind: "refused",
        message: `the syntax checker is busy: ${this.#options.maxQueued} checks are waiting`,
      };
      if (job.purpose === "validate" || this.#validations.length === 0) {
        return Promise.resolve(busy);
      }
      this.#validations.pop()!.resolve(busy);
    }
    (job.purpose === "run" ? this.#runs : this.#validations).push(job);
    this.#pump();
    return promise;
  }

  #pump(): void {
    while (this.#idle.length > 0 && this.#runs.length + this.#validations.length > 0) {
      const member = this.#idle.pop()!;
      if (member.dead) continue;
      const job = this.#runs.shift() ?? this.#validations.shift()!;
      this.#dispatch(member, job);
    }
  }

  async #dispatch(member: SyntaxProcess, job: Job): Promise<void> {
    const exchange = await member.request(job.request, {
      deadlineMs: job.deadlineMs,
      maxAnswerBytes: job.maxAnswerBytes,
    });
    if (exchange.kind === "answer") {
      const answer = exchange.answer;
      const spent = answer.t === "prepared" && !answer.ok && answer.spent === true;
      // Parsers keep the memory of their largest input: a process past the mark starts anew.
      if (spent || answer.rss > this.#options.recycleRssMb * MIB) member.kill();
      else this.#idle.push(member);
    } else {
      member.kill();
      // A process that died for no reason of its own (killed from outside) gets the check
      // again once, on another process; one that ran out of memory on it does not.
      if (exchange.kind === "died" && !exchange.memory && !job.retried && !this.#closed) {
        job.retried = true;
        (job.purpose === "run" ? this.#runs : this.#validations).unshift(job);
        this.#pump();
        return;
      }
    }
    job.resolve(exchange);
    this.#pump();
  }

  /** Boots one process into the pool; {@link shutdown} waits for it and abandons it. */
  #boot(): Promise<void> {
    const boot = this.#bootOne();
    this.#boots.add(boot);
    boot.catch(() => {}).finally(() => this.#boots.delete(boot));
    return boot;
  }

  async #bootOne(): Promise<void> {
    this.#booting++;
    let member: SyntaxProcess;
    try {
      member = await startSyntaxProcess({
        launch: this.#options.launch,
        heapMb: this.#options.heapMb,
        dataLimitBytes: this.#options.dataLimit
          ? (DATA_BASE_MB + this.#options.heapMb + WASM_MB) * MIB
          : undefined,
        bootTimeoutMs: this.#options.bootTimeoutMs,
        signal: this.#stop.signal,
      });
    } finally {
      this.#booting--;
    }
    if (this.#closed) {
      member.kill();
      await member.exited;
      return;
    }
    this.#processes.add(member);
    this.#idle.push(member);
    member.exited.then(() => this.#onExit(member));
    this.#pump();
  }

  #onExit(member: SyntaxProcess): void {
    this.#processes.delete(member);
    const index = this.#idle.indexOf(member);
    if (index !== -1) this.#idle.splice(index, 1);
    if (!this.#closed) this.#replace();
  }

  /**
   * Boots a replacement. After a failure it retries later and, with no process left, answers
   * the waiting checks.
   */
  #replace(): void {
    if (this.#closed) return;
    this.#boot().then(
      () => {
        this.#bootFailures = 0;
      },
      (error) => {
        if (this.#closed) return;
        this.#bootFailures++;
        if (this.#processes.size === 0 && this.#booting === 0) {
          const refusal: Refusal = {
            kind: "refused",
            message: `the syntax checker is unavailable: ${message(error)}`,
          };
          for (const job of this.#runs.splice(0).concat(this.#validations.splice(0))) {
            job.resolve(refusal);
          }
        }
        const delay = Math.min(
          MAX_BOOT_BACKOFF_MS,
          BOOT_BACKOFF_MS * 2 ** (this.#bootFailures - 1),
        );
        this.#retryTimer = setTimeout(() => this.#replace(), delay);
      },
    );
  }

  /** The one-line problem of a check that did not get a verdict. */
  #failure(exchange: Exchange | Refusal, job: Job): SyntaxProblem {
    switch (exchange.kind) {
      case "refused":
        return atStart(exchange.message);
      case "deadline":
        return atStart(`the syntax check took longer than ${job.deadlineMs} ms`);
      case "died":
        if (this.#closed) return atStart("the syntax checker is shutting down");
        return atStart(
          exchange.memory
            ? `the syntax check ran out of memory (${this.#options.heapMb} MiB)`
            : `the syntax check failed: ${exchange.reason}`,
        );
      case "garbage":
        return atStart(`the syntax check failed: ${exchange.reason.slice(0, 200)}`);
      default:
        return atStart("the syntax check failed: it answered another request");
    }
  }
}

function atStart(message: string): SyntaxProblem {
  return { message, line: 1, column: 1 };
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
