/**
 * A runtime's work directory: a private dir under the system temp dir holding copies of the
 * files its sandboxes need (runner modules, the jail's Python packages), the socket they
 * connect to and the empty mount point of their roots. Copies, because the project may sit
 * where no sandbox uid may enter (a checkout under a root-only home dir), and because a
 * compiled binary carries its files embedded, where no other program can read them.
 *
 * Layout: `<dir>` (0711) with `files/` (0755, files 0644), `run/` (0711, the socket),
 * `root/` (0755, empty) and `.lock`, which the jailer holds while it lives (a starting jailer
 * removes the dirs whose lock no one holds: see faas_jail/workdirs.py).
 *
 * @module
 */

/** The Python package of the jail, file by file (embedded as such in a compiled binary). */
export const JAIL_PACKAGE: readonly URL[] = [
  "__init__.py",
  "__main__.py",
  "jail.py",
  "layers.py",
  "seccomp.py",
  "slots.py",
  "workdirs.py",
].map((name) => new URL(`./faas_jail/${name}`, import.meta.url));

/** A runtime's work directory. */
export interface Workdir {
  /** The dir itself. */
  dir: string;
  /** Copies of the sandbox's files. */
  files: string;
  /** The host's socket dir. */
  runDir: string;
  /** Empty dir for the sandboxes' roots. */
  mountPoint: string;
}

/** Makes a work dir named `faas-<label>-<random>` under the temp dir. */
export async function createWorkdir(label: string): Promise<Workdir> {
  const dir = await Deno.makeTempDir({ prefix: `faas-${label}-` });
  await Deno.chmod(dir, 0o711);
  const workdir = {
    dir,
    files: `${dir}/files`,
    runDir: `${dir}/run`,
    mountPoint: `${dir}/root`,
  };
  await Deno.mkdir(workdir.files, { mode: 0o755 });
  await Deno.mkdir(workdir.runDir, { mode: 0o711 });
  await Deno.mkdir(workdir.mountPoint, { mode: 0o755 });
  for (const path of [workdir.files, workdir.runDir, workdir.mountPoint]) {
    await Deno.chmod(path, path === workdir.runDir ? 0o711 : 0o755);
  }
  return workdir;
}

/** Copies `sources` into `<files>/<subdir>/`, readable by every uid. */
export async function copyFiles(
  workdir: Workdir,
  subdir: string,
  sources: readonly URL[],
): Promise<string> {
  const target = `${workdir.files}/${subdir}`;
  await Deno.mkdir(target, { recursive: true, mode: 0o755 });
  await Deno.chmod(target, 0o755);
  for (const source of sources) {
    const name = source.pathname.slice(source.pathname.lastIndexOf("/") + 1);
    await Deno.writeFile(`${target}/${name}`, await Deno.readFile(source), { mode: 0o644 });
    await Deno.chmod(`${target}/${name}`, 0o644);
  }
  return target;
}

/** Removes the work dir (its mounts live in sandboxes' own namespaces, never here). */
export async function removeWorkdir(workdir: Workdir): Promise<void> {
  await Deno.remove(workdir.dir, { recursive: true }).catch(() => {});
}

/** True when every uid may reach and execute `path` (each dir above it searchable by all). */
export function everyoneCanExecute(path: string): boolean {
  try {
    if (((Deno.statSync(path).mode ?? 0) & 0o001) === 0) return false;
    const parts = path.split("/").filter(Boolean);
    for (let i = parts.length - 1; i >= 1; i--) {
      const dir = "/" + parts.slice(0, i).join("/");
      if (((Deno.statSync(dir).mode ?? 0) & 0o001) === 0) return false;
    }
    return true;
  } catch {
    return false;
  }
}
