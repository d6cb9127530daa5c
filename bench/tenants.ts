/**
 * Load shapes with many tenants: a Zipf mix (a few tenants send most requests, many send a
 * few), and normal tenants measured alone and then beside hostile tenants whose runs loop
 * until their timeout or allocate until their memory limit.
 *
 * @module
 */

import { type LoadResult, runLoad } from "./load.ts";
import {
  type HostileKind,
  hostileProgram,
  type Program,
  requestBody,
  type TenantOf,
} from "./programs.ts";
import { zipfSampler } from "./zipf.ts";

/** A Zipf mix of tenants. */
export interface ZipfMix {
  /** Number of tenants. */
  tenants: number;
  /** Zipf exponent. */
  s: number;
  /** Seed of the draws: the same seed sends the same sequence of tenants. */
  seed: number;
}

/** The benchmark's mix: 24 tenants, s = 1.1, a fixed seed. */
export const ZIPF_MIX: ZipfMix = { tenants: 24, s: 1.1, seed: 20_261_206 };

/**
 * The tenant of each request in a Zipf mix: `<prefix><rank>`, rank 0 the most frequent. The
 * `index`-th request always gets the same tenant, whatever order requests are made in.
 */
export function zipfTenants(mix: ZipfMix, options: { prefix: string }): TenantOf {
  const next = zipfSampler(mix.tenants, { s: mix.s, seed: mix.seed });
  const drawn: string[] = [];
  return (index) => {
    while (drawn.length <= index) drawn.push(`${options.prefix}${next()}`);
    return drawn[index];
  };
}

/** Options of {@link runZipfMix}. */
export interface ZipfRunOptions {
  /** The program every tenant runs. */
  program: Program;
  /** The mix. */
  mix: ZipfMix;
  /** Requests in flight. */
  concurrency: number;
  /** Length of the warm-up, in ms: the same sequence, so the pool has seen the tenants. */
  warmupMs: number;
  /** Length of the measured run, in ms. */
  durationMs: number;
  /** Prefix of the tenant names. */
  prefix: string;
}

/** What {@link runZipfMix} measured. */
export interface ZipfRun {
  /** The measured run. */
  measured: LoadResult;
  /** How many distinct tenants the measured run sent requests for. */
  distinctTenants: number;
  /** Share of the measured run's requests sent for the most frequent tenant. */
  topShare: number;
}

/**
 * Closed-loop load whose requests come from the tenants of a Zipf mix: a warm-up, then the
 * measured run, which starts the seeded sequence again from its first draw so that every run
 * measures the same sequence.
 */
export async function runZipfMix(url: string, options: ZipfRunOptions): Promise<ZipfRun> {
  const { program, concurrency } = options;
  const warm = zipfTenants(options.mix, { prefix: options.prefix });
  await runLoad(url, {
    concurrency,
    durationMs: options.warmupMs,
    body: requestBody(program, warm),
    check: program.check,
  });
  const tenantOf = zipfTenants(options.mix, { prefix: options.prefix });
  const measured = await runLoad(url, {
    concurrency,
    durationMs: options.durationMs,
    body: requestBody(program, tenantOf),
    check: program.check,
  });
  const counts = new Map<string, number>();
  for (let i = 0; i < measured.sent; i++) {
    counts.set(tenantOf(i), (counts.get(tenantOf(i)) ?? 0) + 1);
  }
  return {
    measured,
    distinctTenants: counts.size,
    topShare: measured.sent ? Math.max(...counts.values()) / measured.sent : 0,
  };
}

/** The hostile tenants: two loop, one grows its heap, one grows ArrayBuffers. */
export const HOSTILE_TENANTS: readonly HostileKind[] = [
  "loop",
  "loop",
  "heap_bomb",
  "buffer_bomb",
];

/**
 * The `timeout` of each hostile program, in ms: a loop runs until it; a bomb has the
 * platform's 5 s to reach its memory limit (about 3 s on a busy 2-core machine: the pages are
 * touched one by one).
 */
export const HOSTILE_TIMEOUT_MS: Record<HostileKind, number> = {
  loop: 2_000,
  heap_bomb: 5_000,
  buffer_bomb: 5_000,
};

/** Options of {@link runHostileNeighbours}. */
export interface HostileOptions {
  /** The program the normal tenants run. */
  program: Program;
  /** How many normal tenants share the normal load (request `i` is tenant `i % n`'s). */
  normalTenants: number;
  /** Normal requests in flight, over all normal tenants. */
  normalConcurrency: number;
  /** Requests in flight per hostile tenant. */
  hostileConcurrency: number;
  /** Normal load before each measured run (and the hostile tenants' head start), in ms. */
  warmupMs: number;
  /** Length of each measured run, in ms. */
  durationMs: number;
  /** Prefix of the tenant names. */
  prefix: string;
}

/** What {@link runHostileNeighbours} measured. */
export interface HostileRun {
  /** The normal tenants alone. */
  calm: LoadResult;
  /** The same normal tenants while the hostile tenants run. */
  beside: LoadResult;
  /** Each hostile tenant's closed loop (`ok` counts runs that ended as they must). */
  hostile: { kind: HostileKind; result: LoadResult }[];
}

/**
 * Measures the normal tenants' load alone, then again while {@link HOSTILE_TENANTS} each keep
 * `hostileConcurrency` hostile runs in flight, from before the normal warm-up until the
 * measured run ends; resolves once every hostile run was answered.
 */
export async function runHostileNeighbours(
  url: string,
  options: HostileOptions,
): Promise<HostileRun> {
  const { program, normalConcurrency: concurrency } = options;
  const normal = {
    concurrency,
    body: requestBody(
      program,
      (index) => `${options.prefix}normal-${index % options.normalTenants}`,
    ),
    check: program.check,
  };
  await runLoad(url, { ...normal, durationMs: options.warmupMs });
  const calm = await runLoad(url, { ...normal, durationMs: options.durationMs });
  const hostileRuns = HOSTILE_TENANTS.map(async (kind, n) => {
    const prog = hostileProgram(kind);
    const result = await runLoad(url, {
      concurrency: options.hostileConcurrency,
      durationMs: options.warmupMs + options.durationMs,
      body: requestBody(prog, () => `${options.prefix}hostile-${n}-${kind}`, {
        timeoutMs: HOSTILE_TIMEOUT_MS[kind],
      }),
      check: prog.check,
    });
    return { kind, result };
  });
  await runLoad(url, { ...normal, durationMs: options.warmupMs });
  const beside = await runLoad(url, { ...normal, durationMs: options.durationMs });
  return { calm, beside, hostile: await Promise.all(hostileRuns) };
}
