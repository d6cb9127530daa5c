/**
 * The one place that decides how a syntax process is started: its OS wrappers (own process
 * group, lower priority, memory and descriptor limits) and its Deno flags (no permission, no
 * remote or npm modules, no config, a heap cap).
 *
 * @module
 */

import type { RunnerLaunch } from "./runner_command.ts";

/** A program, its arguments and the environment it needs on top of a clean one. */
export interface SyntaxCommand {
  /** Executable to start. */
  command: string;
  /** Its arguments. */
  args: string[];
  /** Environment the program needs. */
  env?: Record<string, string>;
}

/** What one syntax process needs to be started. */
export interface SyntaxCommandOptions {
  /**
   * `"deno"`: `deno run` on syntax_main.ts; `"self"`: the service's own executable re-run
   * with {@link SELF_SYNTAX_FLAG} (the only way a compiled binary can start one).
   */
  launch: RunnerLaunch;
  /** V8 heap cap of the process, in MiB. */
  heapMb: number;
  /** RLIMIT_DATA of the process in bytes, applied through `prlimit` with the other limits. */
  dataLimitBytes?: number;
}

/** The process entry module. */
export const SYNTAX_ENTRY = new URL("./syntax_main.ts", import.meta.url);

/** The service's entry module, which turns into a syntax process on {@link SELF_SYNTAX_FLAG}. */
const SERVICE_ENTRY = new URL("../../../main.ts", import.meta.url);

/** The argument that makes the service's entry point a syntax process. */
export const SELF_SYNTAX_FLAG = "--faas-runner=syntax";

/**
 * Niceness of syntax processes: below the service, which must stay responsive while one parses
 * hostile input, and above the runners (10), since a check is on the path of every run.
 */
const SYNTAX_NICENESS = 5;

/** Open file descriptors a syntax process may hold (it uses about 20). */
const SYNTAX_NOFILE = 64;

/**
 * CPU seconds a syntax process may use in its life. The service kills a check at its deadline,
 * but if the service itself is killed (SIGKILL) mid-check, an orphaned process would parse a
 * hostile input for as long as the input makes it (hours, for some); this ends it. A process
 * that reaches it in normal use (about a million small checks) dies and is replaced, and the
 * check it was on is checked again.
 */
const SYNTAX_CPU_SECONDS = 300;

/**
 * Builds the command line of a syntax process: `setsid` (a process group of its own, which the
 * service kills whole), `nice`, `prlimit` when a data limit is given (with CPU time, core and
 * descriptor limits), then the program.
 */
export function syntaxCommandLine(options: SyntaxCommandOptions): SyntaxCommand {
  const argv = ["setsid", "--", "nice", "-n", String(SYNTAX_NICENESS), "--"];
  if (options.dataLimitBytes !== undefined) {
    const data = options.dataLimitBytes;
    argv.push(
      "prlimit",
      `--data=${data}:${data}`,
      "--core=0:0",
      `--nofile=${SYNTAX_NOFILE}:${SYNTAX_NOFILE}`,
      `--cpu=${SYNTAX_CPU_SECONDS}:${SYNTAX_CPU_SECONDS}`,
      "--",
    );
  }
  const heap = `--max-old-space-size=${options.heapMb}`;
  if (options.launch === "self" && Deno.build.standalone) {
    // A compiled binary (Deno 2.9) reads V8 flags only from its compile-time `--v8-flags`:
    // there the data limit is what bounds the process's memory.
    argv.push(Deno.execPath(), SELF_SYNTAX_FLAG);
    return { command: argv[0], args: argv.slice(1), env: { DENO_V8_FLAGS: heap } };
  }
  argv.push(
    Deno.execPath(),
    "run",
    // Only the self launch has permissions to give up (a compiled binary has them baked in;
    // under `deno run` it gets them the same way, so tests exercise that path).
    ...(options.launch === "self" ? ["--allow-all"] : []),
    "--no-config",
    "--no-lock",
    "--no-remote",
    "--no-npm",
    "--no-prompt",
    "--quiet",
    `--import-map=${importMap()}`,
    `--v8-flags=${heap}`,
    ...(options.launch === "self" ? [SERVICE_ENTRY.pathname, SELF_SYNTAX_FLAG] : [
      SYNTAX_ENTRY.pathname,
    ]),
  );
  return { command: argv[0], args: argv.slice(1) };
}

/**
 * An import map (a data: URL) that points the parsers' bare specifiers at the files the service
 * itself resolved them to, so the process loads them with `--no-npm` and `--no-config`: amaro is
 * one CommonJS file with its wasm inlined, acorn one ES module, neither imports anything else.
 */
function importMap(): string {
  const imports = {
    amaro: import.meta.resolve("amaro"),
    acorn: import.meta.resolve("acorn"),
  };
  return `data:application/json,${encodeURIComponent(JSON.stringify({ imports }))}`;
}
