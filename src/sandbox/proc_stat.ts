/**
 * A sandbox process as the kernel sees it (`/proc/<pid>/stat`): whether it is stopped, and the
 * CPU time it used. The host reads it to find sandboxes that cannot serve a run (stopped by a
 * signal) or that spin while idle.
 *
 * @module
 */

/** Kernel clock ticks per ms of CPU in /proc (USER_HZ is 100 on Linux). */
const TICKS_PER_MS = 0.1;

/** What {@link procStat} reads. */
export interface ProcStat {
  /** One-letter state: `R` running, `S` sleeping, `T` stopped, `Z` zombie, ... */
  state: string;
  /** CPU time used so far, all threads, in ms. */
  cpuMs: number;
}

/** The state and CPU time of `pid`, or `undefined` once it is gone. */
export function procStat(pid: number): ProcStat | undefined {
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  // The command name may hold spaces or parentheses: fields start after the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { state: fields[0], cpuMs: (Number(fields[11]) + Number(fields[12])) / TICKS_PER_MS };
}

/** True when `pid` is stopped (SIGSTOP, or a tracer holds it): it cannot take a run now. */
export function isStopped(pid: number): boolean {
  const state = procStat(pid)?.state;
  return state === "T" || state === "t";
}
