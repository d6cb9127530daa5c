/**
 * `deno task soak`: thousands of mixed JavaScript, TypeScript and Python runs from many tenants
 * at concurrency 16, every answer checked against what its request asked for, while the
 * service's memory, file descriptors and processes are sampled. Fails (exit code 1) when a run
 * is lost or wrong, when memory or descriptors grow past warm-up, or when a zombie is left.
 *
 * Usage: `deno task soak [--runs=3000] [--concurrency=16] [--main=path/to/main.ts]`. Other
 * `FAAS_*` variables in the environment reach the service unchanged.
 *
 * @module
 */

import { descendants } from "./proc_tree.ts";
import type { RunningServer } from "./server_process.ts";
import { startService } from "./targets.ts";
import type { BenchLanguage } from "./programs.ts";

/** What a soak run is asked to do and what its answer must then be. */
interface Case {
  language: BenchLanguage;
  code: string;
  input?: unknown;
  timeout?: number;
  tenant?: string;
  /** Why the answer is wrong, or undefined when it is right. */
  judge(answer: Answer): string | undefined;
}

/** The parts of a 200 answer the judges read. */
interface Answer {
  output: { stdout: string; stderr: string; ret_val: string };
  metadata: { status: string; exit_code: number; truncated: boolean };
  error?: string | null;
}

/** One sample of the service's own process and its tree. */
interface Sample {
  /** Runs answered when sampled. */
  done: number;
  /** VmRSS of the service process, MiB. */
  rssMib: number;
  /** Open file descriptors of the service process. */
  fds: number;
  /** Live processes under the service. */
  processes: number;
  /** Zombie children of the service or of any process under it. */
  zombies: number;
  /** Sandboxes alive (`/health`), in the samples taken once idle. */
  sandboxes?: number;
}

/** The verdict of a soak. */
export interface SoakReport {
  runs: number;
  concurrency: number;
  elapsedMs: number;
  /** Runs by language and status. */
  counts: Record<string, number>;
  /** Wrong or lost runs, by what was wrong (first examples). */
  failures: string[];
  /** After warm-up, the most ever, and once idle at the end. */
  warm: Sample;
  peak: Sample;
  end: Sample;
  /** What failed the soak; empty when it passed. */
  problems: string[];
}

const LANGUAGES: BenchLanguage[] = ["javascript", "typescript", "python"];
const TENANTS = 24;
/** Share of the runs before the warm sample. */
const WARMUP_SHARE = 0.2;
/** RSS may end above its warm level by this share plus {@link RSS_SLACK_MIB}. */
const RSS_GROWTH = 0.25;
const RSS_SLACK_MIB = 48;
/**
 * File descriptors may end above their warm level by this many (HTTP keep-alive, timers), and by
 * one per sandbox more alive (its connection to the service): more tenants keep runners.
 */
const FD_SLACK = 8;

/** The `index`-th request of the mix: mostly plain runs, with errors, exits, timeouts, floods. */
export function soakCase(index: number, random: () => number): Case {
  const language = LANGUAGES[index % LANGUAGES.length];
  const py = language === "python";
  // Zipf-like: tenant k is picked with weight 1/k; a tenth of runs have no tenant.
  const tenant = random() < 0.1 ? undefined : `soak-${zipf(random, TENANTS)}`;
  const token = `t${index}-${Math.floor(random() * 1e9).toString(36)}`;
  const roll = random();
  const base = { language, tenant };
  if (roll < 0.72) {
    return {
      ...base,
      input: { n: index, token },
      code: py
        ? "print(input['token'])\ninput['n'] * 2"
        : "console.log(input.token); return input.n * 2;",
      judge: (a) =>
        expect(a, "success", { stdout: token + "\n", retVal: String(index * 2), stderr: "" }),
    };
  }
  if (roll < 0.82) {
    return {
      ...base,
      code: py
        ? `raise ValueError(${JSON.stringify(token)})`
        : `throw new Error(${JSON.stringify(token)});`,
      judge: (a) => expect(a, "error", { stderrHas: token }),
    };
  }
  if (roll < 0.88) {
    return {
      ...base,
      code: py ? "import sys\nprint('bye')\nsys.exit(3)" : "console.log('bye'); process.exit(3);",
      judge: (a) => expect(a, "error", { stdout: "bye\n", exitCode: 3 }),
    };
  }
  if (roll < 0.92) {
    // Whether it printed before its timeout depends on the machine's load; if it did, the
    // answer keeps it.
    return {
      ...base,
      code: py ? "print('x')\nwhile True: pass" : "console.log('x'); while (true) {}",
      timeout: 1000,
      judge: (a) => expect(a, "timeout", { stdoutIn: ["", "x\n"] }),
    };
  }
  if (roll < 0.96) {
    // Past the 1 MiB cap: the head and the tail are kept, the result still comes back.
    const flood = py
      ? `for i in range(40000): print('line %d of the flood ......' % i)\nprint(${
        JSON.stringify(token)
      })\n7`
      : `for (let i = 0; i < 40000; i++) console.log('line ' + i + ' of the flood ......');\nconsole.log(${
        JSON.stringify(token)
      });\nreturn 7;`;
    return {
      ...base,
      code: flood,
      judge: (a) =>
        expect(a, "success", { stdoutEnds: token + "\n", retVal: "7", truncated: true }),
    };
  }
  if (roll < 0.98) {
    return {
      ...base,
      code: py ? "def f(:\n  pass" : "const = 1;",
      judge: (a) => expect(a, "error", { stderrHas: "SyntaxError" }),
    };
  }
  return {
    ...base,
    code: py
      ? "a = []\nwhile True: a.append(bytearray(32 * 1024 * 1024))"
      : "const a = []; while (true) a.push(new Array(1e6).fill(1));",
    timeout: 20_000,
    judge: (a) => expect(a, "memory_limit", {}),
  };
}

/** Picks 1..n with weight 1/k. */
function zipf(random: () => number, n: number): number {
  let total = 0;
  for (let k = 1; k <= n; k++) total += 1 / k;
  let pick = random() * total;
  for (let k = 1; k <= n; k++) {
    pick -= 1 / k;
    if (pick <= 0) return k;
  }
  return n;
}

function expect(
  answer: Answer,
  status: string,
  want: {
    stdout?: string;
    stdoutIn?: string[];
    stdoutEnds?: string;
    stderr?: string;
    stderrHas?: string;
    retVal?: string;
    exitCode?: number;
    truncated?: boolean;
  },
): string | undefined {
  const { output, metadata } = answer;
  const wrong: string[] = [];
  if (metadata.status !== status) wrong.push(`status ${metadata.status}, not ${status}`);
  if (want.stdout !== undefined && output.stdout !== want.stdout) wrong.push("stdout");
  if (want.stdoutIn !== undefined && !want.stdoutIn.includes(output.stdout)) wrong.push("stdout");
  if (want.stdoutEnds !== undefined && !output.stdout.endsWith(want.stdoutEnds)) {
    wrong.push("stdout's tail");
  }
  if (want.stderr !== undefined && output.stderr !== want.stderr) wrong.push("stderr");
  if (want.stderrHas !== undefined && !output.stderr.includes(want.stderrHas)) wrong.push("stderr");
  if (want.retVal !== undefined && output.ret_val !== want.retVal) wrong.push("ret_val");
  if (want.exitCode !== undefined && metadata.exit_code !== want.exitCode) wrong.push("exit_code");
  if (want.truncated !== undefined && metadata.truncated !== want.truncated) {
    wrong.push("truncated");
  }
  return wrong.length ? wrong.join(", ") : undefined;
}

/** Samples the service process: memory, descriptors, processes under it and zombies. */
export function sample(pid: number, done: number): Sample {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
  let fds = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) fds++;
  const family = new Set([pid, ...descendants(pid)]);
  let zombies = 0;
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (state === "Z" && family.has(Number(ppid))) zombies++;
    } catch {
      // exited while we looked
    }
  }
  return { done, rssMib: rssKb / 1024, fds, processes: family.size - 1, zombies };
}

/** A seeded generator, so a failing soak can be replayed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Soaks the running service at `server` and judges it. */
export async function soak(
  server: RunningServer,
  options: { runs: number; concurrency: number; seed?: number; log?: (line: string) => void },
): Promise<SoakReport> {
  const { runs, concurrency } = options;
  const log = options.log ?? (() => {});
  const random = mulberry32(options.seed ?? 1);
  const cases = Array.from({ length: runs }, (_, index) => soakCase(index, random));
  const counts: Record<string, number> = {};
  const failures: string[] = [];
  const samples: Sample[] = [];
  let failed = 0;
  let done = 0;

  const send = async (c: Case): Promise<string | undefined> => {
    const response = await fetch(server.url + "/run_code", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        language: c.language,
        code: c.code,
        input: c.input,
        timeout: c.timeout ?? 10_000,
        ext: c.tenant ? { space_id: c.tenant } : undefined,
      }),
      signal: AbortSignal.timeout(120_000),
    });
    const text = await response.text();
    if (response.status !== 200) return `HTTP ${response.status}: ${text.slice(0, 200)}`;
    const answer = JSON.parse(text) as Answer;
    const key = `${c.language} ${answer.metadata.status}`;
    counts[key] = (counts[key] ?? 0) + 1;
    const wrong = c.judge(answer);
    if (!wrong) return undefined;
    // What tells why first: the error, the exit code, the start of stderr.
    const { metadata, error, output } = answer;
    const why = { error, exit_code: metadata.exit_code, stderr: output?.stderr?.slice(0, 300) };
    return `${wrong}: ${JSON.stringify(why)}`;
  };

  /** Sends cases[from, to) in a closed loop of `concurrency` clients. */
  const phase = async (from: number, to: number) => {
    let next = from;
    const client = async () => {
      while (next < to) {
        const index = next++;
        const problem = await send(cases[index]).catch((error) => `lost: ${error}`);
        if (problem) {
          failed++;
          if (failures.length < 20) {
            failures.push(`run ${index} (${cases[index].language}): ${problem}`);
          }
        }
        if (++done % 250 === 0) {
          samples.push(sample(server.pid, done));
          log(`${done}/${runs} answered, ${failed} wrong`);
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, client));
  };

  const started = performance.now();
  await phase(0, Math.floor(runs * WARMUP_SHARE));
  const warm = await idleSample(server, done);
  await phase(done, runs);
  const elapsedMs = performance.now() - started;
  const end = await idleSample(server, done);
  samples.push(warm, end);
  const peak: Sample = {
    done,
    rssMib: Math.max(...samples.map((s) => s.rssMib)),
    fds: Math.max(...samples.map((s) => s.fds)),
    processes: Math.max(...samples.map((s) => s.processes)),
    zombies: Math.max(...samples.map((s) => s.zombies)),
  };
  const problems: string[] = [];
  if (failed) problems.push(`${failed} of ${runs} runs lost or wrong`);
  const rssBound = warm.rssMib * (1 + RSS_GROWTH) + RSS_SLACK_MIB;
  if (end.rssMib > rssBound) {
    problems.push(
      `the service's RSS grew from ${warm.rssMib.toFixed(0)} to ${
        end.rssMib.toFixed(0)
      } MiB (bound ${rssBound.toFixed(0)})`,
    );
  }
  const moreSandboxes = Math.max(0, (end.sandboxes ?? 0) - (warm.sandboxes ?? 0));
  if (end.fds > warm.fds + FD_SLACK + moreSandboxes) {
    problems.push(
      `open descriptors grew from ${warm.fds} to ${end.fds} ` +
        `(sandboxes alive: ${warm.sandboxes} then ${end.sandboxes})`,
    );
  }
  if (end.zombies > 0) problems.push(`${end.zombies} zombie processes once idle`);
  return { runs, concurrency, elapsedMs, counts, failures, warm, peak, end, problems };
}

/**
 * A sample once nothing runs and no sandbox is booting (or after 30 s): mid-run counts include
 * the descriptors and processes of runs in flight.
 */
async function idleSample(server: RunningServer, done: number): Promise<Sample> {
  const deadline = performance.now() + 30_000;
  let sandboxes: number | undefined;
  while (performance.now() < deadline) {
    const health = await fetch(server.url + "/health").then((r) => r.json()).catch(() => null);
    const pools = Object.values(health?.pool?.languages ?? {}) as PoolCounts[];
    sandboxes = health?.pool?.totalInstances;
    const idle = health?.scheduler?.runningTasks === 0 &&
      pools.every((pool) => pool.totalInstances === pool.idleInstances);
    if (idle) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { ...sample(server.pid, done), sandboxes };
}

/** Instance counts of one language in `/health`. */
interface PoolCounts {
  totalInstances: number;
  idleInstances: number;
}

function flag(name: string): string | undefined {
  const prefix = `--${name}=`;
  return Deno.args.find((arg) => arg.startsWith(prefix))?.slice(prefix.length);
}

function renderReport(report: SoakReport): string {
  const row = (name: string, s: Sample) =>
    `| ${name} | ${s.done} | ${s.rssMib.toFixed(0)} | ${s.fds} | ${s.processes} | ${s.zombies} | ${
      s.sandboxes ?? "–"
    } |`;
  const counts = Object.entries(report.counts).sort().map(([key, n]) => `${key}: ${n}`);
  return [
    `soak: ${report.runs} runs at concurrency ${report.concurrency} in ${
      (report.elapsedMs / 1000).toFixed(0)
    } s (${(report.runs / report.elapsedMs * 1000).toFixed(1)} runs/s)`,
    `answers: ${counts.join(", ")}`,
    "",
    "| when | runs answered | RSS MiB | fds | processes | zombies | sandboxes |",
    "|---|---|---|---|---|---|---|",
    row("after warm-up", report.warm),
    row("most seen", report.peak),
    row("end, idle", report.end),
    "",
    ...report.failures,
    report.problems.length ? `FAILED: ${report.problems.join("; ")}` : "passed",
  ].join("\n");
}

if (import.meta.main) {
  const runs = Number(flag("runs") ?? 3000);
  const concurrency = Number(flag("concurrency") ?? 16);
  const main = flag("main") ?? new URL("../main.ts", import.meta.url).pathname;
  const { server } = await startService(main, {
    languages: LANGUAGES,
    env: { FAAS_MAX_INSTANCES: String(concurrency), ...Deno.env.toObject() },
    notes: [],
  });
  let report: SoakReport;
  try {
    report = await soak(server, { runs, concurrency, log: (line) => console.error(line) });
  } finally {
    const stopped = await server.stop();
    if (stopped.leftovers) console.error(`${stopped.leftovers} processes outlived the service`);
  }
  console.log(renderReport(report));
  Deno.exit(report.problems.length ? 1 : 0);
}
