/**
 * The service's configuration: every `FAAS_*` environment variable, parsed and bounded with
 * zod. A bad value is reported as one line that names the variable and what is allowed.
 *
 * @module
 */

import { z } from "zod";
import { type Language, LANGUAGES, type RuntimeSettings } from "./runtime.ts";
import { canonicalLanguage } from "./languages.ts";
import { OUTPUT_POLICIES, type OutputPolicy } from "./output.ts";

/** The parsed configuration of the service. */
export interface Config {
  /** TCP port to listen on (`FAAS_PORT`); 0 picks a free port. */
  port: number;
  /** Address to listen on (`FAAS_HOST`). */
  host: string;
  /** Fresh sandboxes booted ahead of demand, per runtime (`FAAS_POOL_SIZE`). */
  poolSize: number;
  /** Most runs at once (`FAAS_MAX_INSTANCES`). */
  maxInstances: number;
  /** Default run timeout in ms (`FAAS_TIMEOUT`). */
  timeoutMs: number;
  /** Largest timeout a request may ask for, in ms (`FAAS_MAX_TIMEOUT`). */
  maxTimeoutMs: number;
  /** Memory budget of one sandbox in MiB (`FAAS_MEMORY_LIMIT_MB`). */
  memoryLimitMb: number;
  /** Cap on stdout and on stderr of one run, in bytes (`FAAS_MAX_OUTPUT_BYTES`). */
  maxOutputBytes: number;
  /**
   * Past the output cap: `truncate` keeps the head and tail of the stream and lets the run go on;
   * `stop` ends the run as `output_limit` (`FAAS_OUTPUT_POLICY`).
   */
  outputPolicy: OutputPolicy;
  /** Largest `code` accepted, in UTF-8 bytes (`FAAS_MAX_CODE_BYTES`). */
  maxCodeBytes: number;
  /** Most syntax checks at once (`FAAS_MAX_VALIDATIONS`); default: the number of CPU cores. */
  maxValidations: number;
  /** Most runs waiting for a free slot before new ones get 503 (`FAAS_QUEUE_LIMIT`). */
  queueLimit: number;
  /** How long a shutdown waits for in-flight and queued runs, in ms (`FAAS_DRAIN_TIMEOUT`). */
  drainTimeoutMs: number;
  /** API key required on every route but /health, /docs and /openapi.json (`FAAS_API_KEY`). */
  apiKey: string | undefined;
  /**
   * Key of the tenant's hash in traces (`FAAS_TENANT_HASH_KEY`); `undefined` makes a random one
   * per process.
   */
  tenantHashKey: string | undefined;
  /** Languages served (`FAAS_LANGUAGES`). */
  languages: Language[];
  /** Python executable (`FAAS_PYTHON`). */
  pythonPath: string;
  /** Python modules imported ahead of runs (`FAAS_PYTHON_PRELOAD`). */
  pythonPreload: string[];
  /** Isolation layers that must be active at start (`FAAS_REQUIRE_ISOLATION`). */
  requireIsolation: string[];
  /** Verbose logs, including code and output (`FAAS_DEBUG`). */
  debug: boolean;
  /**
   * How JS runner processes are started (`FAAS_RUNNER_MODE`): `self` re-executes this
   * executable in runner mode, `deno` runs the runner module with `deno run`. `auto` (the
   * default) is `self` in a compiled binary, `deno` otherwise.
   */
  runnerMode: "self" | "deno";
  /**
   * Most HTTP connections open at once (`FAAS_MAX_CONNECTIONS`); `undefined` sizes it from the
   * process's open-file limit at start.
   */
  maxConnections: number | undefined;
  /**
   * How long a connection may go without a request under way, in ms: from its opening (so a
   * request head must be complete by then), and between requests on a kept-alive connection
   * (`FAAS_IDLE_TIMEOUT`). Also how long a request body may stall between two chunks.
   */
  idleTimeoutMs: number;
}

/** A configuration value that is not allowed; the message is one line naming the variable. */
export class ConfigError extends Error {
  /** The environment variable at fault. */
  readonly variable: string;

  /** Creates the error for `variable` with a message saying what is allowed. */
  constructor(variable: string, message: string) {
    super(message);
    this.name = "ConfigError";
    this.variable = variable;
  }
}

const MIB = 1024 * 1024;

/** CPU cores of this host: the default number of syntax checks at once. */
const CORES = Math.max(1, navigator.hardwareConcurrency || 1);

/** An integer from `min` to `max`, `fallback` when unset or empty. */
function integer(min: number, max: number, fallback: number) {
  return z.string().trim().optional().transform((text, ctx) =>
    text === undefined || text === "" ? fallback : parseInteger(text, { min, max, ctx })
  );
}

/** An integer from `min` to `max`, `undefined` when unset or empty. */
function optionalInteger(min: number, max: number) {
  return z.string().trim().optional().transform((text, ctx) =>
    text === undefined || text === "" ? undefined : parseInteger(text, { min, max, ctx })
  );
}

function parseInteger(
  text: string,
  options: { min: number; max: number; ctx: z.RefinementCtx },
): number {
  const { min, max, ctx } = options;
  const value = Number(text);
  if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max) {
    ctx.addIssue({
      code: "custom",
      message: `expected an integer from ${min} to ${max}, got "${text}"`,
    });
    return z.NEVER;
  }
  return value;
}

function text(fallback: string) {
  return z.string().optional().transform((value) => {
    const trimmed = value?.trim();
    return trimmed ? trimmed : fallback;
  });
}

const BOOLEANS: Record<string, boolean> = {
  "": false,
  "0": false,
  "false": false,
  "no": false,
  "off": false,
  "1": true,
  "true": true,
  "yes": true,
  "on": true,
};

const boolean = z.string().optional().transform((value, ctx) => {
  const key = (value ?? "").trim().toLowerCase();
  if (key in BOOLEANS) return BOOLEANS[key];
  ctx.addIssue({
    code: "custom",
    message: `expected one of true, false, 1, 0, yes, no, on, off, got "${value}"`,
  });
  return z.NEVER;
});

function list(value: string | undefined): string[] {
  return (value ?? "").split(",").map((item) => item.trim()).filter((item) => item !== "");
}

const languages = z.string().optional().transform((value, ctx) => {
  const names = list(value ?? LANGUAGES.join(","));
  const result: Language[] = [];
  for (const name of names) {
    const language = canonicalLanguage(name);
    if (!language) {
      ctx.addIssue({
        code: "custom",
        message: `expected a comma-separated list of ${LANGUAGES.join(", ")}, got "${name}"`,
      });
      return z.NEVER;
    }
    if (!result.includes(language)) result.push(language);
  }
  if (result.length === 0) {
    ctx.addIssue({
      code: "custom",
      message: `expected at least one of ${LANGUAGES.join(", ")}`,
    });
    return z.NEVER;
  }
  return result;
});

/**
 * A comma-separated list of names that each match `pattern`, without duplicates; `what` names
 * them in the message, e.g. "isolation layer names (e.g. uid,netns)".
 */
function names(pattern: RegExp, what: string) {
  return z.string().optional().transform((value, ctx) => {
    const items = list(value);
    const bad = items.find((item) => !pattern.test(item));
    if (bad !== undefined) {
      ctx.addIssue({
        code: "custom",
        message: `expected a comma-separated list of ${what}, got "${bad}"`,
      });
      return z.NEVER;
    }
    return [...new Set(items)];
  });
}

const isolation = names(/^[a-z][a-z0-9_-]*$/, "isolation layer names (e.g. uid,netns)");

/** Dotted Python module names, e.g. `numpy` or `os.path`. */
const modules = names(
  /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/,
  "Python module names (e.g. json,numpy)",
);

/** One of `choices`, in any case; the first one when unset or empty. */
function choice<const T extends readonly [string, ...string[]]>(choices: T) {
  return z.string().optional().transform((value, ctx): T[number] => {
    const picked = (value ?? "").trim().toLowerCase() || choices[0];
    if (choices.includes(picked)) return picked;
    ctx.addIssue({
      code: "custom",
      message: `expected one of ${choices.join(", ")}, got "${value}"`,
    });
    return z.NEVER;
  });
}

const runnerMode = choice(["auto", "self", "deno"]).transform((mode) =>
  mode === "auto" ? (Deno.build.standalone ? "self" : "deno") : mode
);

const ENV_SCHEMA = z.object({
  FAAS_PORT: integer(0, 65_535, 8000),
  FAAS_HOST: text("0.0.0.0"),
  FAAS_POOL_SIZE: integer(0, 1_000, 10),
  FAAS_MAX_INSTANCES: integer(1, 10_000, 50),
  FAAS_TIMEOUT: integer(1, 3_600_000, 30_000),
  FAAS_MAX_TIMEOUT: integer(1, 3_600_000, 60_000),
  FAAS_MEMORY_LIMIT_MB: integer(16, 65_536, 256),
  FAAS_MAX_OUTPUT_BYTES: integer(1_024, 256 * MIB, MIB),
  FAAS_OUTPUT_POLICY: choice(OUTPUT_POLICIES),
  FAAS_MAX_CODE_BYTES: integer(1, 64 * MIB, 16 * MIB),
  FAAS_MAX_VALIDATIONS: integer(1, 1_000, CORES),
  FAAS_QUEUE_LIMIT: integer(0, 1_000_000, 1_000),
  FAAS_DRAIN_TIMEOUT: integer(0, 3_600_000, 30_000),
  FAAS_API_KEY: z.string().optional().transform((value) => value?.trim() || undefined),
  FAAS_TENANT_HASH_KEY: z.string().optional().transform((value) => value?.trim() || undefined),
  FAAS_LANGUAGES: languages,
  FAAS_PYTHON: text("python3"),
  FAAS_PYTHON_PRELOAD: modules,
  FAAS_REQUIRE_ISOLATION: isolation,
  FAAS_DEBUG: boolean,
  FAAS_RUNNER_MODE: runnerMode,
  FAAS_MAX_CONNECTIONS: optionalInteger(1, 1_000_000),
  FAAS_IDLE_TIMEOUT: integer(100, 3_600_000, 30_000),
});

/** Names of every environment variable the service reads. */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(ENV_SCHEMA.shape);

/**
 * Parses the configuration from an environment map.
 *
 * @throws {ConfigError} naming the first variable whose value is not allowed.
 */
export function parseConfig(env: Record<string, string | undefined>): Config {
  const picked: Record<string, string | undefined> = {};
  for (const name of CONFIG_VARIABLES) picked[name] = env[name];
  const parsed = ENV_SCHEMA.safeParse(picked);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const variable = String(issue.path[0] ?? "environment");
    throw new ConfigError(variable, `invalid ${variable}: ${issue.message}`);
  }
  const e = parsed.data;
  if (e.FAAS_TIMEOUT > e.FAAS_MAX_TIMEOUT) {
    throw new ConfigError(
      "FAAS_TIMEOUT",
      `invalid FAAS_TIMEOUT: expected at most FAAS_MAX_TIMEOUT (${e.FAAS_MAX_TIMEOUT}), got ${e.FAAS_TIMEOUT}`,
    );
  }
  return {
    port: e.FAAS_PORT,
    host: e.FAAS_HOST,
    poolSize: e.FAAS_POOL_SIZE,
    maxInstances: e.FAAS_MAX_INSTANCES,
    timeoutMs: e.FAAS_TIMEOUT,
    maxTimeoutMs: e.FAAS_MAX_TIMEOUT,
    memoryLimitMb: e.FAAS_MEMORY_LIMIT_MB,
    maxOutputBytes: e.FAAS_MAX_OUTPUT_BYTES,
    outputPolicy: e.FAAS_OUTPUT_POLICY,
    maxCodeBytes: e.FAAS_MAX_CODE_BYTES,
    maxValidations: e.FAAS_MAX_VALIDATIONS,
    queueLimit: e.FAAS_QUEUE_LIMIT,
    drainTimeoutMs: e.FAAS_DRAIN_TIMEOUT,
    apiKey: e.FAAS_API_KEY,
    tenantHashKey: e.FAAS_TENANT_HASH_KEY,
    languages: e.FAAS_LANGUAGES,
    pythonPath: e.FAAS_PYTHON,
    pythonPreload: e.FAAS_PYTHON_PRELOAD,
    requireIsolation: e.FAAS_REQUIRE_ISOLATION,
    debug: e.FAAS_DEBUG,
    runnerMode: e.FAAS_RUNNER_MODE,
    maxConnections: e.FAAS_MAX_CONNECTIONS,
    idleTimeoutMs: e.FAAS_IDLE_TIMEOUT,
  };
}

/** Reads the configuration from the process environment. */
export function loadConfig(): Config {
  return parseConfig(Deno.env.toObject());
}

/**
 * Largest request body accepted: the code cap twice (a quote, a backslash or a line break in
 * the code takes two bytes in JSON, so even code full of them fits), plus 1 MiB for `input` and
 * the other fields: 33 MiB with the default 16 MiB code cap.
 */
export function bodyLimitBytes(config: Pick<Config, "maxCodeBytes">): number {
  return config.maxCodeBytes * 2 + MIB;
}

/** The language-neutral settings every runtime factory receives, taken from the configuration. */
export function runtimeSettings(
  config: Config,
  options: Pick<RuntimeSettings, "onSandboxBoot"> = {},
): RuntimeSettings {
  return {
    poolSize: config.poolSize,
    maxInstances: config.maxInstances,
    memoryLimitMb: config.memoryLimitMb,
    maxOutputBytes: config.maxOutputBytes,
    outputPolicy: config.outputPolicy,
    requireIsolation: config.requireIsolation,
    debug: config.debug,
    onSandboxBoot: options.onSandboxBoot,
  };
}
