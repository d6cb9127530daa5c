/**
 * Entry point: configuration → runtimes → app → HTTP server. On SIGTERM or SIGINT the service
 * drains (health 503, new runs refused, in-flight and queued runs finish within
 * `FAAS_DRAIN_TIMEOUT`), stops every sandbox process and exits 0.
 *
 * @module
 */

import { loadConfig } from "./src/config.ts";
import { DEFAULT_REGISTRATIONS, type RuntimeRegistration } from "./src/runtimes.ts";
import { type Service, startService } from "./src/service.ts";

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
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    fail(error);
  }
  // Listen before starting: a signal during startup must still stop the sandboxes the
  // runtimes have already started, instead of killing this process under them.
  let service: Service | undefined;
  const stopRequested = new AbortController();
  const stop = async () => {
    if (stopRequested.signal.aborted) return;
    stopRequested.abort();
    if (service) {
      await service.shutdown();
      Deno.exit(0);
    }
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
    fail(error, "cannot start: ");
  }
  if (stopRequested.signal.aborted) {
    await service.shutdown();
    Deno.exit(0);
  }
}

function fail(error: unknown, prefix = ""): never {
  const message = error instanceof Error ? error.message : String(error);
  console.error(`faas-sandbox: ${prefix}${message.replace(/\s*\n\s*/g, " ")}`);
  Deno.exit(1);
}

if (import.meta.main) await main();
