/**
 * Zipf-distributed draws from a seeded generator: which of `n` tenants sends the next request
 * in a mix where a few tenants send most requests and many send a few, the same sequence in
 * every run so that runs compare.
 *
 * @module
 */

/**
 * A seeded generator of uniform numbers in [0, 1) (mulberry32: 32 bits of state, fast, good
 * enough for load shapes; not for anything secret). The same seed gives the same sequence.
 *
 * @example
 * ```ts
 * const random = seededRandom(42);
 * const first = random();
 * console.assert(first === seededRandom(42)());
 * ```
 */
export function seededRandom(seed: number): () => number {
  if (!Number.isInteger(seed)) throw new RangeError(`expected an integer seed, got ${seed}`);
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Options of {@link zipfSampler}. */
export interface ZipfOptions {
  /** The exponent: rank `k` (1-based) is drawn with probability ∝ `1 / k^s`. */
  s: number;
  /** Seed of the generator (see {@link seededRandom}). */
  seed: number;
}

/**
 * The probability of each rank 1..n (index 0 is rank 1) under Zipf's law with exponent `s`.
 */
export function zipfWeights(n: number, s: number): number[] {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`expected n ≥ 1, got ${n}`);
  if (!(s >= 0)) throw new RangeError(`expected an exponent s ≥ 0, got ${s}`);
  const raw = Array.from({ length: n }, (_, i) => 1 / (i + 1) ** s);
  const total = raw.reduce((sum, w) => sum + w, 0);
  return raw.map((w) => w / total);
}

/**
 * A sampler of ranks 0..n-1 (0 is the most frequent) under Zipf's law with exponent `s`,
 * drawn by inverting the cumulative distribution with a seeded generator: the same options
 * give the same sequence.
 *
 * @example
 * ```ts
 * const next = zipfSampler(24, { s: 1.1, seed: 7 });
 * const tenants = Array.from({ length: 5 }, () => `tenant-${next()}`);
 * ```
 */
export function zipfSampler(n: number, options: ZipfOptions): () => number {
  const weights = zipfWeights(n, options.s);
  const cumulative: number[] = [];
  let sum = 0;
  for (const weight of weights) cumulative.push(sum += weight);
  cumulative[n - 1] = 1; // no draw may fall past the last rank through rounding
  const random = seededRandom(options.seed);
  return () => {
    const u = random();
    let low = 0;
    let high = n - 1;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (cumulative[mid] > u) high = mid;
      else low = mid + 1;
    }
    return low;
  };
}
