/**
 * Worker of the warm-context floor (see bench/baselines/context_floor_server.ts), started
 * with no permissions and kept warm: every run it is sent gets a fresh `node:vm` context with
 * `input`, `return_val` and a `console` whose output is kept in memory, runs the code there as
 * the body of an async function, and posts back what it printed and returned.
 *
 * Nothing more: no timeout (only well-behaved programs are sent), no output cap, no hardening
 * of the realm. That is what makes it a floor.
 *
 * @module
 */

import { createContext, Script } from "node:vm";

/** A run as the server posts it. */
interface Job {
  id: number;
  code: string;
  input?: string;
}

const scope = globalThis as unknown as {
  onmessage: (event: MessageEvent<Job>) => void;
  postMessage: (message: unknown) => void;
};

// Compiled once; run in each context so that `input` is that context's own object.
const PARSE = new Script("JSON.parse");

function format(args: unknown[]): string {
  return args.map((arg) => typeof arg === "string" ? arg : Deno.inspect(arg)).join(" ") + "\n";
}

async function run(job: Job): Promise<Record<string, unknown>> {
  const started = performance.now();
  let stdout = "";
  let stderr = "";
  let explicit: string | undefined;
  const out = (...args: unknown[]) => void (stdout += format(args));
  const err = (...args: unknown[]) => void (stderr += format(args));
  const sandbox: Record<string, unknown> = {
    console: { log: out, info: out, debug: out, error: err, warn: err },
    return_val: (value: unknown) => {
      explicit = typeof value === "string" ? value : JSON.stringify(value);
    },
  };
  const context = createContext(sandbox);
  let status = "success";
  let returned: string | undefined;
  try {
    const parse = PARSE.runInContext(context) as (text: string) => unknown;
    sandbox.input = job.input === undefined ? undefined : parse(job.input);
    const body = new Script(`(async function () {\n${job.code}\n})`, { filename: "main.js" })
      .runInContext(context) as () => Promise<unknown>;
    const value = await body();
    if (value !== undefined) returned = JSON.stringify(value) ?? String(value);
  } catch (error) {
    status = "error";
    stderr += `Uncaught ${Deno.inspect(error)}\n`;
  }
  return {
    id: job.id,
    status,
    stdout,
    stderr,
    explicit,
    returned,
    durationMs: performance.now() - started,
  };
}

scope.onmessage = (event) => {
  run(event.data).then((reply) => scope.postMessage(reply));
};
