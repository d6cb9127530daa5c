/**
 * A CPU cgroup of its own for each target, of the weight of one ordinary process, so that
 * every target gets the same share of a machine that other work keeps busy.
 *
 * Without it, targets are not treated alike: the service's sandboxes sit in a cgroup subtree
 * of their own (the jail's), which the kernel weighs as one process however many runs it
 * holds, while a baseline's processes each weigh as much as that whole subtree. On a shared
 * machine with a few busy neighbours that alone gives a baseline several times the CPU the
 * service's runs get. In a group each, the service (its HTTP process and its jail) and each
 * baseline compete as one process each, as they would in a container of their own.
 *
 * cgroup v1 (the `cpu` controller) and v2 (where the harness's own cgroup already lets its
 * children use `cpu`) are supported; elsewhere, or without the right to make a cgroup, there
 * is no group and {@link CpuGroup.create} says why.
 *
 * @module
 */

/** Where the cgroups are mounted. */
const CGROUP_ROOT = "/sys/fs/cgroup";

/** A CPU cgroup made for one target. */
export class CpuGroup {
  /** Its directory. */
  readonly path: string;
  /** The file a process is written to, to join it. */
  readonly procs: string;

  private constructor(path: string) {
    this.path = path;
    this.procs = `${path}/cgroup.procs`;
  }

  /**
   * Makes a group named after `name` beside (v1) or under (v2) the harness's own cgroup, with
   * the default weight; a string saying why when it cannot.
   */
  static create(name: string): CpuGroup | string {
    let lines: string[];
    try {
      lines = Deno.readTextFileSync("/proc/self/cgroup").trim().split("\n");
    } catch (error) {
      return `cannot read /proc/self/cgroup: ${error}`;
    }
    const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
    const leaf = `faas-bench-${Deno.pid}-${slug}`;
    const v1 = lines.map((line) => line.split(":")).find(([, controllers]) =>
      controllers.split(",").includes("cpu")
    );
    try {
      if (v1) {
        const [, controllers, own] = v1;
        const mount = [`${CGROUP_ROOT}/${controllers}`, `${CGROUP_ROOT}/cpu`].find(isDir);
        if (!mount) return `the cgroup v1 cpu controller is not mounted under ${CGROUP_ROOT}`;
        const path = `${mount}${own.replace(/\/$/, "")}/${leaf}`;
        Deno.mkdirSync(path);
        Deno.writeTextFileSync(`${path}/cpu.shares`, "1024");
        return new CpuGroup(path);
      }
      const own = lines.find((line) => line.startsWith("0::"))?.slice(3);
      if (own === undefined) return "no cpu cgroup controller in /proc/self/cgroup";
      const parent = `${CGROUP_ROOT}${own.replace(/\/$/, "")}`;
      const enabled = Deno.readTextFileSync(`${parent}/cgroup.subtree_control`).split(/\s+/);
      if (!enabled.includes("cpu")) {
        return `the cgroup v2 controller cpu is not enabled for the children of ${parent}`;
      }
      const path = `${parent}/${leaf}`;
      Deno.mkdirSync(path);
      Deno.writeTextFileSync(`${path}/cpu.weight`, "100");
      return new CpuGroup(path);
    } catch (error) {
      return `cannot make a cpu cgroup: ${error instanceof Error ? error.message : error}`;
    }
  }

  /**
   * `command` and `args` as a command that joins this group before it becomes `command`
   * (through `sh`, which execs it: the process keeps its pid, and all it starts is in the
   * group from its first instruction).
   */
  wrap(command: string, args: readonly string[]): { command: string; args: string[] } {
    return {
      command: "/bin/sh",
      args: ["-c", 'echo $$ > "$0" && exec "$@"', this.procs, command, ...args],
    };
  }

  /** Moves a running process (all its threads) into the group. */
  join(pid: number): void {
    Deno.writeTextFileSync(this.procs, String(pid));
  }

  /**
   * Removes the group and any group made inside it (the kernel refuses one that still holds
   * a process); false when something was left.
   */
  remove(): boolean {
    return removeTree(this.path);
  }
}

function isDir(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

function removeTree(path: string): boolean {
  let clean = true;
  try {
    for (const entry of Deno.readDirSync(path)) {
      if (entry.isDirectory) clean = removeTree(`${path}/${entry.name}`) && clean;
    }
    Deno.removeSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) clean = false;
  }
  return clean;
}
