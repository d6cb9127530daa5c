/**
 * Container health probe: exits 0 when `GET /health` answers 200 with
 * `"status": "healthy"`, 1 otherwise (including when nothing listens).
 *
 * Reads `FAAS_PORT` and `FAAS_HOST` like the service does; a wildcard host is
 * probed on loopback.
 *
 * @module
 */

const WILDCARD_HOSTS = new Set(["", "0.0.0.0", "::", "[::]"]);

/** Builds the health URL the service answers on, from its own settings. */
export function healthUrl(env: { port?: string; host?: string }): string {
  const port = env.port || "8000";
  const host = WILDCARD_HOSTS.has(env.host ?? "") ? "127.0.0.1" : env.host!;
  const hostPart = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  return `http://${hostPart}:${port}/health`;
}

/** Probes `url` once; resolves to a one-line verdict and whether it is healthy. */
export async function probe(
  url: string,
  options: { timeoutMs?: number } = {},
): Promise<{ healthy: boolean; detail: string }> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(options.timeoutMs ?? 4000) });
    const text = await res.text();
    let status: unknown;
    try {
      status = (JSON.parse(text) as { status?: unknown }).status;
    } catch {
      return { healthy: false, detail: `expected a JSON body, got HTTP ${res.status}` };
    }
    const healthy = res.status === 200 && status === "healthy";
    return { healthy, detail: `HTTP ${res.status}, status ${JSON.stringify(status)}` };
  } catch (err) {
    return { healthy: false, detail: `no answer from ${url}: ${(err as Error).message}` };
  }
}

if (import.meta.main) {
  const url = healthUrl({ port: Deno.env.get("FAAS_PORT"), host: Deno.env.get("FAAS_HOST") });
  const { healthy, detail } = await probe(url);
  console.log(detail);
  Deno.exit(healthy ? 0 : 1);
}
