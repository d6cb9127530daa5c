/**
 * Entry of a runner's kept worker: it serves a tenant's later runs, each in a fresh `node:vm`
 * context made while the worker was idle. Every run is fresh by construction:
 *
 * - what the runs share cannot change: the realm is locked down (lockdown.ts), its evaluators
 *   refuse to compile, and everything reachable from what a context holds is frozen
 *   (harden.ts) before the first run;
 * - nothing reaches the runs through the realm: no run can reach the realm's global (where runs
 *   arrive as messages), and errors go to the realm's own handlers, never to the global;
 * - nothing a run leaves outlives it unnoticed: its timers are cleared when it ends, and an
 *   error or rejection from a finished run's context marks the worker as having left work
 *   behind, which retires it.
 *
 * Loaded with the runner's permissions: it and its static imports are trusted code only.
 *
 * @module
 */

import type { Context } from "node:vm";
import { lockDown, type RealmTools, WEB_GLOBALS } from "./lockdown.ts";
import { refuseEvaluators } from "./evaluators.ts";
import { harden } from "./harden.ts";
import { OutputWriter } from "./output_channel.ts";
import { type RunEnd, type RunRequest, RunScope } from "./run_scope.ts";

// deno-lint-ignore no-explicit-any
type AnyRecord = Record<string | symbol, any>;
type Vm = typeof import("node:vm");

const scope = globalThis as unknown as AnyRecord;
const listen: (type: string, listener: (event: MessageEvent) => void) => void = scope
  .addEventListener.bind(globalThis);
const post: (message: unknown) => void = scope.postMessage.bind(globalThis);

/** A context made ahead, with the built-ins a run needs from it. */
interface Prepared {
  sandbox: AnyRecord;
  context: Context;
  objectPrototype: object;
  parseJson: (text: string) => unknown;
  stringify: (value: unknown) => string | undefined;
  toText: (value: unknown) => string;
}

let tools: RealmTools;
let vm: Vm;
let booting = false;
let output: OutputWriter;
let webValues: [string, unknown][] = [];
let prepared: Prepared | undefined;
/** The run under way and the runs that ended, by their context's Object.prototype. */
let current: RunScope | undefined;
const contexts = new WeakMap<object, RunScope>();
/** Set once a finished run's code ran again: the worker must not serve another run. */
let leftover = false;

// Runs arrive as the worker's messages: no code of a run can reach this realm's global to
// listen to them (its evaluators refuse, its event targets need a receiver).
listen("message", (event) => {
  const message = event.data as AnyRecord;
  if (message?.t === "boot" && !booting) {
    booting = true;
    boot(message).catch((error) => post({ t: "fatal", message: String(error) }));
  } else if (message?.t === "run" && tools && !current) {
    start(message as unknown as RunRequest);
  }
});

async function boot(message: AnyRecord): Promise<void> {
  output = new OutputWriter(message.output, () => post({ t: "drain" }));
  // Loaded first: Node's bootstrap reads what the lock-down takes away (Deno.execPath).
  vm = await import("node:vm");
  tools = lockDown(message.builtins, {
    onException: (error) => attribute(error)?.uncaught(error, "Uncaught"),
    onRejection: (reason, promise) => attribute(promise)?.uncaught(reason, "Uncaught (in promise)"),
  });
  tools.timers(); // loaded now: a module loaded later would find the realm frozen
  // Read once (some are lazy getters), then frozen with all they reach: every global's value.
  webValues = WEB_GLOBALS.filter((name) => name in globalThis).map((name) => [name, scope[name]]);
  refuseEvaluators();
  const globals = Reflect.ownKeys(globalThis).map((key) => scope[key]);
  harden([...globals, tools.Console, vm], { skip: [globalThis] });
  prepared = prepare();
  post({ t: "booted" });
}

/**
 * The run a late error or rejection belongs to: the run under way, unless it came from the
 * context of a run that already ended (then that run left work behind).
 */
function attribute(value: unknown): RunScope | undefined {
  let proto = typeof value === "object" && value !== null ? Reflect.getPrototypeOf(value) : null;
  while (proto !== null) {
    const owner = contexts.get(proto);
    if (owner) {
      if (owner.finished) leftover = true;
      return owner.finished ? undefined : owner;
    }
    proto = Reflect.getPrototypeOf(proto);
  }
  return current;
}

function prepare(): Prepared {
  const sandbox: AnyRecord = Object.create(null);
  for (const [name, value] of webValues) sandbox[name] = value;
  const context = vm.createContext(sandbox);
  const [objectPrototype, parseJson, stringify, toText] = vm.runInContext(
    "[Object.prototype, JSON.parse, JSON.stringify, String]",
    context,
  ) as [object, Prepared["parseJson"], Prepared["stringify"], Prepared["toText"]];
  return { sandbox, context, objectPrototype, parseJson, stringify, toText };
}

function start(request: RunRequest): void {
  const next = prepared ?? prepare();
  prepared = undefined;
  const { sandbox, context } = next;
  const run = new RunScope(request, {
    realm: {
      stringify: next.stringify,
      toText: next.toText,
      compile: (source, specifier) =>
        new vm.Script(source, { filename: specifier }).runInContext(context),
    },
    tools,
    output,
    end: (end) => finish(run, end),
    later: (callback) => tools.timers().setImmediate(callback),
  });
  current = run;
  contexts.set(next.objectPrototype, run);
  for (const [name, value] of Object.entries(run.globals)) sandbox[name] = value;
  let body: unknown;
  try {
    sandbox.input = request.input === undefined ? undefined : next.parseJson(request.input);
    const script = new vm.Script(`(async function () {\n${request.code}\n})`, {
      filename: request.file,
      lineOffset: -1,
    });
    body = script.runInContext(context);
  } catch (error) {
    run.uncaught(error, "Uncaught");
    return;
  }
  run.start(body as () => unknown);
}

function finish(run: RunScope, end: RunEnd): void {
  if (current === run) current = undefined;
  post(leftover ? { ...end, leftover: true } : end);
  // The next run's context, made while this worker waits for it.
  if (!leftover) queueMicrotask(() => prepared ??= prepare());
}
