/**
 * The boot floor: how many fresh `deno run` processes, each hosting one Web Worker with no
 * permissions, this machine can boot per second. That is what the service must do for every
 * request of a tenant it has never seen once its pool is drained (a JS runner process is a
 * `deno run` hosting such a worker), so it bounds the service's "new tenant each" throughput;
 * and it moves with the machine's load, so it is measured in the same run as the service.
 *
 * One closed loop per CPU core starts a boot, waits for the process to exit, and starts the
 * next. A boot is `deno run` on baselines/boot_floor_main.ts, allowed nothing but reading the
 * worker module; its main thread starts baselines/boot_floor_worker.ts with
 * `deno: {permissions: "none"}`, and exits as soon as the worker's one message arrives.
 *
 * @module
 */

import type { CpuGroup } from "./cpu_group.ts";
import type { LoadResult } from "./load.ts";
import { summarize } from "./stats.ts";

const BASELINES = new URL("./baselines/", import.meta.url);

/** The main module of a boot. */
export const BOOT_FLOOR_MAIN: string = new URL("boot_floor_main.ts", BASELINES).pathname;

/** The worker module of a boot: the only file a boot may read beyond its main module. */
export const BOOT_FLOOR_WORKER: string = new URL("boot_floor_worker.ts", BASELINES).pathname;

/**
 * Arguments of `Deno.execPath()` for one boot: the runner's flags for a process that needs
 * no configuration, lock file or prompt, and the worker module as its only permission.
 */
export const BOOT_FLOOR_ARGS: readonly string[] = [
  "run",
  "--no-config",
  "--no-lock",
  "--no-prompt",
  "--quiet",
  "--unstable-worker-options",
  `--allow-read=${BOOT_FLOOR_WORKER}`,
  BOOT_FLOOR_MAIN,
];

/** Options of {@link measureBootFloor}. */
export interface BootFloorOptions {
  /** Stop starting boots after this many ms (counted after the warm-up). */
  durationMs: number;
  /** Concurrent loops of boots; defaults to `navigator.hardwareConcurrency`. */
  loops?: number;
  /** Longest one boot may take before it is killed and counted as failed; defaults to 30 s. */
  bootTimeoutMs?: number;
  /**
   * A CPU cgroup every boot joins as soon as it is spawned (see cpu_group.ts), so the boots
   * weigh as much as the service's runners on a busy machine.
   */
  cpuGroup?: CpuGroup;
}

const SAMPLE_CHARS = 300;

/** One boot: `undefined` when the worker's message arrived, else the kind of failure. */
async function boot(
  timeoutMs: number,
  group: CpuGroup | undefined,
): Promise<{ kind: string; sample: string } | undefined> {
  let output: Deno.CommandOutput;
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: [...BOOT_FLOOR_ARGS],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(timeoutMs),
    }).spawn();
    // Joined right after the spawn: a wrapper that joins first would add its own start to
    // every boot. The boot's first instructions may run outside the group.
    try {
      group?.join(child.pid);
    } catch { /* exited already */ }
    output = await child.output();
  } catch (error) {
    return { kind: "spawn", sample: String(error) };
  }
  if (output.success) return undefined;
  const stderr = new TextDecoder().decode(output.stderr).trim().slice(-SAMPLE_CHARS);
  return output.signal
    ? { kind: "killed", sample: `killed by ${output.signal} after ${timeoutMs} ms: ${stderr}` }
    : { kind: `exit_${output.code}`, sample: stderr };
}

/**
 * Measures the boot floor: after one warm-up boot per loop (so the transpiled modules and
 * V8's code cache are on disk, as they are for the service's runners), `loops` closed loops
 * boot for `durationMs`. The result reads like a load run: `throughput` is completed boots
 * per second over the span until the last boot ended, the latencies are those of single
 * boots, `concurrency` is the number of loops. Rejects when a warm-up boot fails: nothing
 * measured afterwards would be a boot.
 */
export async function measureBootFloor(options: BootFloorOptions): Promise<LoadResult> {
  const loops = options.loops ?? navigator.hardwareConcurrency;
  const timeoutMs = options.bootTimeoutMs ?? 30_000;
  if (!Number.isInteger(loops) || loops < 1) {
    throw new RangeError(`loops must be a positive integer, got ${loops}`);
  }
  if (!(options.durationMs >= 0)) {
    throw new RangeError(`durationMs must be a non-negative number, got ${options.durationMs}`);
  }
  const group = options.cpuGroup;
  const warmups = await Promise.all(Array.from({ length: loops }, () => boot(timeoutMs, group)));
  const failed = warmups.find((failure) => failure !== undefined);
  if (failed) throw new Error(`the warm-up boot failed (${failed.kind}): ${failed.sample}`);

  const latencies: number[] = [];
  const errorKinds: Record<string, number> = {};
  const errorSamples: Record<string, string> = {};
  let sent = 0;
  const started = performance.now();
  const deadline = started + options.durationMs;
  const loop = async () => {
    while (performance.now() < deadline) {
      sent++;
      const t0 = performance.now();
      const failure = await boot(timeoutMs, group);
      if (failure === undefined) {
        latencies.push(performance.now() - t0);
        continue;
      }
      errorKinds[failure.kind] = (errorKinds[failure.kind] ?? 0) + 1;
      errorSamples[failure.kind] ??= failure.sample;
    }
  };
  await Promise.all(Array.from({ length: loops }, loop));
  const elapsedMs = performance.now() - started;
  return {
    ...summarize(latencies, { errorKinds, elapsedMs }),
    concurrency: loops,
    sent,
    errorSamples,
  };
}
