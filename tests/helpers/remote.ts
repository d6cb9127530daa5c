/**
 * Running the HTTP-level suites against a service that is already running elsewhere (a
 * container, another host) instead of one this process starts.
 *
 * `FAAS_TEST_URL` is that service's base URL. `FAAS_TEST_ENV` (JSON) is the environment it was
 * started with: a suite states the settings its assertions rely on, and a service started with
 * others fails the suite at once instead of failing its cases obscurely. Checks that need to see
 * the service's processes from this process (process trees, runners left spinning) cannot run
 * against a remote service; they are skipped with a printed reason.
 *
 * @module
 */

import type {
  Language,
  PoolStats,
  RunJob,
  RunOutcome,
  RunStatus,
  Runtime,
  RuntimeInfo,
  RuntimeSettings,
  ValidationResult,
} from "../../src/runtime.ts";

/** Base URL of the service under test when it runs elsewhere, else undefined. */
export const REMOTE_URL: string | undefined = Deno.env.get("FAAS_TEST_URL")?.replace(/\/$/, "") ||
  undefined;

const noted = new Set<string>();

/**
 * True (and says so once per reason) when the service is remote, so that a check which needs to
 * see its processes from this process must be skipped.
 */
export function skipInProcessCheck(what: string): boolean {
  if (REMOTE_URL === undefined) return false;
  if (!noted.has(what)) {
    noted.add(what);
    console.log(
      `remote service ${REMOTE_URL}: skipped ${what} (needs this process to see its processes)`,
    );
  }
  return true;
}

/**
 * Test options that skip a whole case against a remote service, with the reason in its name
 * and printed once.
 */
export function inProcessOnly(reason: string): { ignore: boolean } {
  return { ignore: skipInProcessCheck(reason) };
}

/**
 * Fails unless the remote service was started with `required` (as FAAS_TEST_ENV says). Without
 * FAAS_TEST_ENV the settings cannot be checked and are assumed.
 */
export function assertRemoteSettings(required: Record<string, string>): void {
  const declared = Deno.env.get("FAAS_TEST_ENV");
  if (!declared) return;
  const env = JSON.parse(declared) as Record<string, string>;
  const wrong = Object.entries(required).filter(([name, value]) => env[name] !== value);
  if (wrong.length > 0) {
    throw new Error(
      `the service at ${REMOTE_URL} must run with ${
        wrong.map(([name, value]) => `${name}=${value}`).join(" ")
      } for this suite; FAAS_TEST_ENV says ${
        wrong.map(([name]) => `${name}=${env[name] ?? "(unset)"}`).join(" ")
      }`,
    );
  }
}

/** The environment the remote service runs with, as FAAS_TEST_ENV says (empty if unsaid). */
export function remoteEnv(): Record<string, string> {
  const declared = Deno.env.get("FAAS_TEST_ENV");
  return declared ? JSON.parse(declared) : {};
}

/**
 * For each isolation layer the service reports, the OS operations it rests on, as named by
 * deploy/privileges_probe.py: alternatives, each a list of operations that must all work.
 */
export const LAYER_OPERATIONS: Record<string, string[][]> = {
  uid: [["setresuid 60001", "kill other uid"]],
  netns: [["unshare net"]],
  pidns: [["unshare pid", "mount proc (new pid ns)"]],
  mountns: [["unshare mount", "mount tmpfs"]],
  rootfs: [["chroot"], ["pivot_root"]],
  cgroup: [["cgroup subtree"]],
  // A cgroup namespace is made around the slot's own cgroup: none without cgroups.
  cgroupns: [["cgroup subtree"]],
  seccomp: [["seccomp filter"]],
};

/**
 * The layers a remote host cannot give, each with the reason, from the privilege probe run
 * there (FAAS_TEST_PROBE: the path of `privileges_probe.py --json` output): a layer is absent
 * when every alternative of {@link LAYER_OPERATIONS} has an operation the probe saw fail.
 * Empty when there is no probe output (a local service must have every layer its host allows).
 */
export function absentLayers(): Record<string, string> {
  const path = Deno.env.get("FAAS_TEST_PROBE");
  if (!path) return {};
  const { checks } = JSON.parse(Deno.readTextFileSync(path)) as {
    checks: Record<string, string>;
  };
  return layersAbsentFrom(checks);
}

/**
 * Test options that skip a case proving what only `layer` gives, when the remote host cannot
 * give that layer: the layer and the probe's reason are printed, never skipped silently.
 */
export function requiresLayer(layer: string): { ignore: boolean } {
  const reason = REMOTE_URL === undefined ? undefined : absentLayers()[layer];
  if (reason && !noted.has(`layer ${layer}`)) {
    noted.add(`layer ${layer}`);
    console.log(
      `remote service ${REMOTE_URL}: skipped the cases that need layer ${layer}: ${reason}`,
    );
  }
  return { ignore: reason !== undefined };
}

/** {@link absentLayers} for the probe's `checks` (operation name to "yes…" or "no: why"). */
export function layersAbsentFrom(checks: Record<string, string>): Record<string, string> {
  const absent: Record<string, string> = {};
  for (const [layer, alternatives] of Object.entries(LAYER_OPERATIONS)) {
    const failures = alternatives.map((operations) =>
      operations.filter((op) => !checks[op]?.startsWith("yes"))
        .map((op) => `${op}: ${checks[op] ?? "not probed"}`)
    );
    if (failures.every((failed) => failed.length > 0)) {
      absent[layer] = failures.map((failed) => failed.join("; ")).join(" | ");
    }
  }
  return absent;
}

/** The settings of a runtime suite that a remote service's environment must match. */
export function requiredEnv(settings: Partial<RuntimeSettings>): Record<string, string> {
  const env: Record<string, string> = {};
  if (settings.memoryLimitMb !== undefined) {
    env.FAAS_MEMORY_LIMIT_MB = String(settings.memoryLimitMb);
  }
  if (settings.maxOutputBytes !== undefined) {
    env.FAAS_MAX_OUTPUT_BYTES = String(settings.maxOutputBytes);
  }
  return env;
}

interface RunAnswer {
  output: { stdout: string; stderr: string; ret_val: string };
  metadata: {
    instance_id: string;
    status: RunStatus;
    exit_code: number;
    duration: number;
    truncated: boolean;
  };
  error: string;
}

/**
 * A {@link Runtime} whose runs go to a remote service over HTTP, so that a runtime suite can
 * attack a deployed service with the same cases. `stats()` and `info()` answer from the last
 * `/health` read (at start and after every run).
 */
export class HttpRuntime implements Runtime {
  /** The languages the suite runs. */
  readonly languages: readonly Language[];
  #url: string;
  #required: Record<string, string>;
  #health: {
    pool?: { languages?: Record<string, PoolStats> };
    languages?: Record<string, { available: boolean; version: string }>;
    sandbox?: Record<string, { isolation: Record<string, boolean> }>;
  } = {};

  /** A runtime for `languages` served at `url`, which must run with `settings`. */
  constructor(
    url: string,
    languages: readonly Language[],
    settings: Partial<RuntimeSettings> = {},
  ) {
    this.#url = url;
    this.languages = languages;
    this.#required = requiredEnv(settings);
  }

  /** Checks the remote settings and that every language is served. */
  async start(): Promise<void> {
    assertRemoteSettings(this.#required);
    await this.#readHealth();
    for (const language of this.languages) {
      if (this.#health.languages?.[language]?.available !== true) {
        throw new Error(`the service at ${this.#url} does not serve ${language}`);
      }
    }
  }

  /** Runs `job` through POST /run_code. */
  async run(job: RunJob): Promise<RunOutcome> {
    const response = await fetch(`${this.#url}/run_code`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        language: job.language,
        code: job.code,
        timeout: job.timeoutMs,
        ...("input" in job ? { input: job.input } : {}),
        ...(job.tenant === undefined ? {} : { ext: { space_id: job.tenant } }),
      }),
    });
    const text = await response.text();
    if (response.status !== 200) {
      throw new Error(`expected 200 from /run_code, got ${response.status}: ${text.slice(0, 300)}`);
    }
    const answer = JSON.parse(text) as RunAnswer;
    await this.#readHealth();
    return {
      stdout: answer.output.stdout,
      stderr: answer.output.stderr,
      retVal: answer.output.ret_val,
      status: answer.metadata.status,
      exitCode: answer.metadata.exit_code,
      durationMs: answer.metadata.duration,
      truncated: answer.metadata.truncated,
      instanceId: answer.metadata.instance_id,
      ...(answer.error ? { error: answer.error } : {}),
    };
  }

  /** Checks syntax through POST /validate_code. */
  async validate(code: string, language: Language): Promise<ValidationResult> {
    const response = await fetch(`${this.#url}/validate_code`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ language, code }),
    });
    if (response.status !== 200) {
      throw new Error(`expected 200 from /validate_code, got ${response.status}`);
    }
    return await response.json() as ValidationResult;
  }

  /** The pool of the first language, as /health last said. */
  stats(): PoolStats {
    const stats = this.#health.pool?.languages?.[this.languages[0]];
    return stats ?? { totalInstances: 0, idleInstances: 0, activeInstances: 0 };
  }

  /** Availability, version and isolation layers of the first language, as /health said. */
  info(): RuntimeInfo {
    const language = this.languages[0];
    return {
      available: this.#health.languages?.[language]?.available ?? false,
      version: this.#health.languages?.[language]?.version ?? "",
      isolation: this.#health.sandbox?.[language]?.isolation ?? {},
    };
  }

  /** Nothing to stop: the remote service outlives the suite. */
  shutdown(): Promise<void> {
    return Promise.resolve();
  }

  async #readHealth(): Promise<void> {
    const response = await fetch(`${this.#url}/health`);
    this.#health = await response.json();
  }
}
