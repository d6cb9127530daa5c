/**
 * Starting and stopping an HTTP server under test as a subprocess on loopback: the service
 * itself and every baseline go through here, so all are started, timed and stopped alike.
 *
 * @module
 */

import { CpuGroup } from "./cpu_group.ts";
import { descendants, startTimeOf } from "./proc_tree.ts";

/** A free TCP port on 127.0.0.1, found by listening on port 0 and closing. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** How to start a server. */
export interface ServerSpec {
  /** Short name used in messages (`service`, `floor`, ...). */
  name: string;
  /** Program to run; defaults to the running Deno. */
  command?: string;
  /** Arguments of the program. */
  args: string[];
  /** Extra environment; `FAAS_PORT` and `FAAS_HOST` are always set. */
  env?: Record<string, string>;
  /** Path answered with 200 once the server is ready; defaults to `/health`. */
  healthPath?: string;
  /** How long to wait for readiness before giving up, in ms; defaults to 30 s. */
  readyTimeoutMs?: number;
  /** Working directory; defaults to the current one. */
  cwd?: string;
  /**
   * Runs the server and everything it starts in a CPU cgroup (see cpu_group.ts): `"own"`, one
   * made for it, or one it shares with other servers. The group is removed once the last of
   * its servers stopped. Where none can be made, the server runs without and its `cpuGroup`
   * says why.
   */
  cpuGroup?: "own" | CpuGroup;
}

/** A running server. */
export interface RunningServer {
  /** Name from the spec. */
  name: string;
  /** Process id of the server. */
  pid: number;
  /** Port it listens on. */
  port: number;
  /** `http://127.0.0.1:<port>`. */
  url: string;
  /** Ms from spawning the process to the first 200 of the health path. */
  startMs: number;
  /** `performance.now()` when the process was spawned. */
  spawnedAt: number;
  /** The path of its CPU cgroup, or why it has none although it asked for one. */
  cpuGroup?: { path: string } | { problem: string };
  /** The last lines the server wrote to stdout and stderr. */
  outputTail(): string;
  /** True once the server process has exited, for whatever reason. */
  hasExited(): boolean;
  /** SIGTERMs the server, waits for its exit (SIGKILL after a grace), kills leftovers. */
  stop(): Promise<StopResult>;
}

/** How a server ended. */
export interface StopResult {
  /** Exit code of the server process. */
  code: number;
  /** True when it ignored SIGTERM for the grace period and was killed. */
  forced: boolean;
  /** Descendant processes still alive after it exited, killed by us. */
  leftovers: number;
}

/** Thrown when a server could not be started or never became ready. */
export class ServerStartError extends Error {
  /** Creates the error; the message says what went wrong and shows the server's output. */
  constructor(message: string) {
    super(message);
    this.name = "ServerStartError";
  }
}

const TAIL_BYTES = 4096;
const STOP_GRACE_MS = 10_000;

/** Keeps the last bytes of a stream, draining it so the child never blocks on a full pipe. */
async function drainTail(stream: ReadableStream<Uint8Array>, tail: { text: string }) {
  const decoder = new TextDecoder();
  for await (const chunk of stream) {
    tail.text = (tail.text + decoder.decode(chunk, { stream: true })).slice(-TAIL_BYTES);
  }
}

/**
 * Spawns the server on a free loopback port and resolves once its health path answers 200.
 * Rejects with {@link ServerStartError} when it exits first or is not ready in time; the
 * process is stopped before rejecting.
 */
export async function startServer(spec: ServerSpec): Promise<RunningServer> {
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  const tail = { text: "" };
  const group = spec.cpuGroup === "own" ? CpuGroup.create(spec.name) : spec.cpuGroup;
  const program = spec.command ?? Deno.execPath();
  const command = group instanceof CpuGroup
    ? group.wrap(program, spec.args)
    : { command: program, args: spec.args };
  const spawnedAt = performance.now();
  const child = new Deno.Command(command.command, {
    args: command.args,
    cwd: spec.cwd,
    env: { ...spec.env, FAAS_PORT: String(port), FAAS_HOST: "127.0.0.1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const drained = Promise.all([drainTail(child.stdout, tail), drainTail(child.stderr, tail)])
    .catch(() => {});
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });

  const stop = async (): Promise<StopResult> => {
    let forced = false;
    // Descendants are listed before the parent goes: once it exits they are reparented.
    const family = new Map<number, string | undefined>();
    const listFamily = () => {
      for (const pid of descendants(child.pid)) {
        if (!family.has(pid)) family.set(pid, startTimeOf(pid));
      }
    };
    listFamily();
    if (!exited) {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const timer = setTimeout(() => {
        forced = true;
        listFamily();
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
      }, STOP_GRACE_MS);
      await status;
      clearTimeout(timer);
    }
    let leftovers = 0;
    for (const [pid, startTime] of family) {
      // A pid reused by an unrelated process since it was listed is left alone.
      if (startTime === undefined || startTimeOf(pid) !== startTime) continue;
      try {
        Deno.kill(pid, "SIGKILL");
        leftovers++;
      } catch { /* exited on its own, as it should */ }
    }
    // A killed process that is not our child sends no event: wait for /proc to show it gone.
    const killedBy = performance.now() + 2_000;
    for (const [pid, startTime] of family) {
      while (startTime !== undefined && startTimeOf(pid) === startTime) {
        if (performance.now() > killedBy) break;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
    // A process that escaped the tree may still hold the pipes: do not wait on it forever.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([drained, new Promise((resolve) => timer = setTimeout(resolve, 2_000))]);
    clearTimeout(timer);
    // Refused while another server still runs in a shared group: the last one removes it.
    if (group instanceof CpuGroup) group.remove();
    return { code: (await status).code, forced, leftovers };
  };

  const deadline = spawnedAt + (spec.readyTimeoutMs ?? 30_000);
  const healthUrl = url + (spec.healthPath ?? "/health");
  while (true) {
    if (exited) {
      if (group instanceof CpuGroup) group.remove();
      await drained;
      const { code } = await status;
      throw new ServerStartError(
        `${spec.name} exited with code ${code} before answering ${healthUrl}:\n${tail.text.trim()}`,
      );
    }
    if (performance.now() > deadline) {
      await stop();
      throw new ServerStartError(
        `${spec.name} did not answer 200 on ${healthUrl} within ${
          spec.readyTimeoutMs ?? 30_000
        } ms:\n${tail.text.trim()}`,
      );
    }
    try {
      const response = await fetch(healthUrl, { signal: AbortSignal.timeout(1_000) });
      await response.body?.cancel();
      if (response.status === 200) break;
    } catch { /* not listening yet */ }
    // No readiness event exists across processes: poll, briefly.
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const startMs = performance.now() - spawnedAt;
  return {
    name: spec.name,
    pid: child.pid,
    port,
    url,
    startMs,
    spawnedAt,
    cpuGroup: group instanceof CpuGroup
      ? { path: group.path }
      : typeof group === "string"
      ? { problem: group }
      : undefined,
    outputTail: () => tail.text,
    hasExited: () => exited,
    stop,
  };
}
