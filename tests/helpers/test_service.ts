/**
 * Starts the real service in-process on an ephemeral port with {@link EchoRuntime}s, and
 * captures its log records.
 *
 * @module
 */

import { parseConfig } from "../../src/config.ts";
import type { LogRecord } from "../../src/log.ts";
import { type Service, startService } from "../../src/service.ts";
import { EchoRuntime } from "./echo_runtime.ts";

/** A service under test. */
export interface TestService extends AsyncDisposable {
  /** The running service. */
  service: Service;
  /** Base URL. */
  url: string;
  /** Runtime serving javascript and typescript. */
  js: EchoRuntime;
  /** Runtime serving python. */
  py: EchoRuntime;
  /** Info records logged. */
  logs: LogRecord[];
  /** Error records logged. */
  errors: LogRecord[];
  /** POSTs JSON (or a raw string) to `path`. */
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<Response>;
}

/** Starts a service; `env` overrides the test defaults. */
export async function startTestService(env: Record<string, string> = {}): Promise<TestService> {
  const config = parseConfig({
    FAAS_PORT: "0",
    FAAS_HOST: "127.0.0.1",
    FAAS_POOL_SIZE: "2",
    FAAS_DRAIN_TIMEOUT: "2000",
    ...env,
  });
  const js = new EchoRuntime(["javascript", "typescript"]);
  const py = new EchoRuntime(["python"]);
  const logs: LogRecord[] = [];
  const errors: LogRecord[] = [];
  const service = await startService(config, {
    registrations: [js.registration(), py.registration()],
    logger: { info: (record) => logs.push(record), error: (record) => errors.push(record) },
  });
  return {
    service,
    url: service.url,
    js,
    py,
    logs,
    errors,
    post(path, body, headers = {}) {
      return fetch(service.url + path, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...headers },
        body: typeof body === "string" ? body : JSON.stringify(body),
      });
    },
    async [Symbol.asyncDispose]() {
      await service.shutdown();
    },
  };
}
