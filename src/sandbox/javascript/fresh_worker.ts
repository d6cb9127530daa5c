/**
 * Entry of a runner's first worker: it runs one run, in its own realm, then the runner ends it.
 * A realm that no code has touched is as fresh as a new vm context, and costs no `node:vm` (about
 * 30 ms of CPU to load in a worker): this is how a new tenant's run starts fast. The realm is
 * locked down first (lockdown.ts); its evaluators compile without a module loader.
 *
 * Loaded with the runner's permissions: it and its static imports are trusted code only.
 *
 * @module
 */

import { lockDown, type RealmTools } from "./lockdown.ts";
import { compileEvaluatorsWith } from "./evaluators.ts";
import { OutputWriter } from "./output_channel.ts";
import { type RunRequest, RunScope } from "./run_scope.ts";

// deno-lint-ignore no-explicit-any
type AnyRecord = Record<string | symbol, any>;

// Taken before the lock-down removes them from the global scope.
const scope = globalThis as unknown as AnyRecord;
const post: (message: unknown) => void = scope.postMessage.bind(globalThis);
const listen: (type: string, listener: (event: MessageEvent) => void) => void = scope
  .addEventListener.bind(globalThis);
const parseJson = JSON.parse;
// A macrotask without the timers module (about 10 ms of CPU to load) nor setTimeout's clamp.
const macrotask = new MessageChannel();
macrotask.port2.onmessage = () => pending?.();
let pending: (() => void) | undefined;
const stringify = JSON.stringify;
const toText = String;

/** Code is compiled as this function's body, on its first line so lines keep their numbers. */
const PREFIX = "(async function () {";
const SCHEME = "sandbox:";

let tools: RealmTools | undefined;
let output: OutputWriter | undefined;
let run: RunScope | undefined;

listen("message", (event) => {
  const message = event.data as AnyRecord;
  if (message?.t === "boot" && !tools) boot(message);
  else if (message?.t === "run" && tools && !run) start(message as unknown as RunRequest);
});

function boot(message: AnyRecord): void {
  try {
    output = new OutputWriter(message.output, () => post({ t: "drain" }));
    tools = lockDown(message.builtins, {
      onException: (error) => run?.uncaught(error, "Uncaught"),
      onRejection: (reason) => run?.uncaught(reason, "Uncaught (in promise)"),
    });
    compileEvaluatorsWith(tools.compile);
    post({ t: "booted" });
  } catch (error) {
    post({ t: "fatal", message: String(error) });
  }
}

function start(request: RunRequest): void {
  const file = request.file;
  const specifier = `${SCHEME}${file}`;
  run = new RunScope(request, {
    realm: {
      stringify,
      toText,
      compile: tools!.compile,
      mapText: (text) => text.includes(specifier) ? mapFrames(text, specifier, file) : text,
    },
    tools: tools!,
    output: output!,
    end: (end) => post(end),
    later: (callback) => {
      pending = callback;
      macrotask.port1.postMessage(0);
    },
  });
  for (const [name, value] of Object.entries(run.globals)) define(name, value);
  let body: unknown;
  try {
    define("input", request.input === undefined ? undefined : parseJson(request.input));
    body = tools!.compile(`${PREFIX}${request.code}\n})`, specifier);
  } catch (error) {
    run.uncaught(error, "Uncaught");
    return;
  }
  run.start(body as () => unknown);
}

function define(name: string, value: unknown): void {
  Object.defineProperty(globalThis, name, {
    value,
    writable: true,
    enumerable: false,
    configurable: true,
  });
}

/** `sandbox:main.js:1:27` → `main.js:1:7`: frames as a vm context run prints them. */
function mapFrames(text: string, specifier: string, file: string): string {
  const pattern = new RegExp(
    `${specifier.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:(\\d+):(\\d+)`,
    "g",
  );
  return text.replace(pattern, (_, line, column) => {
    const shift = line === "1" ? PREFIX.length : 0;
    return `${file}:${line}:${Math.max(1, Number(column) - shift)}`;
  });
}
