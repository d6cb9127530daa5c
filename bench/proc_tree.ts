/**
 * Memory and CPU time of a process and all its descendants, read from Linux `/proc`.
 *
 * A sandbox service is more than its own process: runner processes and fork servers count.
 * Descendants are found by walking parent ids (`/proc/<pid>/stat`), which still links
 * processes that started their own session or process group.
 *
 * @module
 */

/** Resident memory of a process tree at one instant. */
export interface TreeMemory {
  /** Sum of `VmRSS` over the root and its descendants, in bytes. */
  rssBytes: number;
  /** Processes counted (root included). */
  processes: number;
}

/** Parent id of every live (non-zombie) process, read from `/proc/<pid>/stat`. */
function parentIds(): Map<number, number> {
  const parents = new Map<number, number>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
    } catch {
      continue; // exited while we looked
    }
    // The command name may hold spaces or parentheses: fields start after the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z") continue; // a zombie is no longer a live process
    parents.set(Number(entry.name), Number(fields[1]));
  }
  return parents;
}

/** Ids of `root`'s live descendants (children, grandchildren, ...), root excluded. */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const [pid, ppid] of parentIds()) {
    const list = children.get(ppid);
    if (list) list.push(pid);
    else children.set(ppid, [pid]);
  }
  const found: number[] = [];
  const stack = [root];
  while (stack.length) {
    for (const child of children.get(stack.pop()!) ?? []) {
      found.push(child);
      stack.push(child);
    }
  }
  return found;
}

/**
 * Start time of a process (clock ticks since boot, `/proc/<pid>/stat` field 22), or
 * `undefined` when it is gone or a zombie: with its pid it names one live process even after
 * pid reuse.
 */
export function startTimeOf(pid: number): string | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[0] === "Z" ? undefined : fields[19];
  } catch {
    return undefined;
  }
}

/** `VmRSS` of one process in bytes; 0 when it is gone or has no user memory (a zombie). */
function rssOf(pid: number): number {
  let status: string;
  try {
    status = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return 0;
  }
  const match = status.match(/^VmRSS:\s+(\d+)\s+kB$/m);
  return match ? Number(match[1]) * 1024 : 0;
}

/** Resident memory of `root` and its descendants now; zero processes when root is gone. */
export function treeMemory(root: number): TreeMemory {
  const rootRss = rssOf(root);
  let exists = true;
  try {
    Deno.statSync(`/proc/${root}`);
  } catch {
    exists = false;
  }
  if (!exists) return { rssBytes: 0, processes: 0 };
  let rssBytes = rootRss;
  let processes = 1;
  for (const pid of descendants(root)) {
    rssBytes += rssOf(pid);
    processes++;
  }
  return { rssBytes, processes };
}

/** Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux). */
const TICKS_PER_S = 100;

/**
 * CPU time of one process so far, in ms: its own (user and system) and that of the children
 * it reaped; 0 when it is gone.
 */
function cpuMsOf(pid: number): number {
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return 0;
  }
  // Fields from the state (field 3) on: utime, stime, cutime, cstime are fields 14-17.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i] ?? 0), 0);
  return (ticks * 1000) / TICKS_PER_S;
}

/**
 * CPU time used so far by `root` and its live descendants, in ms (10 ms resolution). Work of
 * a process that exited counts once its parent in the tree reaped it.
 */
export function treeCpuMs(root: number): number {
  return [root, ...descendants(root)].reduce((sum, pid) => sum + cpuMsOf(pid), 0);
}

/** Peak and last sample of a {@link MemorySampler}. */
export interface MemoryPeak {
  /** Largest tree RSS seen, in bytes. */
  peakRssBytes: number;
  /** Most processes seen in the tree at once. */
  peakProcesses: number;
  /** Samples taken. */
  samples: number;
}

/** Samples a process tree's memory at a fixed interval until stopped, keeping the peak. */
export class MemorySampler {
  #root: number;
  #timer: ReturnType<typeof setInterval>;
  #peak: MemoryPeak = { peakRssBytes: 0, peakProcesses: 0, samples: 0 };

  /** Starts sampling `root` every `intervalMs` (default 200 ms), once right away. */
  constructor(root: number, intervalMs = 200) {
    this.#root = root;
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), intervalMs);
  }

  #sample(): void {
    const now = treeMemory(this.#root);
    this.#peak.samples++;
    this.#peak.peakRssBytes = Math.max(this.#peak.peakRssBytes, now.rssBytes);
    this.#peak.peakProcesses = Math.max(this.#peak.peakProcesses, now.processes);
  }

  /** Stops sampling (after one last sample) and returns the peak. */
  stop(): MemoryPeak {
    clearInterval(this.#timer);
    this.#sample();
    return { ...this.#peak };
  }
}
