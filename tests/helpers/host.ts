/**
 * Facts about this host and about a service's stdout, shared by the tests that start the
 * service the way a deployment would (deploy and scale-out tests).
 *
 * @module
 */

/** True when `path` exists. */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** True when this process holds capability number `bit` in its effective set. */
export function hasCapability(bit: number): boolean {
  const status = Deno.readTextFileSync("/proc/self/status");
  const eff = /CapEff:\s+([0-9a-f]+)/.exec(status)?.[1] ?? "0";
  return ((BigInt(`0x${eff}`) >> BigInt(bit)) & 1n) === 1n;
}

/**
 * Reads a service's stdout to the end; `url` resolves from its JSON "listening" log line
 * (the service logs the address it actually bound, so FAAS_PORT=0 works).
 */
export function watchStdout(
  stream: ReadableStream<Uint8Array>,
): { url: Promise<string>; text: Promise<string> } {
  const { promise: url, resolve, reject } = Promise.withResolvers<string>();
  const text = (async () => {
    let all = "";
    let pending = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      all += chunk;
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop()!;
      for (const line of lines) {
        try {
          const record = JSON.parse(line);
          if (record.msg === "listening" && typeof record.url === "string") resolve(record.url);
        } catch {
          // not a log record
        }
      }
    }
    reject(new Error(`the service exited without a "listening" log line:\n${all.slice(-2000)}`));
    return all;
  })();
  url.catch(() => {}); // observed by whoever awaits it
  return { url, text };
}

/**
 * The executable named by the environment variable `variable`, else `fallback`, if it answers
 * `--version`; else why there is none (`hint` says how to get one).
 */
export async function findExecutable(
  variable: string,
  fallback: string,
  hint: string,
): Promise<{ path: string } | { missing: string }> {
  const path = Deno.env.get(variable) || fallback;
  try {
    const { success } = await new Deno.Command(path, {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success ? { path } : { missing: `${path} --version failed` };
  } catch {
    return { missing: `no ${path} (${hint}, or set ${variable})` };
  }
}
