/**
 * How busy the machine's CPUs are, sampled from `/proc/stat`: the pool boots spares only while
 * some CPU is idle. A count of busy sandboxes cannot tell: under a closed loop of short runs,
 * most runs are in the HTTP edge, the syntax check or the client at any instant, so the count
 * dips below the cores while every core is busy, and each spare booted then takes CPU from the
 * runs under way.
 *
 * @module
 */

/** How often the share is sampled, in ms. */
const SAMPLE_MS = 250;

interface Sample {
  busy: number;
  total: number;
}

/** Reads the CPU line of `/proc/stat`; `undefined` where there is none (not Linux). */
function readSample(): Sample | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/stat");
  } catch {
    return undefined;
  }
  // cpu user nice system idle iowait irq softirq steal ...
  const fields = text.slice(0, text.indexOf("\n")).trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((sum, value) => sum + value, 0);
  const idle = fields[3] + (fields[4] ?? 0);
  return { busy: total - idle, total };
}

/** The machine's busy CPU share over the last sampling interval. */
export class MachineLoad {
  #last = readSample();
  #share = 0;
  #timer: ReturnType<typeof setInterval>;

  /** Starts sampling; call {@link MachineLoad.stop} when done. */
  constructor() {
    this.#timer = setInterval(() => this.#sample(), SAMPLE_MS);
    Deno.unrefTimer(this.#timer);
  }

  /** Busy share of all CPUs (0..1) over the last interval; 0 where it cannot be read. */
  get busyShare(): number {
    return this.#share;
  }

  /** Stops sampling. */
  stop(): void {
    clearInterval(this.#timer);
  }

  #sample(): void {
    const next = readSample();
    if (next && this.#last && next.total > this.#last.total) {
      this.#share = (next.busy - this.#last.busy) / (next.total - this.#last.total);
    }
    this.#last = next;
  }
}
