/**
 * A closed-loop load generator: `concurrency` workers each send one request, wait for its
 * full answer, and send the next, over keep-alive connections, for a duration or a count.
 *
 * @module
 */

import { type LatencySummary, summarize } from "./stats.ts";

/** What a 200 answer is judged by: `undefined` when correct, else the kind of failure. */
export type AnswerCheck = (answer: unknown) => string | undefined;

/** Options of {@link runLoad}. */
export interface LoadOptions {
  /** Requests in flight at once (closed loop: each worker waits for its answer). */
  concurrency: number;
  /** Stop starting requests after this many ms. One of `durationMs`/`requests` is needed. */
  durationMs?: number;
  /** Stop after this many requests in total. */
  requests?: number;
  /** JSON body of the `index`-th request (0-based), so each request can differ. */
  body: (index: number) => unknown;
  /** Judges a parsed 200 answer; defaults to {@link checkRunSucceeded}. */
  check?: AnswerCheck;
  /** Per-request timeout in ms; defaults to 60 s. */
  timeoutMs?: number;
}

/** Outcome of a load run: the summary plus what was asked. */
export interface LoadResult extends LatencySummary {
  /** Requests in flight at once. */
  concurrency: number;
  /** Requests sent. */
  sent: number;
  /** The first failure of each kind, as the server or the network described it (capped). */
  errorSamples: Record<string, string>;
}

const SAMPLE_CHARS = 300;

/** What a failed answer says about itself: its `error`, else the end of its stderr. */
function describeAnswer(answer: unknown): string {
  const { error, output } = (answer ?? {}) as { error?: unknown; output?: { stderr?: unknown } };
  if (typeof error === "string" && error) return error;
  if (typeof output?.stderr === "string" && output.stderr) {
    return output.stderr.slice(-SAMPLE_CHARS);
  }
  return JSON.stringify(answer).slice(0, SAMPLE_CHARS);
}

/**
 * The contract's notion of a successful run: a top-level `metadata.status` of `success` and
 * no top-level `error`. Anything else is a failure named after its status.
 */
export function checkRunSucceeded(answer: unknown): string | undefined {
  if (typeof answer !== "object" || answer === null) return "bad_body";
  const { metadata, error } = answer as { metadata?: { status?: unknown }; error?: unknown };
  const status = metadata?.status;
  if (status !== "success") return `status_${typeof status === "string" ? status : "missing"}`;
  if (typeof error === "string" && error !== "") return "error_field";
  return undefined;
}

/**
 * Sends a closed loop of POST requests with JSON bodies to `url` and summarizes them. Given
 * several URLs (servers that share the load), the `index`-th request goes to
 * `url[index % url.length]`: round-robin.
 */
export async function runLoad(
  url: string | readonly string[],
  options: LoadOptions,
): Promise<LoadResult> {
  const urls = typeof url === "string" ? [url] : url;
  if (urls.length === 0) throw new RangeError("expected at least one url");
  const { concurrency, durationMs, requests } = options;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new RangeError(`concurrency must be a positive integer, got ${concurrency}`);
  }
  if (durationMs === undefined && requests === undefined) {
    throw new RangeError("either durationMs or requests is required");
  }
  const check = options.check ?? checkRunSucceeded;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const latencies: number[] = [];
  const errorKinds: Record<string, number> = {};
  const errorSamples: Record<string, string> = {};
  const fail = (kind: string, sample: () => string) => {
    errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
    if (!(kind in errorSamples)) errorSamples[kind] = sample().slice(0, SAMPLE_CHARS);
  };
  const started = performance.now();
  const deadline = durationMs === undefined ? Infinity : started + durationMs;
  let next = 0;

  const claim = (): number | undefined => {
    if (requests !== undefined && next >= requests) return undefined;
    if (performance.now() >= deadline) return undefined;
    return next++;
  };

  const worker = async () => {
    for (let index = claim(); index !== undefined; index = claim()) {
      const payload = JSON.stringify(options.body(index));
      const t0 = performance.now();
      try {
        const response = await fetch(urls[index % urls.length], {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: payload,
          signal: AbortSignal.timeout(timeoutMs),
        });
        // The body is read in full in every case so the connection can be kept alive.
        const text = await response.text();
        const elapsed = performance.now() - t0;
        if (response.status !== 200) {
          fail(`http_${response.status}`, () => text);
          continue;
        }
        let answer: unknown;
        try {
          answer = JSON.parse(text);
        } catch {
          fail("bad_json", () => text);
          continue;
        }
        const problem = check(answer);
        if (problem) fail(problem, () => describeAnswer(answer));
        else latencies.push(elapsed);
      } catch (error) {
        const timedOut = error instanceof DOMException && error.name === "TimeoutError";
        fail(timedOut ? "client_timeout" : "transport", () => String(error));
      }
    }
  };

  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedMs = performance.now() - started;
  return {
    ...summarize(latencies, { errorKinds, elapsedMs }),
    concurrency,
    sent: next,
    errorSamples,
  };
}
