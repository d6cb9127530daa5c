/**
 * How the Python fork server is started: the one place that builds its command line, so a
 * compiled binary can change how the interpreter and the program are found in one spot.
 *
 * @module
 */

/** Settings the fork server reads from its first argument (JSON). */
export interface ForkServerConfig {
  /** RLIMIT_AS of each runner, in MiB. */
  memory_limit_mb: number;
  /** Cap on stdout and on stderr of one run, in bytes. */
  max_output_bytes: number;
  /** Runners alive at once; each gets its own uid when the server runs as root. */
  max_slots: number;
  /** First uid of the runners' uid range. */
  uid_base: number;
  /** RLIMIT_FSIZE of each runner, in bytes. */
  file_size_limit_bytes: number;
  /** RLIMIT_NPROC of each runner's uid (processes and threads). */
  max_processes: number;
  /** RLIMIT_NOFILE of each runner. */
  max_open_files: number;
  /** Directory under which the per-run temp dirs are made. */
  tmp_root: string;
  /** Isolation layers to leave off, to exercise the fallbacks. */
  layers_off: string[];
}

/** A ready-to-spawn command: executable, arguments and options. */
export interface ForkServerCommand {
  /** The executable to run. */
  command: string;
  /** Options for `new Deno.Command(command, options)`. */
  options: Deno.CommandOptions;
}

/**
 * Builds the fork server's command: `python -I -c <program> <config>` with a cleared
 * environment, piped stdin/stdout as the protocol channel, in its own process group.
 * `-I` (not `-S`) keeps site-packages importable for user code.
 */
export function forkServerCommand(
  python: string,
  program: string,
  options: { config: ForkServerConfig },
): ForkServerCommand {
  return {
    command: python,
    options: {
      args: ["-I", "-c", program, JSON.stringify(options.config)],
      clearEnv: true,
      env: {},
      cwd: "/",
      detached: true,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    },
  };
}

/** Reads the fork server's Python source, shipped beside this module (also when compiled). */
export function readForkServerProgram(): Promise<string> {
  return Deno.readTextFile(new URL("./fork_server.py", import.meta.url));
}

/**
 * Resolves the configured python (a name on PATH, a shim, or a path) to the real interpreter
 * and checks it runs; rejects with a message naming the executable when it does not.
 */
export async function resolvePython(pythonPath: string): Promise<string> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(pythonPath, {
      args: ["-I", "-c", "import sys; print(sys.executable); print(sys.version_info >= (3, 9))"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`expected a python executable at "${pythonPath}": ${reason}`);
  }
  const lines = new TextDecoder().decode(output.stdout).trim().split("\n");
  if (!output.success || lines.length < 2) {
    const stderr = new TextDecoder().decode(output.stderr).trim();
    throw new Error(`expected "${pythonPath}" to run python, it failed: ${stderr}`);
  }
  if (lines[1] !== "True") throw new Error(`expected python >= 3.9 at "${pythonPath}"`);
  return lines[0] || pythonPath;
}
