/**
 * Probes which OS confinement layers work on this host for JS runners, and names every
 * active layer for `/health`.
 *
 * @module
 */

import type { RunnerLayers } from "./runner_command.ts";

/** Layers that are always active: a process per tenant, a clean env, a private temp dir. */
const BASE_LAYERS = {
  process: true,
  clean_env: true,
  private_tmp: true,
} as const;

/** Tries each wrapper with `true` as the program and keeps those that work. */
export async function probeLayers(probeUid: number): Promise<RunnerLayers> {
  const [rlimit, netns, uid] = await Promise.all([
    works("prlimit", ["--data=1073741824:1073741824", "--", "true"]),
    works("unshare", ["--net", "--", "true"]),
    Deno.uid() === 0
      ? works("setpriv", [
        `--reuid=${probeUid}`,
        `--regid=${probeUid}`,
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
        "true",
      ])
      : Promise.resolve(false),
  ]);
  return { rlimit, netns, uid };
}

/**
 * The isolation map reported in `info().isolation`. User code runs either in a worker with no
 * permissions, or on a runner thread whose permissions were all revoked (`"inline"`).
 */
export function describeLayers(
  layers: RunnerLayers,
  mode: "worker" | "inline",
): Record<string, boolean> {
  return {
    ...BASE_LAYERS,
    no_permissions_worker: mode === "worker",
    revoked_permissions: mode === "inline",
    rlimit: layers.rlimit,
    netns: layers.netns,
    uid: layers.uid,
  };
}

async function works(command: string, args: string[]): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(command, {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}
