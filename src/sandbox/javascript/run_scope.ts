/**
 * One run's own objects, made anew for every run: `console` (Deno's formatting, written to the
 * output channel), `input`, `return_val`, timers that die with the run, `Deno` with an `exit`
 * that ends only this run, `performance` that keeps no timeline, and `process`, the part of
 * Node's that evaluator code written for Node reaches for (`exit`, an empty `env`, `nextTick`,
 * `stdout.write`, …), none of what leads out of the run (`getBuiltinModule`, `binding`, `kill`). Whatever a finished run
 * still calls is dropped: its console writes nothing, its timers are cleared, its `exit` and
 * errors end nothing but itself.
 *
 * Code of ours never calls into user code with a frame of its own on the stack: the body, the
 * serialization of what it returns and the formatting of what it throws are promise jobs whose
 * callbacks are the realm's built-ins, and `return_val` is compiled in the run's realm. A stack
 * the code reads names its own frames and the platform's, never ours.
 *
 * @module
 */

import type { DoneFrame } from "./protocol.ts";
import type { RealmTools, Timers } from "./lockdown.ts";
import type { OutputWriter } from "./output_channel.ts";

// deno-lint-ignore no-explicit-any
type AnyRecord = Record<string | symbol, any>;

/** What a worker learns of a run. */
export interface RunRequest {
  /** Run number. */
  id: number;
  /** JavaScript function body. */
  code: string;
  /** File name in stack traces. */
  file: string;
  /** `input` as JSON text, if any. */
  input?: string;
}

/**
 * How a run ended, for the runner's main thread, which adds whether the worker was left with
 * work behind (`leftover`) and passes it on to the host as its done frame.
 */
export type RunEnd = Omit<DoneFrame, "leftover">;

/** The built-ins of the realm a run's code runs in (the worker's, or a vm context's). */
export interface RunRealm {
  /** Its `JSON.stringify`. */
  stringify: (value: unknown) => string | undefined;
  /** Its `String`. */
  toText: (value: unknown) => string;
  /** Compiles trusted source in that realm; stack frames of what it defines name `specifier`. */
  compile: (source: string, specifier: string) => unknown;
  /** Rewrites text the run prints (stack frames of code compiled under another name). */
  mapText?: (text: string) => string;
}

/** Thrown through user code by `Deno.exit` to unwind it. */
class ExitSignal {
  constructor(readonly code: number) {}
}

/** Stack frames under this URL are ours. */
const OWN_MODULES = new URL("./", import.meta.url).href;

// Taken at import, before any user code: a first run shares this realm and may change them.
const inspect = Deno.inspect;
const queueMicrotask = globalThis.queueMicrotask;
const objectToString = Object.prototype.toString;

/** `return_val`, compiled in the run's realm (see the module doc). */
const RETURN_VAL_KIT = "(function (record, stringify, toText) {\n" +
  "  return function return_val(value) {\n" +
  "    if (typeof value === 'string') return void record(value);\n" +
  "    let text;\n" +
  "    try { text = stringify(value); } catch {}\n" +
  "    if (text === undefined) { try { text = toText(value); } catch { text = ''; } }\n" +
  "    record(text);\n" +
  "  };\n" +
  "})";

/** One run's objects and its end. */
export class RunScope {
  /** Run number. */
  readonly id: number;
  /** True once the run ended. */
  finished = false;
  /** The run's globals (see {@link RUN_GLOBALS} in lockdown.ts). */
  readonly globals: AnyRecord;
  #realm: RunRealm;
  #tools: RealmTools;
  #output: OutputWriter;
  #end: (end: RunEnd) => void;
  #later: (callback: () => void) => void;
  #explicit: string | undefined;
  #memory = false;
  #timers = new Map<unknown, (handle: unknown) => void>();

  /**
   * Makes the run's objects. `end` receives the run's end once its code has provably stopped:
   * in a macrotask after it settled, which `later` queues.
   */
  constructor(
    request: RunRequest,
    parts: {
      realm: RunRealm;
      tools: RealmTools;
      output: OutputWriter;
      end: (end: RunEnd) => void;
      later: (callback: () => void) => void;
    },
  ) {
    this.id = request.id;
    this.#realm = parts.realm;
    this.#tools = parts.tools;
    this.#output = parts.output;
    this.#end = parts.end;
    this.#later = parts.later;
    const makeReturnVal = parts.realm.compile(RETURN_VAL_KIT, "sandbox:return_val") as (
      record: (text: string) => void,
      stringify: RunRealm["stringify"],
      toText: RunRealm["toText"],
    ) => (value: unknown) => void;
    const deno = Object.create(parts.tools.deno);
    Object.defineProperty(deno, "exit", {
      value: (code?: number) => this.#exit(code),
      enumerable: true,
    });
    this.globals = {
      console: new parts.tools.Console((message, level) => this.write(level > 1 ? 2 : 1, message)),
      return_val: makeReturnVal(
        (text) => {
          if (!this.finished) this.#explicit = text;
        },
        parts.realm.stringify,
        parts.realm.toText,
      ),
      Deno: deno,
      performance: Object.freeze({ now: parts.tools.now, timeOrigin: parts.tools.timeOrigin }),
      setTimeout: this.#timer("setTimeout"),
      setInterval: this.#timer("setInterval"),
      setImmediate: this.#immediate(),
      clearTimeout: (handle?: unknown) => this.#clear(handle),
      clearInterval: (handle?: unknown) => this.#clear(handle),
      clearImmediate: (handle?: unknown) => this.#clear(handle),
      process: this.#process(),
    };
  }

  /** The run's `process` (see the module doc). */
  #process(): AnyRecord {
    const stream = (fd: 1 | 2) =>
      Object.freeze({
        write: (chunk: unknown) => {
          this.write(fd, typeof chunk === "string" ? chunk : String(chunk));
          return true;
        },
        isTTY: false,
      });
    const hrtime = (previous?: [number, number]) => {
      const now = this.#tools.now() * 1e6;
      const seconds = Math.floor(now / 1e9);
      const nanos = Math.floor(now % 1e9);
      if (!previous) return [seconds, nanos];
      const delta = (seconds - previous[0]) * 1e9 + nanos - previous[1];
      return [Math.floor(delta / 1e9), delta % 1e9];
    };
    hrtime.bigint = () => BigInt(Math.floor(this.#tools.now() * 1e6));
    return Object.freeze({
      exit: (code?: number) => this.#exit(code),
      env: Object.freeze({}),
      argv: Object.freeze(["deno", "main.js"]),
      platform: "linux",
      arch: Deno.build.arch === "aarch64" ? "arm64" : "x64",
      version: "v22.0.0",
      versions: Object.freeze({ node: "22.0.0", deno: Deno.version.deno, v8: Deno.version.v8 }),
      pid: 1,
      cwd: () => "/",
      nextTick: (callback: (...args: unknown[]) => void, ...args: unknown[]) =>
        queueMicrotask(() => callback(...args)),
      hrtime,
      stdout: stream(1),
      stderr: stream(2),
    });
  }

  /** Writes output of this run; dropped once it ended. */
  write(fd: 1 | 2, text: string): void {
    if (this.finished) return;
    this.#output.write(fd, this.#realm.mapText ? this.#realm.mapText(text) : text);
  }

  /** Runs the compiled body: called by a promise job, settled into built-ins. */
  start(body: () => unknown): void {
    Promise.resolve().then(body).then(
      (value) => this.#returned(value),
      (error) => this.uncaught(error, "Uncaught"),
    );
  }

  /** Ends the run with an error nobody caught, printed as Deno prints it. */
  uncaught(error: unknown, prefix: string): void {
    if (this.finished || error instanceof ExitSignal) return;
    describe(error, this.#realm).then((text) => {
      if (/^RangeError: Array buffer allocation failed/.test(text)) this.#memory = true;
      this.write(2, `${prefix} ${cleanStack(text)}\n`);
      this.#finish({ exitCode: 1 });
    });
  }

  /** The body settled: the run ends a macrotask later, so that rejections nobody handled have
   * been reported (and end it as errors) by then. */
  #returned(value: unknown): void {
    if (this.finished) return;
    if (value === undefined) {
      this.#later(() => this.#finish({ exitCode: 0 }));
      return;
    }
    serialize(value, this.#realm).then((returned) =>
      this.#later(() => this.#finish({ exitCode: 0, returned }))
    );
  }

  #exit(code?: number): never {
    const exitCode = Number.isInteger(code) ? code as number : 0;
    this.#finish({ exitCode, exited: true });
    throw new ExitSignal(exitCode);
  }

  #finish(result: { exitCode: number; returned?: string; exited?: boolean }): void {
    if (this.finished) return;
    this.finished = true;
    for (const [handle, clear] of this.#timers) clear(handle);
    this.#timers.clear();
    const end: RunEnd = { t: "done", id: this.id, exitCode: result.exitCode };
    // Stacks the code returns read as they would in a vm context, like its printed ones.
    const map = this.#realm.mapText ?? ((text: string) => text);
    if (this.#explicit !== undefined) end.explicit = map(this.#explicit);
    if (result.returned !== undefined) end.returned = map(result.returned);
    if (this.#memory) end.memory = true;
    if (result.exited) end.exited = true;
    // A macrotask runs only once the run's code has stopped, its microtasks drained too. After
    // an exit the code may go on (it caught the unwinding): the runner serves no other run then,
    // and the end is sent at once.
    if (result.exited) this.#end(end);
    else this.#later(() => this.#end(end));
  }

  #timer(kind: "setTimeout" | "setInterval") {
    return (callback: unknown, delay?: number, ...args: unknown[]): unknown => {
      if (this.finished) return 0;
      if (typeof callback !== "function") throw new TypeError("timer callback must be a function");
      const timers: Timers = this.#tools.timers();
      // Handed over as it is: no frame of ours below the callback.
      const handle = timers[kind](callback as () => void, delay, ...args);
      this.#timers.set(handle, timers.clearTimeout);
      return handle;
    };
  }

  #immediate() {
    return (callback: unknown, ...args: unknown[]): unknown => {
      if (this.finished) return undefined;
      if (typeof callback !== "function") {
        throw new TypeError("immediate callback must be a function");
      }
      const timers = this.#tools.timers();
      const handle = timers.setImmediate(callback as () => void, ...args);
      this.#timers.set(handle, timers.clearImmediate);
      return handle;
    };
  }

  /** Clears a timer of this run by handle, or by the number inside a timer's handle. */
  #clear(handle?: unknown): void {
    if (handle === undefined || handle === null) return;
    let found: unknown;
    if (this.#timers.has(handle)) found = handle;
    else if (typeof handle === "number" || typeof handle === "string") {
      for (const candidate of this.#timers.keys()) {
        if (Number(candidate) === Number(handle)) found = candidate;
      }
    }
    if (found === undefined) return;
    this.#timers.get(found)!(found);
    this.#timers.delete(found);
  }
}

/**
 * The run's returned value as JSON, else as text, computed by the realm's own built-ins in
 * promise jobs (a `toJSON` or `toString` of the code sees no frame of ours).
 */
function serialize(value: unknown, realm: RunRealm): Promise<string> {
  const text = () =>
    Promise.resolve().then(realm.toText.bind(undefined, value)).then(
      (result) => typeof result === "string" ? result : "",
      () => objectToString.call(value),
    );
  return Promise.resolve().then(realm.stringify.bind(undefined, value)).then(
    (json) => typeof json === "string" ? json : text(),
    text,
  );
}

/** An uncaught error as Deno prints it; never fails, whatever its getters do. */
function describe(error: unknown, realm: RunRealm): Promise<string> {
  return Promise.resolve().then(inspect.bind(undefined, error, { colors: false })).catch(
    () => Promise.resolve().then(realm.toText.bind(undefined, error)),
  ).then(
    (text) => typeof text === "string" ? text : "",
    () => objectToString.call(error),
  );
}

/** Drops the stack frames of Deno's internals and of this runner from printed text. */
function cleanStack(text: string): string {
  if (!text.includes("ext:") && !text.includes(OWN_MODULES)) return text;
  return text.split("\n").filter((line) =>
    !/^\s+at /.test(line) || !(line.includes("ext:") || line.includes(OWN_MODULES))
  ).join("\n");
}
