/**
 * Lock-down of a runner worker's realm before any user code exists: what user code may see of
 * it, and what it must never reach. The same for both workers of a runner, so a run sees the
 * same globals and API wherever it runs.
 *
 * - Globals: only ECMAScript's, the Web APIs in {@link WEB_GLOBALS} and the run's own (console,
 *   input, return_val, timers, Deno, performance) stay; everything else (the worker's message
 *   channel, Node's `process` and its `getBuiltinModule`, BroadcastChannel, Worker, caches,
 *   Deno's internals and stdio) is removed.
 * - Errors: uncaught exceptions and unhandled rejections go to the realm's own handlers; nothing
 *   is ever dispatched on the global, so a listener a run added there never sees a later run.
 * - `Deno`: exit, permissions and signal listeners are the sandbox's; stdio, `execPath`, `cwd`,
 *   `ppid` and `mainModule` say nothing about the host.
 *
 * @module
 */

// deno-lint-ignore no-explicit-any
type AnyRecord = Record<string | symbol, any>;

/** Web APIs user code may use besides ECMAScript's globals. */
export const WEB_GLOBALS: readonly string[] = [
  "AbortController",
  "AbortSignal",
  "Blob",
  "ByteLengthQueuingStrategy",
  "CloseEvent",
  "CompressionStream",
  "CountQueuingStrategy",
  "Crypto",
  "CryptoKey",
  "CustomEvent",
  "DOMException",
  "DecompressionStream",
  "ErrorEvent",
  "Event",
  "EventTarget",
  "File",
  "FileReader",
  "FormData",
  "Headers",
  "MessageChannel",
  "MessageEvent",
  "MessagePort",
  "ProgressEvent",
  "PromiseRejectionEvent",
  "ReadableByteStreamController",
  "ReadableStream",
  "ReadableStreamBYOBReader",
  "ReadableStreamBYOBRequest",
  "ReadableStreamDefaultController",
  "ReadableStreamDefaultReader",
  "Request",
  "Response",
  "SubtleCrypto",
  "TextDecoder",
  "TextDecoderStream",
  "TextEncoder",
  "TextEncoderStream",
  "TransformStream",
  "TransformStreamDefaultController",
  "URL",
  "URLPattern",
  "URLSearchParams",
  "WebSocket",
  "WritableStream",
  "WritableStreamDefaultController",
  "WritableStreamDefaultWriter",
  "atob",
  "btoa",
  "crypto",
  "fetch",
  "navigator",
  "queueMicrotask",
  "structuredClone",
];

/** Globals every run gets of its own (see run_scope.ts). */
export const RUN_GLOBALS: readonly string[] = [
  "console",
  "input",
  "return_val",
  "Deno",
  "performance",
  "setTimeout",
  "setInterval",
  "clearTimeout",
  "clearInterval",
  "setImmediate",
  "clearImmediate",
  "process",
];

/** Deno's timers, as the realm had them before the lock-down replaced the globals. */
export interface Timers {
  /** Deno's setTimeout. */
  setTimeout: (callback: () => void, delay?: number, ...args: unknown[]) => unknown;
  /** Deno's setInterval. */
  setInterval: (callback: () => void, delay?: number, ...args: unknown[]) => unknown;
  /** Deno's clearTimeout (also clears intervals). */
  clearTimeout: (handle: unknown) => void;
  /** Deno's setImmediate. */
  setImmediate: (callback: () => void, ...args: unknown[]) => unknown;
  /** Deno's clearImmediate. */
  clearImmediate: (handle: unknown) => void;
}

/** What the lock-down keeps for the realm's own use. */
export interface RealmTools {
  /** Compiles source in this realm (`core.evalContext`); `import()` in it always fails. */
  compile: (source: string, specifier: string) => unknown;
  /** Deno's console class: `new Console(print)` formats as Deno does and calls `print`. */
  Console: new (print: (message: string, level: number) => void) => Console;
  /** Deno's timers, loaded on first use (their module costs about 10 ms of CPU). */
  timers: () => Timers;
  /** The realm's `Deno` namespace after the lock-down. */
  deno: AnyRecord;
  /** `performance.now`, bound. */
  now: () => number;
  /** `performance.timeOrigin`. */
  timeOrigin: number;
}

/** Where the realm's errors go instead of its global. */
export interface ErrorHooks {
  /** An exception nobody caught (a timer or a microtask threw). */
  onException: (error: unknown) => void;
  /** A promise rejected with no handler. */
  onRejection: (reason: unknown, promise: Promise<unknown>) => void;
}

/**
 * Locks this realm down (see the module doc). `builtins` names ECMAScript's globals (those of
 * a fresh V8 context); every other global not in {@link WEB_GLOBALS} is removed. Call once,
 * before any user code exists; a global that cannot be removed ends the worker's boot.
 */
export function lockDown(builtins: readonly string[], hooks: ErrorHooks): RealmTools {
  const deno = Deno as unknown as AnyRecord;
  const internal: AnyRecord = deno[deno.internal];
  const core = internal.core;
  const evalContext = core.evalContext as (
    source: string,
    specifier: string,
    hostDefinedOptions?: unknown[],
  ) => [unknown, AnyRecord | null];
  const Console = internal.Console;
  const timers = timerLoader();
  const now = performance.now.bind(performance);
  const timeOrigin = performance.timeOrigin;
  core.setReportExceptionCallback(hooks.onException);
  core.setUnhandledPromiseRejectionHandler((promise: Promise<unknown>, reason: unknown) => {
    hooks.onRejection(reason, promise);
    return true;
  });
  core.setHandledPromiseRejectionHandler(() => {});
  guardGlobalReceiver();
  lockDownDeno(deno);
  const keep = new Set<string>([...builtins, ...WEB_GLOBALS, "Deno"]);
  // Symbol-keyed properties are the platform's brands (its event dispatch checks them).
  for (const key of Object.getOwnPropertyNames(globalThis)) {
    if (keep.has(key)) continue;
    if (!Reflect.deleteProperty(globalThis, key)) {
      throw new Error(`the global ${String(key)} cannot be removed`);
    }
  }
  return {
    // Host-defined options without a module loader: `import()` fails in what this compiles,
    // and in anything it in turn compiles with eval or the Function constructor.
    compile: (source, specifier) => {
      const [value, error] = evalContext(source, specifier, [1]);
      if (error) throw error.thrown;
      return value;
    },
    Console,
    timers,
    deno,
    now,
    timeOrigin,
  };
}

/**
 * Deno's event target methods fall back to the global when called without a receiver: from a
 * run, `EventTarget.prototype.addEventListener.call(undefined, …)` would reach the realm's
 * global and its events. They refuse that here (the platform itself names the global).
 */
function guardGlobalReceiver(): void {
  const proto = EventTarget.prototype as unknown as AnyRecord;
  for (const name of ["addEventListener", "removeEventListener", "dispatchEvent"]) {
    const original = proto[name] as (...args: unknown[]) => unknown;
    const guarded = {
      [name](this: unknown, ...args: unknown[]) {
        if (this === undefined || this === null) {
          throw new TypeError(`${name} needs an event target`);
        }
        return Reflect.apply(original, this, args);
      },
    }[name];
    Object.defineProperty(proto, name, { value: guarded, writable: true, configurable: true });
  }
}

function lockDownDeno(deno: AnyRecord): void {
  // Deno's internals give back the core ops, raw printing and the realm's hooks.
  delete deno[deno.internal];
  for (const name of ["stdin", "stdout", "stderr"]) delete deno[name];
  const refuse = (what: string) => () => {
    throw new Deno.errors.NotCapable(`${what} is not available in the sandbox`);
  };
  deno.addSignalListener = refuse("Deno.addSignalListener");
  deno.removeSignalListener = refuse("Deno.removeSignalListener");
  deno.execPath = refuse("Deno.execPath");
  deno.cwd = refuse("Deno.cwd");
  for (const name of ["ppid", "mainModule"]) {
    Object.defineProperty(deno, name, {
      value: undefined,
      writable: false,
      enumerable: true,
      configurable: true,
    });
  }
  const denied = Object.freeze({ state: "denied", partial: false, onchange: null });
  deno.permissions = Object.freeze({
    query: () => Promise.resolve(denied),
    querySync: () => denied,
    request: () => Promise.resolve(denied),
    requestSync: () => denied,
    revoke: () => Promise.resolve(denied),
    revokeSync: () => denied,
  });
}

/**
 * Deno's timers, read from the realm's accessors only when first needed: their module costs
 * about 10 ms of CPU to load, which a run that sets no timer never pays.
 */
function timerLoader(): () => Timers {
  const describe = Object.getOwnPropertyDescriptor;
  const access = {
    setTimeout: describe(globalThis, "setTimeout"),
    setInterval: describe(globalThis, "setInterval"),
    clearTimeout: describe(globalThis, "clearTimeout"),
    setImmediate: describe(globalThis, "setImmediate"),
    clearImmediate: describe(globalThis, "clearImmediate"),
  };
  let timers: Timers | undefined;
  return () => {
    if (timers) return timers;
    const take = (descriptor: PropertyDescriptor | undefined) => {
      const value = descriptor?.get ? descriptor.get.call(globalThis) : descriptor?.value;
      if (typeof value !== "function") throw new Error("this realm has no timers");
      return value.bind(globalThis);
    };
    timers = {
      setTimeout: take(access.setTimeout),
      setInterval: take(access.setInterval),
      clearTimeout: take(access.clearTimeout),
      setImmediate: take(access.setImmediate),
      clearImmediate: take(access.clearImmediate),
    };
    return timers;
  };
}
