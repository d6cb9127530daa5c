/**
 * Waiting on conditions observable only from outside (e.g. through /health).
 *
 * @module
 */

/** Polls `check` until it returns true; rejects after `timeoutMs`. */
export async function until(
  check: () => boolean | Promise<boolean>,
  options: { timeoutMs?: number; what?: string } = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${options.what ?? "a condition"}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The scheduler section of /health. */
export async function schedulerStats(url: string): Promise<Record<string, number>> {
  const response = await fetch(url + "/health");
  const body = await response.json();
  return body.scheduler;
}

/** Resolves once /health reports `count` queued runs. */
export function untilQueued(url: string, count: number): Promise<void> {
  return until(async () => (await schedulerStats(url)).queuedTasks === count, {
    what: `${count} queued runs`,
  });
}
