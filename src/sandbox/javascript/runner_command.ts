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
}

/** A program and its arguments. */
export interface CommandLine {
  /** Executable to start. */
  command: string;
  /** Its arguments. */
  args: string[];
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
  // User code yields the CPU to the service (and to the Python fork server) that must answer
  // and stop it: busy runners can then never delay a timeout or an answer.
  const argv: string[] = ["nice", "-n", String(RUNNER_NICENESS), "--"];
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
