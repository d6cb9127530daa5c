/**
 * Shared setup of the Python runtime tests.
 *
 * @module
 */

import type { RunJob, RuntimeSettings } from "../src/runtime.ts";

/** Python used by the tests: FAAS_PYTHON when set, else python3 on PATH. */
export const PYTHON = Deno.env.get("FAAS_PYTHON") ?? "python3";

/** Settings for a small runtime under test. */
export function testSettings(overrides: Partial<RuntimeSettings> = {}): RuntimeSettings {
  return {
    poolSize: 2,
    maxInstances: 8,
    memoryLimitMb: 256,
    maxOutputBytes: 64 * 1024,
    pythonPath: PYTHON,
    requireIsolation: [],
    debug: false,
    ...overrides,
  };
}

let counter = 0;

/** A job running `code` with a 5 s timeout unless told otherwise. */
export function job(code: string, extra: Partial<RunJob> = {}): RunJob {
  return { taskId: `t${++counter}`, language: "python", code, timeoutMs: 5_000, ...extra };
}
