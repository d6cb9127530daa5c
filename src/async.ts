/**
 * Waiting with a time limit: every layer that waits for something that may never come (a
 * runtime's answer, a drain, a shutdown) bounds the wait with these, so no timer is left
 * armed and no caller writes its own `Promise.race` against a `setTimeout`.
 *
 * @module
 */

/**
 * Resolves with the value of `promise`, or with `undefined` when `ms` pass first. A rejection
 * of `promise` within the time is passed on. The timer is cleared either way.
 *
 * @example Bounding a syntax check
 * ```ts
 * const verdict = await withTimeout(runtime.validate(code, "python"), 5_000);
 * if (verdict === undefined) throw new Error("expected a verdict within 5000 ms");
 * ```
 */
export async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * True when `promise` settles (resolves or rejects) within `ms`, false when it does not.
 * Never rejects: for waits whose outcome does not matter, only whether they ended.
 *
 * @example Draining for at most 30 s
 * ```ts
 * const drained = await settlesWithin(scheduler.idle(), 30_000);
 * ```
 */
export function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const settled = promise.then(() => true, () => true);
  return withTimeout(settled, ms).then((done) => done === true);
}

/**
 * Resolves after `ms`, or at once when `signal` is (or becomes) aborted. Never rejects: the
 * caller checks `signal.aborted` when it cares why the wait ended.
 *
 * @example A back-off that a shutdown cuts short
 * ```ts
 * await delay(100, { signal: closing.signal });
 * ```
 */
export function delay(ms: number, options: { signal?: AbortSignal } = {}): Promise<void> {
  const { signal } = options;
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
