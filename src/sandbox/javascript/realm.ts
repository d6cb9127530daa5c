/**
 * The realm that runs user code, installed in the no-permission Web Worker of a runner (or,
 * in inline mode, in the runner's own thread once its permissions are revoked). It is trusted
 * code: it closes what a "none" realm can still reach, then runs each piece of user code as an
 * async function body with Deno's console formatting, `input`, `return_val` and timers that die
 * with the run. A run the host will not follow with another (most runners serve one run) runs in
 * the realm itself, as fresh as a new vm context then, and the runner takes no other run. A
 * runner the host keeps for a tenant's later runs gives each a fresh `node:vm` context, with the
 * realm checked against its baseline before each. `node:vm` costs more to load than a trivial
 * run, so only kept runners load it, before their first run.
 *
 * Frames in: `run` (see protocol.ts). Frames out: `out`, `done`, `idle`, `refused`, for the host.
 *
 * @module
 */

import type { Context } from "node:vm";
import { type DoneFrame, OUTPUT_CHUNK, type RunFrame } from "./protocol.ts";

// deno-lint-ignore no-explicit-any
type AnyRecord = Record<string | symbol, any>;

const scope = globalThis as unknown as AnyRecord;
const deno = Deno as unknown as AnyRecord;

// Private copies taken at import, before user code can touch the globals.
const describe = Object.getOwnPropertyDescriptor;
let post: (frame: unknown) => void = () => {};
// deno-lint-ignore no-explicit-any
const listen: (type: string, listener: (event: any) => void) => void = scope.addEventListener
  .bind(globalThis);
/** What Deno's `setTimeout`/`setInterval` return: a Node-style `Timeout` (a number inside). */
type TimerHandle = object | number;
type SetTimer = (callback: () => void, delay?: number, ...args: unknown[]) => TimerHandle;
type ClearTimer = (handle: TimerHandle) => void;
interface Timers {
  setTimeout: SetTimer;
  setInterval: SetTimer;
  clearTimeout: ClearTimer;
  setImmediate: (callback: () => void, ...args: unknown[]) => TimerHandle;
  clearImmediate: ClearTimer;
}
// Deno loads its timers module on the first read of `setTimeout` (about 10 ms of CPU, a sixth
// of a runner's boot): only the accessors are taken here, and a run that sets no timer never
// loads it. They are Deno's own closures, taken before any user code exists.
const timerAccess = {
  setTimeout: describe(globalThis, "setTimeout"),
  setInterval: describe(globalThis, "setInterval"),
  clearTimeout: describe(globalThis, "clearTimeout"),
  setImmediate: describe(globalThis, "setImmediate"),
  clearImmediate: describe(globalThis, "clearImmediate"),
};
let timers: Timers | undefined;
function realTimers(): Timers {
  if (timers) return timers;
  const take = (descriptor: PropertyDescriptor | undefined) => {
    const value = descriptor?.get ? descriptor.get.call(globalThis) : descriptor?.value;
    if (typeof value !== "function") throw new Error("this realm has no timers");
    return value.bind(globalThis);
  };
  timers = {
    setTimeout: take(timerAccess.setTimeout),
    setInterval: take(timerAccess.setInterval),
    clearTimeout: take(timerAccess.clearTimeout),
    setImmediate: take(timerAccess.setImmediate),
    clearImmediate: take(timerAccess.clearImmediate),
  };
  return timers;
}
const internal: AnyRecord = deno[deno.internal];
const evalContext = internal.core.evalContext as (
  source: string,
  specifier: string,
  hostDefinedOptions?: unknown[],
) => [unknown, AnyRecord | null];
/** Host-defined options that make `import()` fail as it does in a vm context (no callback). */
const NO_IMPORT_CALLBACK = [1];
const parseJsonHere: (text: string) => unknown = JSON.parse;
const hostConsole: unknown = scope.console;
const ConsoleClass = internal.Console as new (
  print: (message: string, level: number) => void,
) => Console;
const encoder = new TextEncoder();

// A macrotask without the timer clamp (setTimeout(0) costs 1-2 ms here, a port message 20 µs).
const tick = new MessageChannel();
const tickQueue: (() => void)[] = [];
tick.port1.onmessage = () => tickQueue.shift()?.();
function nextMacrotask(callback: () => void): void {
  tickQueue.push(callback);
  tick.port2.postMessage(0);
}

/** Thrown through user code by `Deno.exit` (or past the output cap) to unwind it. */
class ExitSignal {
  constructor(readonly code: number) {}
}

interface RunState {
  id: number;
  maxOutputBytes: number;
  bytes: [number, number];
  explicit?: string;
  /** Timers and immediates the run set, each with the function that clears it. */
  timers: Map<TimerHandle, ClearTimer>;
  finished: boolean;
  memory: boolean;
  /** Set when the run runs in this realm itself: its file name, for mapping stack frames. */
  realmFile?: string;
}

let current: RunState | undefined;
let exposed: string[] = [];

type Vm = typeof import("node:vm");
/** `node:vm`, once a run needed it. */
let vm: Vm | undefined;

/**
 * True once user code ran in this realm itself. Such a runner serves no other run: that code
 * had the realm to itself before anything was checked (it could load and change `node:vm`
 * before the runner ever loaded it), so every later run is refused.
 */
let realmUsed = false;

function lockDown(): void {
  // Deno internals give back the core ops and printing to the process's stdio.
  delete deno[deno.internal];
  for (
    const name of [
      "BroadcastChannel",
      "caches",
      "CacheStorage",
      "Cache",
      "Worker",
      "postMessage",
      "close",
      "onmessage",
      "onmessageerror",
      "importScripts",
      // Worker-only names a vm context run does not see either.
      "self",
      "name",
      "onerror",
      "onunhandledrejection",
      "WorkerGlobalScope",
      "DedicatedWorkerGlobalScope",
    ]
  ) {
    delete scope[name];
  }
  for (const name of ["stdin", "stdout", "stderr"]) delete deno[name];
  const refuse = (what: string) => () => {
    throw new Deno.errors.NotCapable(`${what} is not available in the sandbox`);
  };
  deno.addSignalListener = refuse("Deno.addSignalListener");
  deno.removeSignalListener = refuse("Deno.removeSignalListener");
  const denied = { state: "denied", partial: false, onchange: null };
  deno.permissions = Object.freeze({
    query: () => Promise.resolve(denied),
    querySync: () => denied,
    request: () => Promise.resolve(denied),
    requestSync: () => denied,
    revoke: () => Promise.resolve(denied),
    revokeSync: () => denied,
  });
  deno.exit = (code?: number) => {
    const exitCode = Number.isInteger(code) ? code as number : 0;
    finish({ exitCode, exited: true });
    throw new ExitSignal(exitCode);
  };
  // Timers outlive nothing: every one is tracked by the run that set it.
  scope.setTimeout = trackedTimer("setTimeout");
  scope.setInterval = trackedTimer("setInterval");
  scope.clearTimeout = clearTracked;
  scope.clearInterval = clearTracked;
  scope.setImmediate = trackedImmediate;
  scope.clearImmediate = clearTracked;
  listen("unhandledrejection", (event) => {
    event.preventDefault();
    uncaught(event.reason, "Uncaught (in promise)");
  });
  listen("error", (event) => {
    event.preventDefault();
    uncaught(event.error, "Uncaught");
  });
}

function trackedTimer(kind: "setTimeout" | "setInterval") {
  return (callback: unknown, delay?: number, ...args: unknown[]): TimerHandle => {
    const run = current;
    if (!run || run.finished) return 0;
    if (typeof callback !== "function") throw new TypeError("timer callback must be a function");
    // The callback is handed over as it is: no frame of ours below it (stacks the code reads
    // name its lines only). It can only fire during its run, which clears its timers on end.
    const real = realTimers();
    const handle = real[kind](callback as () => void, delay, ...args);
    run.timers.set(handle, real.clearTimeout);
    return handle;
  };
}

function trackedImmediate(callback: unknown, ...args: unknown[]): TimerHandle | undefined {
  const run = current;
  if (!run || run.finished) return undefined;
  if (typeof callback !== "function") throw new TypeError("immediate callback must be a function");
  const real = realTimers();
  const handle = real.setImmediate(callback as () => void, ...args);
  run.timers.set(handle, real.clearImmediate);
  return handle;
}

/**
 * Clears a timer or immediate of the current run, given its handle or the number inside a
 * timer's handle (as Deno). Deno's clearTimeout clears intervals too.
 */
function clearTracked(handle?: unknown): void {
  const run = current;
  if (!run || handle === undefined || handle === null) return;
  let found: TimerHandle | undefined;
  if (run.timers.has(handle as TimerHandle)) found = handle as TimerHandle;
  else if (typeof handle === "number" || typeof handle === "string") {
    for (const candidate of run.timers.keys()) {
      if (Number(candidate) === Number(handle)) found = candidate;
    }
  }
  if (found === undefined) return;
  run.timers.get(found)!(found);
  run.timers.delete(found);
}

const DENIED_GLOBALS = new Set([
  "self",
  "globalThis",
  "window",
  "console",
  "Deno",
  "addEventListener",
  "removeEventListener",
  "dispatchEvent",
  "onerror",
  "onunhandledrejection",
  "onrejectionhandled",
  "name",
  "WorkerGlobalScope",
  "DedicatedWorkerGlobalScope",
]);

// Integrity of this realm between runs. User code reaches this realm from its vm context in
// one line; whatever it changes here would persist into the tenant's later runs. So before
// each run the realm compares its globals and intrinsics with a baseline taken at boot, and
// refuses the run (the host then uses another runner and discards this one) if they changed.
const ownKeys = Reflect.ownKeys;
const same = Object.is;
const WATCHED: object[] = [
  globalThis,
  Deno,
  Object,
  Object.prototype,
  Function.prototype,
  Array.prototype,
  String.prototype,
  Number.prototype,
  Boolean.prototype,
  Symbol.prototype,
  BigInt.prototype,
  Promise,
  Promise.prototype,
  Map.prototype,
  Set.prototype,
  WeakMap.prototype,
  WeakSet.prototype,
  RegExp.prototype,
  Error,
  Error.prototype,
  JSON,
  Math,
  Reflect,
  Date.prototype,
  ArrayBuffer.prototype,
  Object.getPrototypeOf(Uint8Array.prototype),
  Uint8Array.prototype,
  TextEncoder.prototype,
  MessagePort.prototype,
  EventTarget.prototype,
];
let baseline: unknown[] = [];

/**
 * Takes the baseline of the watched objects. Lazily defined properties settle on first read,
 * so all are read first; not the globals': theirs are accessors that stay as they are when
 * read, and reading them loads what they stand for (`process` alone loads Node's polyfills,
 * 10-15 ms of CPU that most runners never need). Only while no user code has run here.
 */
function takeBaseline(): void {
  for (const object of WATCHED) {
    if (object === globalThis || object === Deno) continue;
    for (const key of ownKeys(object)) {
      try {
        (object as AnyRecord)[key];
      } catch {
        // a getter that throws stays a getter
      }
    }
  }
  baseline = integritySnapshot();
  baselineGlobals = new Set(ownKeys(globalThis));
}

/**
 * Adds what the vm path calls to the watched objects (a run that reaches this realm could
 * wrap `Script.prototype.runInContext` and read or write the tenant's later runs) and takes
 * the baseline again: loading `node:vm` also changed some globals. Called once, right after
 * the module loaded and before any user code ran in this realm.
 */
function watchVm(module: Vm): void {
  WATCHED.push(
    module,
    module.Script,
    module.Script.prototype,
    module.createContext,
    module.runInContext,
  );
  takeBaseline();
}

function integritySnapshot(): unknown[] {
  const entries: unknown[] = [];
  for (const object of WATCHED) {
    const keys = ownKeys(object);
    entries.push(keys.length, Object.isExtensible(object));
    for (const key of keys) {
      const descriptor = describe(object, key);
      entries.push(key, descriptor?.value, descriptor?.get, descriptor?.set);
      entries.push(descriptor?.writable, descriptor?.enumerable, descriptor?.configurable);
    }
  }
  return entries;
}

function realmChanged(): boolean {
  if (baseline.length === 0) return false; // still booting (the warm-up run)
  const now = integritySnapshot();
  if (now.length !== baseline.length) return true;
  for (let i = 0; i < now.length; i++) {
    if (!same(now[i], baseline[i])) return true;
  }
  return false;
}

/** Names of worker globals (Web APIs) that user code sees beside the ECMAScript built-ins. */
function exposedGlobals(vm: Vm): string[] {
  const builtins = new Set<string>(
    vm.runInContext("Object.getOwnPropertyNames(globalThis)", vm.createContext({})),
  );
  return Object.getOwnPropertyNames(globalThis).filter((name) =>
    !builtins.has(name) && !DENIED_GLOBALS.has(name)
  );
}

/** Output of `run`: dropped once that run finished, so late callbacks never reach a later run. */
function write(run: RunState | undefined, fd: 1 | 2, text: string): void {
  if (!run || run.finished) return;
  for (let offset = 0; offset < text.length; offset += OUTPUT_CHUNK) {
    const data = text.length <= OUTPUT_CHUNK ? text : text.slice(offset, offset + OUTPUT_CHUNK);
    run.bytes[fd - 1] += encoder.encode(data).length;
    post({ t: "out", id: run.id, fd, data });
    if (run.bytes[fd - 1] > run.maxOutputBytes) {
      // The host stops the run at the cap too; ending it here also works when this thread
      // is the one that relays frames (inline mode), which a print loop would starve.
      finish({ exitCode: 1, oversized: true });
      throw new ExitSignal(1);
    }
  }
}

function serialize(value: unknown): string {
  try {
    const json = JSON.stringify(value);
    if (json !== undefined) return json;
  } catch {
    // not JSON (cycle, BigInt): fall back to String
  }
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** Stack frames under this URL are ours, not the user's. */
const OWN_MODULES = new URL("./", import.meta.url).href;

/** True for objects of any realm (user errors come from the run's vm context). */
function isObject(value: unknown): value is AnyRecord {
  return (typeof value === "object" && value !== null) || typeof value === "function";
}

function cleanStack(error: unknown, realmFile?: string): void {
  if (!isObject(error) || typeof error.stack !== "string") return;
  const lines = ((error as AnyRecord).stack as string).split("\n");
  const kept = lines.filter((line) =>
    !/^\s+at /.test(line) || !(line.includes("ext:") || line.includes(OWN_MODULES))
  );
  try {
    const stack = kept.join("\n");
    (error as AnyRecord).stack = realmFile === undefined ? stack : mapRealmFrames(stack, realmFile);
  } catch {
    // a frozen error keeps its stack
  }
}

function isArrayBufferFailure(error: unknown): boolean {
  return isObject(error) && error.name === "RangeError" &&
    /Array buffer allocation failed/i.test(String(error.message));
}

function uncaught(error: unknown, prefix: string): void {
  const run = current;
  if (!run || run.finished) return;
  if (error instanceof ExitSignal) return;
  if (isArrayBufferFailure(error)) run.memory = true;
  cleanStack(error, run.realmFile);
  let text: string;
  try {
    text = Deno.inspect(error, { colors: false });
  } catch {
    text = serialize(error);
  }
  try {
    write(run, 2, `${prefix} ${text}\n`);
  } catch {
    // past the output cap: write() already ended the run
  }
  finish({ exitCode: 1 });
}

function finish(result: Omit<DoneFrame, "t" | "id" | "memory">, idleNow = false): void {
  const run = current;
  if (!run || run.finished) return;
  run.finished = true;
  if (run.realmFile !== undefined) clearRealmGlobals();
  for (const [handle, clear] of run.timers) clear(handle);
  run.timers.clear();
  const done: DoneFrame = Object.assign(Object.create(null), { t: "done", id: run.id }, result);
  if (run.explicit !== undefined) done.explicit = run.explicit;
  if (run.memory) done.memory = true;
  const limit = run.maxOutputBytes;
  const file = run.realmFile;
  if (file !== undefined) {
    // Stacks the code returns read as they would in a vm context run, like its printed ones.
    if (done.explicit?.includes(REALM_SCHEME)) done.explicit = mapRealmFrames(done.explicit, file);
    if (done.returned?.includes(REALM_SCHEME)) done.returned = mapRealmFrames(done.returned, file);
  }
  if ((done.explicit?.length ?? 0) > limit || (done.returned?.length ?? 0) > limit) {
    delete done.explicit;
    delete done.returned;
    done.oversized = true;
  }
  post(done);
  // A macrotask runs only once the code of the run has stopped, even queued microtasks.
  if (idleNow) post({ t: "idle", id: run.id });
  else nextMacrotask(() => post({ t: "idle", id: run.id }));
  // Contexts are prepared ahead only once a runner has shown it gets more than one run.
  nextMacrotask(() => {
    if (current === run && vm) prepared ??= prepareContext(vm);
  });
}

/** Run id of the warm-up (host run ids start at 1). */
const WARM_UP_ID = 0;

/** Opens the function that wraps user code in this realm; on line 1, so lines keep numbers. */
const REALM_PREFIX = "(async function () {";

const REALM_SCHEME = "sandbox:";

/** Stack frames of code compiled in this realm name this URL (evalContext wants one). */
function realmSpecifier(file: string): string {
  return `${REALM_SCHEME}${file}`;
}

/** `sandbox:main.js:1:27` → `main.js:1:7`: frames as a vm context run reports them. */
function mapRealmFrames(stack: string, file: string): string {
  const specifier = realmSpecifier(file).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return stack.replace(new RegExp(`${specifier}:(\\d+):(\\d+)`, "g"), (_, line, column) => {
    const shift = line === "1" ? REALM_PREFIX.length : 0;
    return `${file}:${line}:${Math.max(1, Number(column) - shift)}`;
  });
}

/**
 * Compiles user code as an async function of this realm, with the run's globals installed.
 * Returns undefined, with the realm as it was, when the code does not compile: the vm path
 * then reports the syntax error with its position (evalContext gives none).
 */
function compileInRealm(frame: RunFrame, run: RunState): (() => Promise<unknown>) | undefined {
  const file = frame.file;
  run.realmFile = file;
  // Printed errors (`console.log(error)`) show frames as a vm context run prints them too.
  scope.console = new ConsoleClass((message, level) =>
    write(
      run,
      level > 1 ? 2 : 1,
      message.includes(REALM_SCHEME) ? mapRealmFrames(message, file) : message,
    )
  );
  scope.return_val = (value: unknown) => {
    run.explicit = typeof value === "string" ? value : serialize(value);
  };
  scope.input = frame.input === undefined ? undefined : parseJsonHere(frame.input);
  const [body, error] = evalContext(
    `${REALM_PREFIX}${frame.code}\n})`,
    realmSpecifier(frame.file),
    NO_IMPORT_CALLBACK,
  );
  if (error) {
    if (error.isCompileError) {
      run.realmFile = undefined;
      clearRealmGlobals();
      return undefined;
    }
    throw error.thrown;
  }
  return body as () => Promise<unknown>;
}

/** Names of this realm's own globals when the baseline was taken. */
let baselineGlobals = new Set<string | symbol>();

/**
 * Takes the run's globals out of this realm again: ours, and those the run added (`x = 1`
 * in sloppy code, `globalThis.y = 2`), which a vm context run would have left in its context.
 * Whatever cannot be undone (a changed built-in, a non-configurable global) the integrity
 * check finds, and the next run is refused.
 */
function clearRealmGlobals(): void {
  try {
    scope.console = hostConsole;
    delete scope.input;
    delete scope.return_val;
  } catch {
    // made read-only by the run: the integrity check refuses the next run
  }
  if (baselineGlobals.size === 0) return; // the warm-up, before the baseline
  for (const key of ownKeys(globalThis)) {
    if (baselineGlobals.has(key)) continue;
    try {
      delete scope[key];
    } catch {
      // non-configurable: the integrity check refuses the next run
    }
  }
}

interface PreparedContext {
  sandbox: AnyRecord;
  context: Context;
  parseJson: (text: string) => unknown;
}

/** The next run's context, built while the realm is idle so a run does not wait for it. */
let prepared: PreparedContext | undefined;

function prepareContext(vm: Vm): PreparedContext {
  const sandbox: AnyRecord = {};
  for (const name of exposed) {
    const descriptor = Object.getOwnPropertyDescriptor(globalThis, name);
    if (!descriptor) continue;
    const value = "value" in descriptor ? descriptor.value : descriptor.get?.call(globalThis);
    sandbox[name] = value;
  }
  sandbox.Deno = Deno;
  const context = vm.createContext(sandbox);
  // The context's own JSON, so `input` has the run's prototypes.
  const parseJson = vm.runInContext("JSON.parse", context);
  return { sandbox, context, parseJson };
}

function createContext(vm: Vm, frame: RunFrame, run: RunState): Context {
  const { sandbox, context, parseJson } = prepared ?? prepareContext(vm);
  prepared = undefined;
  sandbox.console = new ConsoleClass((message, level) => write(run, level > 1 ? 2 : 1, message));
  sandbox.return_val = (value: unknown) => {
    run.explicit = typeof value === "string" ? value : serialize(value);
  };
  sandbox.input = frame.input === undefined ? undefined : parseJson(frame.input);
  return context;
}

async function run(frame: RunFrame): Promise<void> {
  // No prototype: properties planted on this realm's Object.prototype by an earlier run of
  // the tenant (reachable through a context escape) must not show through as `explicit`.
  const state: RunState = Object.assign(Object.create(null), {
    id: frame.id,
    maxOutputBytes: frame.maxOutputBytes,
    bytes: [0, 0],
    timers: new Map(),
    finished: false,
    memory: false,
  });
  if (realmUsed || realmChanged()) {
    post({ t: "refused", id: frame.id });
    return;
  }
  let body: (() => Promise<unknown>) | undefined;
  // A run the host will not follow with another (most runners serve one) runs in this realm;
  // a runner kept for its tenant's later runs gives each a fresh vm context.
  if (!frame.keep && !vm) {
    // The warm-up is our own code: the first user run still finds the realm untouched.
    realmUsed = frame.id !== WARM_UP_ID;
    current = state;
    try {
      body = compileInRealm(frame, state);
    } catch (error) {
      uncaught(error, "Uncaught");
      return;
    }
    if (!body) current = undefined; // not compiled here: the vm context reports the error
  }
  if (!body) {
    if (!vm) {
      // No user code has run in this realm yet: what the module is now is what it must stay.
      vm = await import("node:vm");
      watchVm(vm);
      exposed = exposedGlobals(vm);
    }
    current = state;
    try {
      const context = createContext(vm, frame, state);
      const script = new vm.Script(`(async function () {\n${frame.code}\n})`, {
        filename: frame.file,
        lineOffset: -1,
      });
      body = script.runInContext(context) as () => Promise<unknown>;
    } catch (error) {
      uncaught(error, "Uncaught");
      return;
    }
  }
  // The body is called by a promise job and settles into callbacks, never by or into a function
  // of ours: stacks the code can read (`new Error().stack`, console.trace) hold its own frames
  // only, not this realm's (which would name the service's files).
  Promise.resolve().then(body).then((value) => {
    if (state.finished) return;
    const returned = value === undefined ? undefined : serialize(value);
    // One macrotask later: rejections nobody handled have been reported by then, and the
    // code of the run has provably stopped (its microtasks drained).
    nextMacrotask(() =>
      finish(returned === undefined ? { exitCode: 0 } : { exitCode: 0, returned }, true)
    );
  }, (error) => uncaught(error, "Uncaught"));
}

/**
 * Code run once at boot in this realm with its output dropped, so the first real run finds hot
 * code. It leaves the realm as it found it (checked by the baseline taken after it).
 */
const WARM_UP = "console.log('warm', {a: [1, 'x']}, 1.5); console.error(new Error('warm'));\n" +
  "return_val({ok: true}); await null; return {n: input.n};";

/**
 * Locks this realm down, runs a warm-up, and returns the function that runs one `run` frame.
 * `send` receives every frame for the host. Call once, before any user code exists.
 */
export async function installSandbox(
  send: (frame: unknown) => void,
): Promise<(frame: RunFrame) => void> {
  lockDown();
  const warmed = Promise.withResolvers<void>();
  post = (frame) => {
    if ((frame as { t?: string }).t === "idle") warmed.resolve();
  };
  await run({
    t: "run",
    id: WARM_UP_ID,
    code: WARM_UP,
    file: "warm_up.js",
    input: '{"n":1}',
    maxOutputBytes: 1024,
  });
  await warmed.promise;
  post = send;
  current = undefined;
  takeBaseline();
  return (frame) => {
    if (frame?.t === "run") run(frame);
  };
}
