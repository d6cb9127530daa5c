/**
 * The service with Python modules preloaded, for the benchmark's numpy figure: main.ts, with
 * `FAAS_PYTHON_PRELOAD` (a comma list of module names) given to the Python runtime's
 * `preload` option. Where the service's configuration reads that variable itself, this is
 * main.ts as it is; where it does not yet, this hands the list to the runtime directly.
 *
 * Usage: `FAAS_PYTHON_PRELOAD=numpy deno run --allow-all bench/preload_main.ts`
 *
 * @module
 */

import { main } from "../main.ts";
import { CONFIG_VARIABLES } from "../src/config.ts";
import { DEFAULT_REGISTRATIONS, type RuntimeRegistration } from "../src/runtimes.ts";
import { createPythonRuntime } from "../src/sandbox/python/mod.ts";

/** The modules named by `FAAS_PYTHON_PRELOAD`, trimmed, empty names dropped. */
export function preloadList(value: string | undefined): string[] {
  return (value ?? "").split(",").map((name) => name.trim()).filter((name) => name !== "");
}

/**
 * The service's registrations with `preload` given to the Python runtime; unchanged when the
 * configuration already reads `FAAS_PYTHON_PRELOAD` or the list is empty.
 */
export function preloadRegistrations(preload: readonly string[]): readonly RuntimeRegistration[] {
  if (CONFIG_VARIABLES.includes("FAAS_PYTHON_PRELOAD") || preload.length === 0) {
    return DEFAULT_REGISTRATIONS;
  }
  return DEFAULT_REGISTRATIONS.map((registration) =>
    registration.languages.includes("python")
      ? {
        languages: registration.languages,
        create: (settings) =>
          createPythonRuntime(settings, { python: settings.pythonPath, preload }),
      }
      : registration
  );
}

if (import.meta.main) {
  await main({
    registrations: preloadRegistrations(preloadList(Deno.env.get("FAAS_PYTHON_PRELOAD"))),
  });
}
