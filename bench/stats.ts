/**
 * Summary statistics of latency samples, shared by every measurement of the harness.
 *
 * @module
 */

/** Summary of one series of latency samples (milliseconds) over a wall-clock span. */
export interface LatencySummary {
  /** Samples that were answered correctly (the latencies below are theirs). */
  ok: number;
  /** Requests that failed: transport error, non-200, or a run that did not succeed. */
  errors: number;
  /** Failures by kind (`transport`, `http_503`, `status_timeout`, `wrong_result`, ...). */
  errorKinds: Record<string, number>;
  /** Median latency in ms. */
  p50: number;
  /** 90th percentile latency in ms. */
  p90: number;
  /** 99th percentile latency in ms. */
  p99: number;
  /** Mean latency in ms. */
  mean: number;
  /** Fastest sample in ms. */
  min: number;
  /** Slowest sample in ms. */
  max: number;
  /** Correct answers per second over the span. */
  throughput: number;
  /** Wall-clock span of the series in ms. */
  elapsedMs: number;
}

/**
 * The `p`-th percentile (0–100) of sorted samples, by linear interpolation between the two
 * nearest ranks; `NaN` for an empty series.
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  if (p <= 0) return sorted[0];
  if (p >= 100) return sorted[sorted.length - 1];
  const rank = (p / 100) * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  return sorted[low] + (sorted[high] - sorted[low]) * (rank - low);
}

/** Options of {@link summarize}. */
export interface SummarizeOptions {
  /** Failures by kind; their total is `errors`. */
  errorKinds?: Record<string, number>;
  /** Wall-clock span in ms the throughput is computed over; defaults to the sum of samples. */
  elapsedMs?: number;
}

/** Summarizes the latencies (ms) of correct answers and the failures of one series. */
export function summarize(
  latencies: readonly number[],
  options: SummarizeOptions = {},
): LatencySummary {
  const sorted = [...latencies].sort((a, b) => a - b);
  const errorKinds = { ...options.errorKinds };
  const errors = Object.values(errorKinds).reduce((sum, n) => sum + n, 0);
  const total = sorted.reduce((sum, x) => sum + x, 0);
  const elapsedMs = options.elapsedMs ?? total;
  return {
    ok: sorted.length,
    errors,
    errorKinds,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    mean: sorted.length ? total / sorted.length : NaN,
    min: sorted.length ? sorted[0] : NaN,
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
    throughput: elapsedMs > 0 ? (sorted.length * 1000) / elapsedMs : NaN,
    elapsedMs,
  };
}

/** `value / reference`, or `null` when either is missing, not finite, or the reference is 0. */
export function ratio(
  value: number | null | undefined,
  reference: number | null | undefined,
): number | null {
  if (value == null || reference == null) return null;
  if (!Number.isFinite(value) || !Number.isFinite(reference) || reference === 0) return null;
  return value / reference;
}
