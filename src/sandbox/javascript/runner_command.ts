/**
 * The one place that decides how a JS runner process is started: which OS wrappers confine
 * it (rlimit, network namespace, unprivileged uid) and which Deno flags it gets.
 *
 * @module
 */

/** OS confinement layers that wrap the runner, as probed on this host. */
export interface RunnerLayers {
  /** Start through `prlimit` with an RLIMIT_DATA cap (bounds heap and ArrayBuffers). */
  rlimit: boolean;
  /** Start through `unshare --net` (a network namespace with nothing in it). */
  netns: boolean;
  /** Drop to an unprivileged uid/gid with `setpriv` (only meaningful as root). */
  uid: boolean;
}

/** What one runner process needs to be started. */
export interface RunnerCommandOptions {
  /** The unix socket the runner connects to; its only permission. */
  socketPath: string;
  /** V8 heap budget of each isolate in the runner, in MiB. */
  memoryLimitMb: number;
  /** RLIMIT_DATA of the runner, in bytes. */
  dataLimitBytes: number;
  /** Uid and gid to run as when {@link RunnerLayers.uid} is active. */
  uid: number;
  /** Layers to apply. */
  layers: RunnerLayers;
  /**
   * Run user code on the runner's own thread (permissions revoked after connecting) instead
   * of a no-permission worker: about half the boot CPU, one isolation layer fewer.
   */
  inline?: boolean;
  /**
   * How the runner program is started: `"deno"` (default), `deno run` on runner.ts with
   * narrow permissions; or `"self"`, the service's own executable re-run in runner mode
   * (see {@link selfRunnerArgv}), which is the only way a compiled binary can start one.
   */
  launch?: RunnerLaunch;
}

/** How a runner process is started (see {@link RunnerCommandOptions.launch}). */
export type RunnerLaunch = "deno" | "self";

/** A program and its arguments. */
export interface CommandLine {
  /** Executable to start. */
  command: string;
  /** Its arguments. */
  args: string[];
  /** Environment the program needs on top of the runner's own. */
  env?: Record<string, string>;
}

/** Open file descriptors a runner may hold (it needs a few dozen). */
const RUNNER_NOFILE = 256;
/**
 * Threads a runner's uid may run: Deno uses about 6-10 on 2 cores (V8 adds one per core), so
 * this leaves room on big hosts while a thread-spawning loop still stops early.
 */
const RUNNER_NPROC = 48 + 2 * (navigator.hardwareConcurrency ?? 1);

/** The worker boot module, which the runner must be able to read to start its worker. */
export const WORKER_ENTRY = new URL("./worker.ts", import.meta.url);

/** The sandbox realm module, imported by the worker (or by the runner in inline mode). */
export const REALM_MODULE = new URL("./realm.ts", import.meta.url);

/**
 * Modules the runner loads after start (the worker's module graph, or the realm in inline
 * mode): the only files it may read. Runner and worker code, not user code, reads them.
 */
export const RUNNER_READABLE = [
  WORKER_ENTRY.pathname,
  REALM_MODULE.pathname,
  new URL("./protocol.ts", import.meta.url).pathname,
];

/** Absolute path of the runner entry module. */
export const RUNNER_ENTRY = new URL("./runner.ts", import.meta.url);

/** Niceness of runner processes: below the service, like the Python runs. */
const RUNNER_NICENESS = 10;

/**
 * Builds the runner's command line: wrappers first, then `deno run` with no permission but
 * access to its own socket, no prompts, no remote or npm modules, and a heap cap.
 */
export function runnerCommandLine(options: RunnerCommandOptions): CommandLine {
  const { socketPath, memoryLimitMb, dataLimitBytes, uid, layers } = options;
  // A process group of its own, so the host can kill the runner with everything it started.
  // `setsid` does it after the spawn: a `detached` spawn forks the service instead of a
  // vfork-like spawn, and every page the service writes afterwards takes a copy-on-write
  // fault (measured: 50 ms of the service's CPU per spawn with 100 MiB of heap written).
  const argv: string[] = ["setsid", "--"];
  // User code yields the CPU to the service (and to the Python fork server) that must answer
  // and stop it: busy runners can then never delay a timeout or an answer.
  argv.push("nice", "-n", String(RUNNER_NICENESS), "--");
  if (layers.rlimit) {
    argv.push(
      "prlimit",
      `--data=${dataLimitBytes}:${dataLimitBytes}`,
      // No core files from V8's aborts; a small descriptor budget.
      "--core=0:0",
      `--nofile=${RUNNER_NOFILE}:${RUNNER_NOFILE}`,
    );
    // RLIMIT_NPROC counts threads per uid system-wide: only safe with a uid of its own.
    if (layers.uid) argv.push(`--nproc=${RUNNER_NPROC}:${RUNNER_NPROC}`);
    argv.push("--");
  }
  if (layers.netns) argv.push("unshare", "--net", "--");
  if (layers.uid) {
    argv.push(
      "setpriv",
      `--reuid=${uid}`,
      `--regid=${uid}`,
      "--clear-groups",
      "--no-new-privs",
      "--inh-caps=-all",
      "--bounding-set=-all",
      "--",
    );
  }
  if (options.launch === "self") return selfRunnerCommand(argv, options);
  argv.push(
    Deno.execPath(),
    "run",
    "--no-config",
    "--no-lock",
    "--no-prompt",
    "--no-remote",
    "--no-npm",
    "--quiet",
    "--unstable-worker-options",
    `--v8-flags=--max-old-space-size=${memoryLimitMb}`,
    `--allow-net=unix:${socketPath}`,
    `--allow-read=${[socketPath, ...RUNNER_READABLE].join(",")}`,
    `--allow-write=${socketPath}`,
    RUNNER_ENTRY.pathname,
    socketPath,
  );
  if (options.inline) argv.push("--inline");
  return { command: argv[0], args: argv.slice(1) };
}

/** The service's entry module, which turns into a runner on {@link SELF_RUNNER_FLAG}. */
export const SERVICE_ENTRY = new URL("../../../main.ts", import.meta.url);

/** The argument that makes the service's entry point a JS runner. */
export const SELF_RUNNER_FLAG = "--faas-runner=javascript";

/**
 * The program part of a self-launched runner. A compiled binary starts itself with the
 * runner flag: its permissions (`--allow-all`) and unstable features are baked in, so the
 * runner narrows its permissions itself. Under `deno run` the same happens with the flags the
 * binary is compiled with (deno.json `compile` task), so tests exercise that path; nothing
 * remote is loadable in either.
 */
export function selfRunnerArgv(
  options: Pick<RunnerCommandOptions, "socketPath" | "inline">,
): string[] {
  const argv = [Deno.execPath()];
  if (!Deno.build.standalone) {
    argv.push(
      "run",
      "--allow-all",
      "--no-prompt",
      "--unstable-worker-options",
      "--no-config",
      "--no-lock",
      "--no-remote",
      "--no-npm",
      "--quiet",
      SERVICE_ENTRY.pathname,
    );
  }
  argv.push(SELF_RUNNER_FLAG, options.socketPath);
  if (options.inline) argv.push("--inline");
  return argv;
}

/**
 * Completes `wrappers` with a self-launched runner. Its heap cap goes in DENO_V8_FLAGS, which
 * `deno run` honours; a compiled binary (Deno 2.9) reads V8 flags only from its compile-time
 * `--v8-flags`, so there the rlimit layer is what bounds a runner's memory.
 */
function selfRunnerCommand(wrappers: string[], options: RunnerCommandOptions): CommandLine {
  const argv = [...wrappers, ...selfRunnerArgv(options)];
  return {
    command: argv[0],
    args: argv.slice(1),
    env: { DENO_V8_FLAGS: `--max-old-space-size=${options.memoryLimitMb}` },
  };
}
