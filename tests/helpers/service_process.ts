/**
 * Runs the service as a real child process (through tests/helpers/serve_entry.ts or
 * main.ts) and follows its stdout and stderr line by line.
 *
 * @module
 */

const ROOT = new URL("../../", import.meta.url);

/** A line-by-line view of a stream, with waiting for a line that matches. */
export class Lines {
  /** Every line seen so far. */
  readonly seen: string[] = [];
  #waiters: { match: (line: string) => boolean; resolve: (line: string) => void }[] = [];
  /** Settles when the stream ends. */
  readonly done: Promise<void>;

  /** Starts reading `stream`. */
  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = this.#read(stream);
  }

  /** Resolves with the first line (past or future) that satisfies `match`. */
  waitFor(match: (line: string) => boolean, what: string): Promise<string> {
    const found = this.seen.find(match);
    if (found !== undefined) return Promise.resolve(found);
    const { promise, resolve, reject } = Promise.withResolvers<string>();
    this.#waiters.push({ match, resolve });
    this.done.then(() => reject(new Error(`stream ended before ${what}:\n${this.text()}`)));
    return promise;
  }

  /** All lines seen, joined. */
  text(): string {
    return this.seen.join("\n");
  }

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    let buffer = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        this.#push(buffer.slice(0, newline));
        buffer = buffer.slice(newline + 1);
      }
    }
    if (buffer) this.#push(buffer);
  }

  #push(line: string): void {
    this.seen.push(line);
    for (const waiter of [...this.#waiters]) {
      if (!waiter.match(line)) continue;
      this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
      waiter.resolve(line);
    }
  }
}

/** A service process under test. */
export interface ServiceProcess extends AsyncDisposable {
  /** The child process. */
  child: Deno.ChildProcess;
  /** Its stdout lines (JSON logs). */
  stdout: Lines;
  /** Its stderr lines. */
  stderr: Lines;
  /** Resolves with the base URL once the service logs that it listens. */
  listening(): Promise<string>;
}

/**
 * Starts `entry` (relative to the repository root) with `env` on top of test defaults. With
 * `openFiles`, the process may open at most that many files (soft and hard RLIMIT_NOFILE).
 * With `ownGroup`, it leads a process group (and session) of its own, as a service started
 * from a terminal or by `deno task` does: a signal to `-pid` then reaches the whole group.
 */
export function spawnService(
  entry: string,
  env: Record<string, string> = {},
  options: { openFiles?: number; ownGroup?: boolean } = {},
): ServiceProcess {
  const deno = [
    Deno.execPath(),
    "run",
    "--allow-all",
    "--no-prompt",
    "--config",
    "deno.json",
    entry,
  ];
  const limited = options.openFiles === undefined
    ? deno
    : ["prlimit", `--nofile=${options.openFiles}:${options.openFiles}`, "--", ...deno];
  // setsid execs in place (its caller leads no group), so the pid is the service's.
  const [program, ...args] = options.ownGroup ? ["setsid", ...limited] : limited;
  const child = new Deno.Command(program, {
    args,
    cwd: ROOT,
    env: { FAAS_PORT: "0", FAAS_HOST: "127.0.0.1", FAAS_POOL_SIZE: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Lines(child.stdout);
  const stderr = new Lines(child.stderr);
  return {
    child,
    stdout,
    stderr,
    async listening() {
      const line = await stdout.waitFor((text) => text.includes('"msg":"listening"'), "listening");
      return JSON.parse(line).url;
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await child.status;
      await Promise.all([stdout.done, stderr.done]);
    },
  };
}
