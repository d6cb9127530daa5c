/**
 * The one place that decides how a JS runner program is started in its jail: which executable,
 * which Deno flags, which files it may read. Its OS layers are the jail's (../jail/mod.ts).
 *
 * @module
 */

/** How a runner process is started: `deno run` on runner.ts, or the service's own executable. */
export type RunnerLaunch = "deno" | "self";

/** The runner's modules: what the runner may read, and the only files a worker is built from. */
export const RUNNER_MODULES: readonly URL[] = [
  "runner.ts",
  "protocol.ts",
  "output_channel.ts",
  "fresh_worker.ts",
  "context_worker.ts",
  "lockdown.ts",
  "evaluators.ts",
  "harden.ts",
  "run_scope.ts",
].map((name) => new URL(`./${name}`, import.meta.url));

/** The service's entry module, which turns into a runner on {@link SELF_RUNNER_FLAG}. */
export const SERVICE_ENTRY = new URL("../../../main.ts", import.meta.url);

/** The argument that makes the service's entry point a JS runner. */
export const SELF_RUNNER_FLAG = "--faas-runner=javascript";

/** What one runner needs to be started. */
export interface RunnerCommandOptions {
  /** How it is started. */
  launch: RunnerLaunch;
  /** Dir holding the copies of {@link RUNNER_MODULES} (`deno` launch). */
  modulesDir: string;
  /** The host's socket, as the runner sees it. */
  socketPath: string;
  /** The runner's token: its first line on the socket. */
  token: string;
  /** V8 heap budget of each isolate in the runner, in MiB. */
  memoryLimitMb: number;
  /** The Deno cache the runner reads its compiled modules from. */
  denoDir: string;
  /** The executable as the runner's jail shows it (default: this one's path). */
  executable?: string;
  /** The service's entry module as the runner's jail shows it (`self` launch under `deno run`). */
  entry?: string;
}

/** A program, its arguments and its whole environment. */
export interface CommandLine {
  /** Program and arguments. */
  argv: string[];
  /** The environment (nothing of the service's). */
  env: Record<string, string>;
}

/**
 * The runner's command line: no permission but reading its modules and its socket, no
 * prompts, no remote or npm modules, and a heap cap per isolate.
 */
export function runnerCommandLine(options: RunnerCommandOptions): CommandLine {
  const { socketPath, token, memoryLimitMb } = options;
  const env = { DENO_DIR: options.denoDir, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" };
  if (options.launch === "self") {
    // A compiled binary has its permissions baked in (all): the runner narrows them itself.
    // It reads V8 flags only from DENO_V8_FLAGS under `deno run`; compiled, the cgroup and
    // the rlimits bound its memory.
    return {
      argv: [
        ...selfRunnerArgv(options.executable, options.entry),
        SELF_RUNNER_FLAG,
        socketPath,
        token,
      ],
      env: { ...env, DENO_V8_FLAGS: `--max-old-space-size=${memoryLimitMb}` },
    };
  }
  return {
    argv: [
      options.executable ?? Deno.execPath(),
      "run",
      "--no-config",
      "--no-lock",
      "--no-prompt",
      "--no-remote",
      "--no-npm",
      "--quiet",
      "--unstable-worker-options",
      `--v8-flags=--max-old-space-size=${memoryLimitMb}`,
      `--allow-read=${options.modulesDir},${socketPath}`,
      `--allow-write=${socketPath}`,
      `--allow-net=unix:${socketPath}`,
      `${options.modulesDir}/runner.ts`,
      socketPath,
      token,
    ],
    env,
  };
}

/** The program part of a self-started runner (see {@link SELF_RUNNER_FLAG}). */
export function selfRunnerArgv(
  executable: string = Deno.execPath(),
  entry: string = SERVICE_ENTRY.pathname,
): string[] {
  if (Deno.build.standalone) return [executable];
  return [
    executable,
    "run",
    "--allow-all",
    "--no-prompt",
    "--unstable-worker-options",
    "--no-config",
    "--no-lock",
    "--no-remote",
    "--no-npm",
    "--quiet",
    entry,
  ];
}
