/**
 * Turns one service of deploy/compose.yaml (plus override files) into `podman run` flags, so
 * that a test runs the image with exactly the privileges the compose file grants and the two
 * cannot drift apart. Every key of the service is either translated, or known not to be a
 * privilege (image, ports, health check, ...); any other key is an error, so a privilege added
 * to the compose file later cannot be silently left out.
 *
 *   deno run --allow-read deploy/compose_flags.ts [--env] SERVICE COMPOSE_FILE [OVERRIDE...]
 *
 * Prints one flag per line (`--cap-add`, `SYS_ADMIN`, ...), or with `--env` the service's
 * environment as `NAME=value` lines (`${VAR:-default}` resolved from this process's
 * environment).
 *
 * @module
 */

import { parse } from "yaml";

/** A compose service definition, as parsed. */
export type ComposeService = Record<string, unknown>;

/** Keys that say nothing about the container's privileges; the caller decides them. */
const NOT_PRIVILEGES = new Set([
  "image",
  "build",
  "restart",
  "ports",
  "environment",
  "profiles",
  "healthcheck",
  "networks",
  "container_name",
]);

/**
 * Reads `service` from compose files, later files overriding earlier ones key by key (as
 * `docker compose -f a -f b` merges a service's top-level keys).
 */
export function loadService(service: string, files: string[]): ComposeService {
  let merged: ComposeService | undefined;
  for (const file of files) {
    const doc = parse(Deno.readTextFileSync(file), { merge: true }) as {
      services?: Record<string, ComposeService>;
    };
    const found = doc.services?.[service];
    if (found) merged = { ...merged, ...found };
  }
  if (!merged) throw new Error(`expected a service "${service}" in ${files.join(", ")}`);
  return merged;
}

/** The `podman run` flags that give a container exactly the privileges of `service`. */
export function podmanFlags(service: ComposeService, options: { composeDir: string }): string[] {
  const flags: string[] = [];
  for (const [key, value] of Object.entries(service)) {
    if (NOT_PRIVILEGES.has(key) || key.startsWith("x-")) continue;
    switch (key) {
      case "user":
        flags.push("--user", String(value));
        break;
      case "cap_drop":
        for (const cap of value as string[]) flags.push("--cap-drop", cap);
        break;
      case "cap_add":
        for (const cap of value as string[]) flags.push("--cap-add", cap);
        break;
      case "security_opt":
        for (const opt of value as string[]) {
          flags.push("--security-opt", securityOpt(opt, options));
        }
        break;
      case "read_only":
        if (value === true) flags.push("--read-only");
        break;
      case "privileged":
        if (value === true) flags.push("--privileged");
        break;
      case "tmpfs":
        for (const mount of [value].flat() as string[]) flags.push("--tmpfs", mount);
        break;
      case "pids_limit":
        flags.push("--pids-limit", String(value));
        break;
      case "ulimits":
        for (const [name, limit] of Object.entries(value as Record<string, unknown>)) {
          flags.push("--ulimit", `${name}=${ulimit(limit)}`);
        }
        break;
      case "userns_mode":
        flags.push("--userns", String(value));
        break;
      case "cgroup":
        flags.push("--cgroupns", String(value));
        break;
      case "init":
        if (value === true) flags.push("--init");
        break;
      case "stop_signal":
        flags.push("--stop-signal", String(value));
        break;
      case "stop_grace_period":
        flags.push("--stop-timeout", String(seconds(String(value))));
        break;
      default:
        throw new Error(
          `compose key "${key}" is not translated to podman flags: translate it in ` +
            "deploy/compose_flags.ts (or list it there as not a privilege)",
        );
    }
  }
  return flags;
}

/** The service's environment, `${VAR:-default}` resolved against `env`. */
export function serviceEnv(
  service: ComposeService,
  env: Record<string, string | undefined>,
): Record<string, string> {
  const raw = (service.environment ?? {}) as Record<string, unknown>;
  return Object.fromEntries(
    Object.entries(raw).map(([name, value]) => [
      name,
      String(value ?? "").replace(
        /\$\{(\w+)(:?-([^}]*))?\}/g,
        (_, variable: string, _fallback, fallback = "") => env[variable] || fallback,
      ),
    ]),
  );
}

function securityOpt(opt: string, options: { composeDir: string }): string {
  if (opt === "no-new-privileges:true" || opt === "no-new-privileges") return "no-new-privileges";
  const seccomp = /^seccomp[=:](.+)$/.exec(opt);
  if (seccomp && seccomp[1] !== "unconfined" && !seccomp[1].startsWith("/")) {
    return `seccomp=${options.composeDir}/${seccomp[1]}`;
  }
  return opt;
}

function ulimit(limit: unknown): string {
  if (typeof limit === "number") return `${limit}:${limit}`;
  const { soft, hard } = limit as { soft: number; hard: number };
  return `${soft}:${hard}`;
}

function seconds(duration: string): number {
  const match = /^(\d+)(s|m)?$/.exec(duration);
  if (!match) throw new Error(`expected a duration such as "45s", got "${duration}"`);
  return Number(match[1]) * (match[2] === "m" ? 60 : 1);
}

if (import.meta.main) {
  const args = [...Deno.args];
  const envMode = args[0] === "--env";
  if (envMode) args.shift();
  const [name, ...files] = args;
  if (!name || files.length === 0) {
    console.error("usage: compose_flags.ts [--env] SERVICE COMPOSE_FILE [OVERRIDE...]");
    Deno.exit(2);
  }
  try {
    const service = loadService(name, files);
    const lines = envMode
      ? Object.entries(serviceEnv(service, Deno.env.toObject())).map(([k, v]) => `${k}=${v}`)
      : podmanFlags(service, {
        composeDir: new URL(".", `file://${Deno.realPathSync(files[0])}`).pathname.replace(
          /\/$/,
          "",
        ),
      });
    console.log(lines.join("\n"));
  } catch (error) {
    console.error(`compose_flags: ${(error as Error).message}`);
    Deno.exit(1);
  }
}
