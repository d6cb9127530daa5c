/**
 * Entry point: configuration → runtimes → app → HTTP server. On SIGTERM or SIGINT the service
 * drains (health 503, new runs refused, in-flight and queued runs finish within
 * `FAAS_DRAIN_TIMEOUT`), stops every sandbox process and exits 0.
 *
 * Started as `main.ts --faas-runner=javascript <socket> [...]` (or a compiled binary with
 * those arguments) it is a JS runner process instead: the service starts its own runners this
 * way when `FAAS_RUNNER_MODE` is `self`, the default of a compiled binary. Started as
 * `main.ts --faas-runner=syntax` it is a syntax process (it parses and type-strips JS/TS for
 * the service), which a compiled binary starts the same way. Every import is dynamic so that
 * a runner loads only the runner's modules, never the service's.
 *
 * @module
 */

import type { RuntimeRegistration } from "./src/runtimes.ts";
import type { Service } from "./src/service.ts";

/** The argument that turns this entry point into a runner process. */
export const RUNNER_FLAG = "--faas-runner=";

/** How {@link main} builds the service. */
export interface MainOptions {
  /** Runtime factories; defaults to the ones this build ships. */
  registrations?: readonly RuntimeRegistration[];
}

/**
 * Runs the service until a signal stops it. A bad setting or a runtime that cannot start
 * ends the process with exit code 1 and one line on stderr saying why.
 */
export async function main(options: MainOptions = {}): Promise<void> {
  const [{ loadConfig }, { DEFAULT_REGISTRATIONS }, { startService }, { errorMessage }] =
    await Promise.all([
      import("./src/config.ts"),
      import("./src/runtimes.ts"),
      import("./src/service.ts"),
      import("./src/errors.ts"),
    ]);
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    fail(errorMessage(error));
  }
  // Listen before starting: a signal during startup must still stop the sandboxes the
  // runtimes have already started, instead of killing this process under them.
  let service: Service | undefined;
  const stopRequested = new AbortController();
  const stop = async () => {
    if (stopRequested.signal.aborted) return;
    stopRequested.abort();
    if (service) await shutdownAndExit(service, errorMessage);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  try {
    service = await startService(config, {
      registrations: options.registrations ?? DEFAULT_REGISTRATIONS,
      signal: stopRequested.signal,
    });
  } catch (error) {
    // Stopped while starting: the runtimes are already shut down.
    if (stopRequested.signal.aborted) Deno.exit(0);
    fail(`cannot start: ${errorMessage(error)}`);
  }
  if (stopRequested.signal.aborted) await shutdownAndExit(service, errorMessage);
}

/** Shuts the service down and exits: 0, or 1 with one line on stderr when the shutdown failed. */
async function shutdownAndExit(
  service: Service,
  errorMessage: (error: unknown) => string,
): Promise<never> {
  try {
    await service.shutdown();
  } catch (error) {
    fail(`shutdown failed: ${errorMessage(error)}`);
  }
  Deno.exit(0);
}

/**
 * Runs the runner named by `--faas-runner=<kind>` (the first argument) with the remaining
 * arguments: `javascript`, a JS runner (Python runs in python3), or `syntax`, the process that
 * parses and type-strips JS/TS for the service.
 */
export async function runnerMain(args: readonly string[]): Promise<void> {
  const kind = args[0].slice(RUNNER_FLAG.length);
  if (kind === "syntax") {
    const syntax = await import("./src/sandbox/javascript/syntax_main.ts");
    await syntax.main();
    return;
  }
  if (kind !== "javascript") {
    console.error(
      `faas-sandbox: expected ${RUNNER_FLAG}javascript or ${RUNNER_FLAG}syntax, got "${args[0]}"`,
    );
    Deno.exit(2);
  }
  const runner = await import("./src/sandbox/javascript/runner.ts");
  await runner.main(args.slice(1), { narrow: true });
}

/** Ends the process with exit code 1 and `message` as one line on stderr. */
function fail(message: string): never {
  console.error(`faas-sandbox: ${message.replace(/\s*\n\s*/g, " ")}`);
  Deno.exit(1);
}

if (import.meta.main) {
  if (Deno.args[0]?.startsWith(RUNNER_FLAG)) await runnerMain(Deno.args);
  else await main();
}
