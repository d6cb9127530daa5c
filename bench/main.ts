/**
 * `deno task bench`: measures the service side by side with its baselines and its floors in
 * one run and prints markdown tables; writes every figure with its ratios as JSON.
 *
 * Usage: `deno task bench [--quick] [--languages=js,ts,py] [--scenarios=...] [--out=path]
 * [--pool-size=N] [--max-instances=N] [--main=path/to/main.ts]`. Other `FAAS_*` variables in
 * the environment reach the service unchanged.
 *
 * @module
 */

import { measureBootFloor } from "./boot_floor.ts";
import { CpuGroup } from "./cpu_group.ts";
import { type LoadResult, runLoad } from "./load.ts";
import { MemorySampler, treeCpuMs, treeMemory } from "./proc_tree.ts";
import {
  type BenchLanguage,
  HOSTILE_STATUS,
  program,
  type ProgramKind,
  requestBody,
  type Tenancy,
} from "./programs.ts";
import {
  type BenchResults,
  type Figure,
  type FigureKey,
  makeFigure,
  type ReferenceValues,
  renderMarkdown,
  type Target,
} from "./report.ts";
import type { RunningServer, StopResult } from "./server_process.ts";
import {
  idleFor,
  readHealth,
  resolvePython,
  SPAWN_NAMES,
  type SpawnMode,
  startContextFloor,
  startFloor,
  startForkFloor,
  startService,
  startSpawnBaseline,
} from "./targets.ts";
import {
  HOSTILE_TENANTS,
  HOSTILE_TIMEOUT_MS,
  runHostileNeighbours,
  runZipfMix,
  ZIPF_MIX,
} from "./tenants.ts";

/** How many samples and how long each measurement takes. */
interface Plan {
  /**
   * Sequential samples per program: service, process-per-request baseline, floor; and the
   * longest one series may take, in ms, whatever its count.
   */
  sequential: { service: number; spawn: number; floor: number; warmup: number; maxMs: number };
  /** Concurrency levels of the throughput runs. */
  levels: number[];
  /**
   * Measured duration of one throughput run in ms, per target (`langFloor`: the warm-context
   * and fork floors at concurrency 16), and of the boot floor.
   */
  duration: {
    service: number;
    spawn: number;
    floor: number;
    langFloor: number;
    bootFloor: number;
  };
  /** Warm-up and measured duration of each run of the many-tenant scenarios, in ms. */
  tenants: { warmupMs: number; durationMs: number };
  /** Warm-up before each throughput run of the service, in ms. */
  warmupMs: number;
  /** Longest wait for the pool to fill, in ms. */
  poolWaitMs: number;
}

const FULL: Plan = {
  sequential: { service: 300, spawn: 40, floor: 300, warmup: 20, maxMs: 20_000 },
  levels: [1, 4, 16, 64],
  duration: { service: 4_000, spawn: 3_000, floor: 2_000, langFloor: 3_000, bootFloor: 3_000 },
  tenants: { warmupMs: 8_000, durationMs: 4_000 },
  warmupMs: 3_000,
  poolWaitMs: 30_000,
};

const QUICK: Plan = {
  sequential: { service: 50, spawn: 8, floor: 50, warmup: 5, maxMs: 1_500 },
  levels: [1, 16],
  duration: { service: 1_000, spawn: 700, floor: 300, langFloor: 1_000, bootFloor: 1_000 },
  tenants: { warmupMs: 500, durationMs: 1_500 },
  warmupMs: 200,
  poolWaitMs: 10_000,
};

const LANGUAGE_FLAGS: Record<string, BenchLanguage> = {
  js: "javascript",
  javascript: "javascript",
  ts: "typescript",
  typescript: "typescript",
  py: "python",
  python: "python",
  python3: "python",
};

/** The parts of a run that `--scenarios` can select (starting and memory always run). */
const SCENARIOS = ["recovery", "sequential", "throughput", "preload", "zipf", "hostile"] as const;

/** A selectable part of a run. */
type ScenarioName = typeof SCENARIOS[number];

interface Flags {
  quick: boolean;
  languages: BenchLanguage[];
  scenarios: ScenarioName[];
  out?: string;
  poolSize: number;
  maxInstances: number;
  main: string;
}

const USAGE = "usage: deno task bench [--quick] [--languages=js,ts,py] " +
  `[--scenarios=${SCENARIOS.join(",")}] [--out=path] [--pool-size=N] [--max-instances=N] ` +
  "[--main=path/to/main.ts]";

function integerFlag(name: string, value: string, min: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    throw new Error(
      `expected ${name} to be an integer of at least ${min}, got "${value}"\n${USAGE}`,
    );
  }
  return n;
}

function parseFlags(args: string[]): Flags {
  const env = (name: string) => Deno.env.get(name);
  const flags: Flags = {
    quick: false,
    languages: ["javascript", "typescript", "python"],
    scenarios: [...SCENARIOS],
    poolSize: integerFlag("FAAS_POOL_SIZE", env("FAAS_POOL_SIZE") ?? "10", 0),
    maxInstances: integerFlag("FAAS_MAX_INSTANCES", env("FAAS_MAX_INSTANCES") ?? "50", 1),
    main: new URL("../main.ts", import.meta.url).pathname,
  };
  for (const arg of args) {
    const [name, value] = arg.includes("=")
      ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]
      : [arg, undefined];
    if (name === "--quick" && value === undefined) flags.quick = true;
    else if (name === "--languages" && value) {
      flags.languages = [];
      for (const item of value.split(",")) {
        const language = LANGUAGE_FLAGS[item.trim().toLowerCase()];
        if (!language) {
          throw new Error(`expected --languages to list js, ts or py, got "${item}"\n${USAGE}`);
        }
        if (!flags.languages.includes(language)) flags.languages.push(language);
      }
    } else if (name === "--scenarios" && value) {
      flags.scenarios = [];
      for (const item of value.split(",")) {
        const scenario = SCENARIOS.find((known) => known === item.trim().toLowerCase());
        if (!scenario) {
          throw new Error(
            `expected --scenarios to list ${SCENARIOS.join(", ")}, got "${item}"\n${USAGE}`,
          );
        }
        if (!flags.scenarios.includes(scenario)) flags.scenarios.push(scenario);
      }
    } else if (name === "--out" && value) flags.out = value;
    else if (name === "--pool-size" && value) flags.poolSize = integerFlag(name, value, 0);
    else if (name === "--max-instances" && value) {
      flags.maxInstances = integerFlag(name, value, 1);
    } else if (name === "--main" && value) flags.main = value;
    else if (name === "--help" || name === "-h") {
      console.log(USAGE);
      Deno.exit(0);
    } else throw new Error(`unknown or incomplete flag "${arg}"\n${USAGE}`);
  }
  return flags;
}

const BENCH_START = performance.now();

function log(message: string): void {
  const elapsed = ((performance.now() - BENCH_START) / 1000).toFixed(1);
  console.error(`bench +${elapsed}s: ${message}`);
}

function fmt(value: number): string {
  return Number.isFinite(value) ? value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2) : "–";
}

/** The 1-minute load average: other work on the machine skews every figure of a run. */
function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
  } catch {
    return "unknown";
  }
}

function spawnModeFor(language: BenchLanguage): SpawnMode {
  return language === "python" ? "python3" : "deno-run";
}

/** Servers under test, keyed by role. */
interface Targets {
  service?: RunningServer;
  serviceLanguages: BenchLanguage[];
  floor?: RunningServer;
  spawn: Partial<Record<SpawnMode, RunningServer>>;
  /** The warm-context floor's processes (JS), one per core. */
  contextFloor: RunningServer[];
  /** The Python fork floor. */
  forkFloor?: RunningServer;
}

const CONTEXT_FLOOR = "warm-context floor";
const FORK_FLOOR = "python fork floor";

/** The floors' goals (see bench/README.md). */
const TARGETS = {
  /** JS one tenant c16 runs/s over the warm-context floor's. */
  contextRate: { of: "ratio", bound: "min", limit: 0.25 },
  /** JS new tenant per request c16 runs/s over the boot floor's boots/s. */
  bootRate: { of: "ratio", bound: "min", limit: 0.7 },
  /** Python sequential p50 over the fork floor's. */
  forkLatency: { of: "ratio", bound: "max", limit: 1.5 },
  /** Python c16 runs/s over the fork floor's. */
  forkRate: { of: "ratio", bound: "min", limit: 0.7 },
  /** Zipf mix runs/s over the one-tenant rate. */
  zipfRate: { of: "ratio", bound: "min", limit: 0.7 },
  /** Zipf mix p99, ms. */
  zipfP99: { of: "value", bound: "max", limit: 300 },
  /** Normal tenants' p90 beside hostile ones, ms. */
  hostileP90: { of: "value", bound: "max", limit: 1_000 },
  /** numpy evaluator p50 over a trivial run's, same service. */
  preloadLatency: { of: "ratio", bound: "max", limit: 2 },
} satisfies Record<string, Target>;

/** Peak process-tree memory per target, per language, while under load. */
type Peaks = Map<string, { rss: number; processes: number }>;

class Bench {
  readonly results: BenchResults;
  readonly targets: Targets = { serviceLanguages: [], spawn: {}, contextFloor: [] };
  /** The service's one-tenant evaluator runs at concurrency 16, per language. */
  readonly oneTenantC16: Partial<Record<BenchLanguage, LoadResult>> = {};
  readonly peaks: Peaks = new Map();
  serviceFirstRun: Partial<Record<BenchLanguage, number>> = {};
  #dead = new Set<RunningServer>();
  serviceFullPoolMs?: number;
  /** The service started with `FAAS_PYTHON_PRELOAD=numpy`, while it runs. */
  preloadService?: RunningServer;
  /** Boots/s of the boot floor; `null` when it could not be measured. */
  bootFloor?: number | null;

  constructor(readonly flags: Flags, readonly plan: Plan, serviceEnv: Record<string, string>) {
    this.results = {
      startedAt: new Date().toISOString(),
      mode: flags.quick ? "quick" : "full",
      machine: {
        cpus: navigator.hardwareConcurrency,
        deno: Deno.version.deno,
        v8: Deno.version.v8,
        os: `${Deno.build.os} ${Deno.osRelease()}`,
        loadAtStart: loadAverage(),
      },
      serviceEnv,
      notes: [],
      figures: [],
      runs: [],
    };
  }

  note(message: string): void {
    log(`note: ${message}`);
    this.results.notes.push(message);
  }

  add(figure: Figure): void {
    this.results.figures.push(figure);
  }

  /**
   * True while `server` runs; the first time it is found dead, notes it with its last output,
   * so later measurements skip it instead of counting refused connections.
   */
  alive(server: RunningServer | undefined): server is RunningServer {
    if (!server) return false;
    if (!server.hasExited()) return true;
    if (!this.#dead.has(server)) {
      this.#dead.add(server);
      this.note(
        `${server.name} exited during the run; its later figures are missing. Its last output:\n${
          server.outputTail().trim().slice(-1000)
        }`,
      );
    }
    return false;
  }

  /** One load run against a target, recorded raw, with the target's memory peak sampled. */
  async load(
    target: string,
    server: RunningServer,
    key: FigureKey,
    options: Parameters<typeof runLoad>[1],
  ): Promise<LoadResult> {
    const sampler = new MemorySampler(server.pid);
    const result = await runLoad(`${server.url}/run_code`, options);
    const peak = sampler.stop();
    const peakKey = `${target}|${key.language ?? ""}`;
    const before = this.peaks.get(peakKey) ?? { rss: 0, processes: 0 };
    this.peaks.set(peakKey, {
      rss: Math.max(before.rss, peak.peakRssBytes),
      processes: Math.max(before.processes, peak.peakProcesses),
    });
    return this.record(target, key, result);
  }

  /** Keeps a load run's summary in the results and logs it. */
  record(target: string, key: FigureKey, result: LoadResult): LoadResult {
    this.results.runs.push({ target, key, summary: result });
    const errors = result.errors
      ? ` errors ${result.errors} ${JSON.stringify(result.errorKinds)}, first: ${
        JSON.stringify(result.errorSamples)
      }`
      : "";
    log(
      `${target} ${key.scenario} ${key.language ?? ""} ${key.program ?? ""} ` +
        `c=${result.concurrency}${key.tenancy ? ` tenant=${key.tenancy}` : ""}: ` +
        `${result.ok} ok, p50 ${fmt(result.p50)} ms, p99 ${fmt(result.p99)} ms, ` +
        `${fmt(result.throughput)}/s${errors}`,
    );
    return result;
  }

  /** Starts the baselines the selected languages need, timing each start and first answer. */
  async startBaselines(python: string): Promise<Record<string, number>> {
    const firstRun: Record<string, number> = {};
    try {
      const floor = await startFloor();
      this.targets.floor = floor;
      await runLoad(`${floor.url}/run_code`, {
        concurrency: 1,
        requests: 1,
        body: requestBody(program("javascript", "trivial"), "none"),
      });
      firstRun.floor = performance.now() - floor.spawnedAt;
      log(`no-op floor up in ${fmt(floor.startMs)} ms (pid ${floor.pid})`);
    } catch (error) {
      this.note(`the no-op floor did not start: ${error instanceof Error ? error.message : error}`);
    }
    const modes = new Set(this.flags.languages.map(spawnModeFor));
    for (const mode of modes) {
      try {
        const server = await startSpawnBaseline(mode, { python });
        this.targets.spawn[mode] = server;
        const language = this.flags.languages.find((l) => spawnModeFor(l) === mode)!;
        const first = await runLoad(`${server.url}/run_code`, {
          concurrency: 1,
          requests: 1,
          body: requestBody(program(language, "trivial"), "none"),
          check: program(language, "trivial").check,
        });
        if (first.errors) {
          this.note(
            `${SPAWN_NAMES[mode]}: first run failed: ${JSON.stringify(first.errorSamples)}`,
          );
        } else firstRun[mode] = performance.now() - server.spawnedAt;
        log(`${SPAWN_NAMES[mode]} up in ${fmt(server.startMs)} ms (pid ${server.pid})`);
      } catch (error) {
        this.note(
          `${SPAWN_NAMES[mode]} did not start: ${error instanceof Error ? error.message : error}`,
        );
      }
    }
    if (this.flags.languages.includes("javascript")) {
      try {
        this.targets.contextFloor = await startContextFloor();
        log(`${CONTEXT_FLOOR} up: ${this.targets.contextFloor.length} processes`);
      } catch (error) {
        this.note(
          `the ${CONTEXT_FLOOR} did not start: ${error instanceof Error ? error.message : error}`,
        );
      }
    }
    if (this.flags.languages.includes("python")) {
      try {
        this.targets.forkFloor = await startForkFloor({ python });
        log(`${FORK_FLOOR} up (pid ${this.targets.forkFloor.pid})`);
      } catch (error) {
        this.note(
          `the ${FORK_FLOOR} did not start: ${error instanceof Error ? error.message : error}`,
        );
      }
    }
    if (!this.flags.quick && modes.has("deno-run")) {
      try {
        this.targets.spawn["deno-eval"] = await startSpawnBaseline("deno-eval", { python });
      } catch (error) {
        this.note(
          `deno eval baseline did not start: ${error instanceof Error ? error.message : error}`,
        );
      }
    }
    return firstRun;
  }

  /** Starts the service: cold start to /health, to the first run per language, to a full pool. */
  async startService(env: Record<string, string>): Promise<void> {
    try {
      await Deno.stat(this.flags.main);
    } catch {
      this.note(
        `${this.flags.main} does not exist yet: the service was not measured, only the baselines`,
      );
      return;
    }
    let started;
    try {
      started = await startService(this.flags.main, {
        languages: this.flags.languages,
        env,
        notes: this.results.notes,
      });
    } catch (error) {
      this.note(
        `the service failed to start, only the baselines were measured: ${
          error instanceof Error ? error.message : error
        }`,
      );
      return;
    }
    const { server, languages } = started;
    this.targets.service = server;
    this.targets.serviceLanguages = languages;
    log(
      `service up in ${fmt(server.startMs)} ms (pid ${server.pid}), languages ${
        languages.join(", ")
      }`,
    );
    // First answers, all languages at once, anonymous so no sandbox stays bound to a tenant.
    const firstRuns = await Promise.all(languages.map(async (language) => {
      const prog = program(language, "trivial");
      const result = await runLoad(`${server.url}/run_code`, {
        concurrency: 1,
        requests: 1,
        body: requestBody(prog, "none"),
        check: prog.check,
      });
      return { language, result, at: performance.now() - server.spawnedAt };
    }));
    for (const { language, result, at } of firstRuns) {
      if (result.errors) {
        this.note(
          `service: first ${language} run failed: ${JSON.stringify(result.errorSamples)}`,
        );
      } else this.serviceFirstRun[language] = at;
    }
    const full = await this.waitForFullPool(languages);
    if (full) this.serviceFullPoolMs = performance.now() - server.spawnedAt;
  }

  /**
   * Waits until the service does no work of its own (its process tree used under 10% of a
   * core over the last 500 ms; booting spares after a load, say), so that what is measured
   * next does not share the cores with it. Gives up after `poolWaitMs / 2`, with a note.
   */
  async settle(): Promise<void> {
    const server = this.targets.service;
    if (!this.alive(server)) return;
    const windowMs = 500;
    const deadline = performance.now() + this.plan.poolWaitMs / 2;
    let used = treeCpuMs(server.pid);
    while (true) {
      // CPU time has no event to await: sample it.
      await new Promise((resolve) => setTimeout(resolve, windowMs));
      const now = treeCpuMs(server.pid);
      if (now - used < windowMs * 0.1) return;
      used = now;
      if (performance.now() > deadline) {
        this.note(
          `the service was still busy ${this.plan.poolWaitMs / 2} ms after a load ended; ` +
            "the baseline measured next shared the cores with it",
        );
        return;
      }
    }
  }

  /** Says in the results whether every target got a CPU cgroup of its own (cpu_group.ts). */
  noteCpuGroups(): void {
    const { service, floor, spawn, contextFloor, forkFloor } = this.targets;
    const servers = [service, floor, ...Object.values(spawn), ...contextFloor, forkFloor]
      .filter((server): server is RunningServer => server !== undefined);
    const problems = servers.flatMap((server) =>
      server.cpuGroup && "problem" in server.cpuGroup
        ? [`${server.name}: ${server.cpuGroup.problem}`]
        : []
    );
    this.results.machine.cpuGroups = problems.length ? "not all targets" : "one per target";
    if (problems.length) {
      this.note(`some targets run without a CPU cgroup of their own: ${problems.join("; ")}`);
    }
  }

  /** Cold-start figures of every target that started. */
  coldStartFigures(baselineFirstRun: Record<string, number>): void {
    const { service, floor } = this.targets;
    this.add(makeFigure({ scenario: "cold_start", metric: "to_health" }, {
      unit: "ms",
      better: "lower",
      service: service?.startMs,
      floor: floor?.startMs,
    }));
    for (const language of this.flags.languages) {
      const mode = spawnModeFor(language);
      this.add(makeFigure({ scenario: "cold_start", metric: "to_first_run", language }, {
        unit: "ms",
        better: "lower",
        service: this.serviceFirstRun[language],
        spawn: baselineFirstRun[mode],
        spawnName: SPAWN_NAMES[mode],
        floor: baselineFirstRun.floor,
      }));
    }
    this.add(makeFigure({ scenario: "cold_start", metric: "to_full_pool" }, {
      unit: "ms",
      better: "lower",
      service: this.serviceFullPoolMs,
    }));
  }

  /**
   * Waits until every runtime of `server` (default: the service) has `poolSize` idle
   * sandboxes; false when it timed out.
   */
  async waitForFullPool(
    languages: BenchLanguage[],
    server: RunningServer = this.targets.service!,
  ): Promise<boolean> {
    const deadline = performance.now() + this.plan.poolWaitMs;
    let last = "";
    while (performance.now() < deadline) {
      if (!this.alive(server)) return false;
      const health = await readHealth(server);
      const idle = languages.map((language) => idleFor(health, language));
      last = languages.map((l, i) => `${l} ${idle[i] ?? "?"}`).join(", ");
      if (idle.every((n) => n !== undefined && n >= this.flags.poolSize)) return true;
      // The pool has no event the harness could await from outside: poll /health.
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    this.note(
      `the pool did not reach ${this.flags.poolSize} idle sandboxes within ${this.plan.poolWaitMs} ms (idle: ${last})`,
    );
    return false;
  }

  /** Idle process-tree memory of every target. */
  idleMemory(): void {
    const rss = (server?: RunningServer) =>
      server ? treeMemory(server.pid).rssBytes / 2 ** 20 : null;
    const spawn = this.targets.spawn["deno-run"] ?? this.targets.spawn.python3;
    this.add(makeFigure({ scenario: "memory", metric: "rss_idle" }, {
      unit: "MiB",
      better: "lower",
      service: rss(this.targets.service),
      spawn: rss(spawn),
      spawnName: spawn?.name,
      floor: rss(this.targets.floor),
    }));
  }

  /** Drains each runtime's pool with a burst of anonymous runs and times its refill. */
  async recovery(): Promise<void> {
    const server = this.targets.service;
    if (!this.alive(server)) return;
    const groups = new Map<string, BenchLanguage>();
    for (const language of this.targets.serviceLanguages) {
      const runtime = language === "python" ? "python" : "javascript";
      if (!groups.has(runtime)) groups.set(runtime, language);
    }
    const burst = Math.max(2, Math.min(2 * this.flags.poolSize, this.flags.maxInstances));
    for (const language of groups.values()) {
      if (!(await this.waitForFullPool([language]))) continue;
      const prog = program(language, "trivial");
      const started = performance.now();
      const result = await this.load("service", server, {
        scenario: "recovery",
        metric: "burst",
        language,
      }, {
        concurrency: burst,
        requests: burst,
        body: requestBody(prog, "none"),
        check: prog.check,
      });
      const burstEnd = performance.now();
      const full = await this.waitForFullPool([language]);
      this.add(makeFigure({ scenario: "recovery", metric: "burst_ms", language }, {
        unit: "ms",
        better: "lower",
        service: result.errors ? null : burstEnd - started,
      }));
      this.add(makeFigure({ scenario: "recovery", metric: "recovery_ms", language }, {
        unit: "ms",
        better: "lower",
        service: full ? performance.now() - burstEnd : null,
      }));
      log(
        `recovery ${language}: burst of ${burst} in ${
          fmt(burstEnd - started)
        } ms, pool full again after ${fmt(performance.now() - burstEnd)} ms`,
      );
    }
    this.results.notes.push(
      `recovery: a burst of ${burst} concurrent anonymous trivial runs (FAAS_POOL_SIZE=${this.flags.poolSize}) drains the pool; the figure is the time from the last answer until /health shows the pool full again`,
    );
  }

  /** The floor of `language`'s runs (JS: warm-context, Python: fork), where it has one. */
  languageFloor(language: BenchLanguage): { name: string; servers: RunningServer[] } | undefined {
    if (language === "javascript" && this.targets.contextFloor.length) {
      return { name: CONTEXT_FLOOR, servers: this.targets.contextFloor };
    }
    if (language === "python" && this.targets.forkFloor) {
      return { name: FORK_FLOOR, servers: [this.targets.forkFloor] };
    }
    return undefined;
  }

  /**
   * Sequential trivial and evaluator runs of one language on every target, and on the
   * language's floor; for Python also the service's evaluator with a new tenant per request.
   */
  async sequential(language: BenchLanguage): Promise<void> {
    const { service, floor } = this.targets;
    const mode = spawnModeFor(language);
    const spawn = this.targets.spawn[mode];
    const evalServer = language === "python" ? undefined : this.targets.spawn["deno-eval"];
    const langFloor = this.languageFloor(language);
    const served = this.targets.serviceLanguages.includes(language);
    const n = this.plan.sequential;
    for (const kind of ["trivial", "evaluator"] as ProgramKind[]) {
      const prog = program(language, kind);
      const key: FigureKey = { scenario: "sequential", metric: "", language, program: kind };
      const measure = async (
        target: string,
        server: RunningServer | undefined,
        count: number,
        options: { warmup: number; tenancy?: Tenancy; key?: FigureKey },
      ) => {
        if (!this.alive(server)) return undefined;
        const body = requestBody(prog, options.tenancy ?? "one");
        // The floor answers a constant: only its contract shape is checked, not the result.
        const check = server === floor ? undefined : prog.check;
        const url = `${server.url}/run_code`;
        await runLoad(url, { concurrency: 1, requests: options.warmup, body, check });
        return this.load(target, server, options.key ?? key, {
          concurrency: 1,
          requests: count,
          durationMs: n.maxMs,
          body,
          check,
        });
      };
      const s = served
        ? await measure("service", service, n.service, { warmup: n.warmup })
        : undefined;
      if (served) await this.settle();
      const b = await measure(SPAWN_NAMES[mode], spawn, n.spawn, { warmup: 1 });
      const e = await measure(SPAWN_NAMES["deno-eval"], evalServer, n.spawn, { warmup: 1 });
      const f = await measure("no-op floor", floor, n.floor, { warmup: n.warmup });
      // Sequential runs go to one process of a floor: one request at a time needs no more.
      const lf = langFloor &&
        await measure(langFloor.name, langFloor.servers[0], n.floor, { warmup: n.warmup });
      const floorReference = (value: number | undefined): ReferenceValues | undefined =>
        langFloor && {
          name: langFloor.name,
          value,
          target: language === "python" && kind === "evaluator" ? TARGETS.forkLatency : undefined,
        };
      for (const metric of ["p50", "p90", "p99", "mean"] as const) {
        this.add(makeFigure({ ...key, metric }, {
          unit: "ms",
          better: "lower",
          service: s?.[metric],
          spawn: b?.[metric],
          spawnName: SPAWN_NAMES[mode],
          floor: f?.[metric],
          reference: metric === "p50" ? floorReference(lf?.p50) : undefined,
        }));
      }
      if (e) {
        this.add(makeFigure({ ...key, metric: "p50_deno_eval" }, {
          unit: "ms",
          better: "lower",
          service: s?.p50,
          spawn: e.p50,
          spawnName: SPAWN_NAMES["deno-eval"],
          floor: f?.p50,
        }));
      }
      this.add(makeFigure({ ...key, metric: "errors" }, {
        unit: "count",
        better: "lower",
        service: s?.errors,
        spawn: b?.errors,
        spawnName: SPAWN_NAMES[mode],
        floor: f?.errors,
      }));
      if (language === "python" && kind === "evaluator" && served) {
        // A run of a tenant the service has not seen: the same bound applies.
        const newKey: FigureKey = { ...key, tenancy: "new" };
        const sNew = await measure("service", service, n.service, {
          warmup: n.warmup,
          tenancy: "new",
          key: newKey,
        });
        this.add(makeFigure({ ...newKey, metric: "p50" }, {
          unit: "ms",
          better: "lower",
          service: sNew?.p50,
          floor: f?.p50,
          reference: floorReference(lf?.p50),
        }));
      }
    }
  }

  /**
   * The boot floor (see boot_floor.ts): fresh process + no-permission worker boots per second
   * with one loop per core, measured once, right before the throughput runs it bounds.
   */
  async measureBootFloor(): Promise<void> {
    // Not while the service refills its pool: those boots would slow the floor's down.
    const { service, serviceLanguages } = this.targets;
    if (serviceLanguages.length && this.alive(service)) {
      await this.waitForFullPool(serviceLanguages);
    }
    await this.settle();
    const key: FigureKey = { scenario: "boot_floor", metric: "boots_per_s" };
    this.bootFloor = null;
    const group = CpuGroup.create("boot floor");
    if (typeof group === "string") this.note(`boot floor: no CPU cgroup of its own: ${group}`);
    try {
      const result = await measureBootFloor({
        durationMs: this.plan.duration.bootFloor,
        cpuGroup: group instanceof CpuGroup ? group : undefined,
      });
      this.results.runs.push({ target: "boot floor", key, summary: result });
      if (result.ok) this.bootFloor = result.throughput;
      if (result.errors) {
        this.note(
          `boot floor: ${result.errors} of ${result.sent} boots failed ${
            JSON.stringify(result.errorKinds)
          }, first: ${JSON.stringify(result.errorSamples)}`,
        );
      }
      log(
        `boot floor: ${result.ok} boots over ${result.concurrency} loops in ${
          fmt(result.elapsedMs)
        } ms, ${fmt(result.throughput)}/s, one boot p50 ${fmt(result.p50)} ms, p99 ${
          fmt(result.p99)
        } ms`,
      );
    } catch (error) {
      this.note(
        `the boot floor was not measured: ${error instanceof Error ? error.message : error}`,
      );
    } finally {
      if (group instanceof CpuGroup) group.remove();
    }
    this.add(makeFigure(key, { unit: "boots/s", better: "higher", bootFloor: this.bootFloor }));
  }

  /**
   * The closed-loop rate of the evaluator program on `key.language`'s floor at
   * `key.concurrency`, its processes taking requests round-robin; `undefined` without one.
   */
  async floorRate(language: BenchLanguage, key: FigureKey): Promise<LoadResult | undefined> {
    const langFloor = this.languageFloor(language);
    if (!langFloor || !langFloor.servers.every((server) => this.alive(server))) return undefined;
    const prog = program(language, "evaluator");
    const urls = langFloor.servers.map((server) => `${server.url}/run_code`);
    const concurrency = key.concurrency ?? 1;
    const body = requestBody(prog, "one");
    await runLoad(urls, { concurrency, requests: concurrency * 4, body, check: prog.check });
    const result = await runLoad(urls, {
      concurrency,
      durationMs: this.plan.duration.langFloor,
      body,
      check: prog.check,
    });
    return this.record(langFloor.name, key, result);
  }

  /** Closed-loop throughput of the evaluator program at each concurrency level. */
  async throughput(language: BenchLanguage): Promise<void> {
    const { service, floor } = this.targets;
    const mode = spawnModeFor(language);
    const spawn = this.targets.spawn[mode];
    const prog = program(language, "evaluator");
    const served = service !== undefined && this.targets.serviceLanguages.includes(language);
    for (const concurrency of this.plan.levels) {
      const base: FigureKey = {
        scenario: "throughput",
        metric: "",
        language,
        program: "evaluator",
        concurrency,
      };
      const measured: Partial<Record<Tenancy, LoadResult>> = {};
      if (served && this.alive(service)) {
        for (const tenancy of ["one", "new"] as const) {
          const body = requestBody(prog, tenancy);
          await runLoad(`${service.url}/run_code`, {
            concurrency,
            durationMs: this.plan.warmupMs,
            body,
            check: prog.check,
          });
          measured[tenancy] = await this.load("service", service, { ...base, tenancy }, {
            concurrency,
            durationMs: this.plan.duration.service,
            body,
            check: prog.check,
          });
        }
      }
      if (served) await this.settle();
      let b: LoadResult | undefined;
      if (this.alive(spawn)) {
        // Nothing to warm but the page cache, which the sequential runs already did.
        const body = requestBody(prog, "new");
        b = await this.load(SPAWN_NAMES[mode], spawn, base, {
          concurrency,
          durationMs: this.plan.duration.spawn,
          body,
          check: prog.check,
        });
      }
      let f: LoadResult | undefined;
      if (this.alive(floor)) {
        const body = requestBody(prog, "new");
        await runLoad(`${floor.url}/run_code`, { concurrency, requests: concurrency * 4, body });
        f = await this.load("no-op floor", floor, base, {
          concurrency,
          durationMs: this.plan.duration.floor,
          body,
        });
      }
      // The floors' goals are set at concurrency 16: they are measured there.
      const lf = concurrency === 16 ? await this.floorRate(language, base) : undefined;
      if (concurrency === 16 && measured.one) this.oneTenantC16[language] = measured.one;
      const reference = (tenancy: Tenancy): ReferenceValues | undefined => {
        if (concurrency !== 16) return undefined;
        if (language === "python") {
          return { name: FORK_FLOOR, value: lf?.throughput, target: TARGETS.forkRate };
        }
        if (tenancy === "one") {
          if (language !== "javascript") return undefined;
          const processes = this.targets.contextFloor.length;
          return {
            name: `${CONTEXT_FLOOR} (${processes} processes, round-robin)`,
            value: lf?.throughput,
            target: TARGETS.contextRate,
          };
        }
        return {
          name: "boot floor (boots/s)",
          value: this.bootFloor,
          target: language === "javascript" ? TARGETS.bootRate : undefined,
        };
      };
      for (const tenancy of ["one", "new"] as const) {
        const s = measured[tenancy];
        const key = { ...base, tenancy };
        this.add(makeFigure({ ...key, metric: "runs_per_s" }, {
          unit: "runs/s",
          better: "higher",
          service: s?.throughput,
          spawn: b?.throughput,
          spawnName: SPAWN_NAMES[mode],
          floor: f?.throughput,
          // A new tenant's JS/TS run needs a freshly booted runner process once the pool is dry.
          bootFloor: tenancy === "new" && language !== "python" ? this.bootFloor : undefined,
          reference: reference(tenancy),
        }));
        for (const metric of ["p50", "p99"] as const) {
          this.add(makeFigure({ ...key, metric }, {
            unit: "ms",
            better: "lower",
            service: s?.[metric],
            spawn: b?.[metric],
            spawnName: SPAWN_NAMES[mode],
            floor: f?.[metric],
          }));
        }
        this.add(makeFigure({ ...key, metric: "errors" }, {
          unit: "count",
          better: "lower",
          service: s?.errors,
          spawn: b?.errors,
          spawnName: SPAWN_NAMES[mode],
          floor: f?.errors,
        }));
      }
    }
    const peak = (target: string) => this.peaks.get(`${target}|${language}`);
    const s = served ? peak("service") : undefined;
    const b = peak(SPAWN_NAMES[mode]);
    const f = peak("no-op floor");
    this.add(makeFigure({ scenario: "memory", metric: "rss_peak", language }, {
      unit: "MiB",
      better: "lower",
      service: s && s.rss / 2 ** 20,
      spawn: b && b.rss / 2 ** 20,
      spawnName: SPAWN_NAMES[mode],
      floor: f && f.rss / 2 ** 20,
    }));
    this.add(makeFigure({ scenario: "memory", metric: "processes_peak", language }, {
      unit: "count",
      better: "lower",
      service: s?.processes,
      spawn: b?.processes,
      spawnName: SPAWN_NAMES[mode],
      floor: f?.processes,
    }));
  }

  /**
   * The service's one-tenant JS evaluator rate at concurrency 16: the throughput run's, or
   * measured now when this run had none.
   */
  async oneTenantJs(): Promise<LoadResult | undefined> {
    const server = this.targets.service;
    if (this.oneTenantC16.javascript || !this.alive(server)) return this.oneTenantC16.javascript;
    const prog = program("javascript", "evaluator");
    const body = requestBody(prog, "one");
    const url = `${server.url}/run_code`;
    await runLoad(url, {
      concurrency: 16,
      durationMs: this.plan.warmupMs,
      body,
      check: prog.check,
    });
    const key: FigureKey = {
      scenario: "throughput",
      metric: "",
      language: "javascript",
      program: "evaluator",
      concurrency: 16,
      tenancy: "one",
    };
    return this.oneTenantC16.javascript = await this.load("service", server, key, {
      concurrency: 16,
      durationMs: this.plan.duration.service,
      body,
      check: prog.check,
    });
  }

  /**
   * The JS evaluator from the 24 tenants of a Zipf mix at concurrency 16, against the
   * one-tenant rate of the same run.
   */
  async zipf(): Promise<void> {
    const server = this.targets.service;
    if (!this.targets.serviceLanguages.includes("javascript") || !this.alive(server)) return;
    const one = await this.oneTenantJs();
    if (!this.alive(server)) return;
    const key: FigureKey = {
      scenario: "zipf",
      metric: "",
      language: "javascript",
      program: "evaluator",
      concurrency: 16,
    };
    const run = await runZipfMix(`${server.url}/run_code`, {
      program: program("javascript", "evaluator"),
      mix: ZIPF_MIX,
      concurrency: 16,
      warmupMs: this.plan.tenants.warmupMs,
      durationMs: this.plan.tenants.durationMs,
      prefix: "zipf-",
    });
    const result = this.record("service", key, run.measured);
    const name = "JS one tenant, c16, same run";
    this.add(makeFigure({ ...key, metric: "runs_per_s" }, {
      unit: "runs/s",
      better: "higher",
      service: result.throughput,
      reference: { name, value: one?.throughput, target: TARGETS.zipfRate },
    }));
    this.add(makeFigure({ ...key, metric: "p50" }, {
      unit: "ms",
      better: "lower",
      service: result.p50,
      reference: { name, value: one?.p50 },
    }));
    this.add(makeFigure({ ...key, metric: "p99" }, {
      unit: "ms",
      better: "lower",
      service: result.p99,
      reference: { name, value: one?.p99, target: TARGETS.zipfP99 },
    }));
    this.add(makeFigure({ ...key, metric: "errors" }, {
      unit: "count",
      better: "lower",
      service: result.errors,
    }));
    this.results.notes.push(
      `Zipf mix: ${ZIPF_MIX.tenants} tenants, s = ${ZIPF_MIX.s}, seed ${ZIPF_MIX.seed}, ` +
        `concurrency 16, after a ${this.plan.tenants.warmupMs} ms warm-up with the same draws; ` +
        `the measured ${result.sent} requests came from ${run.distinctTenants} tenants, ` +
        `${(run.topShare * 100).toFixed(0)}% from the most frequent`,
    );
  }

  /**
   * Normal tenants' JS evaluator runs, alone and then while two tenants loop and two bomb
   * memory: their p90 and rate beside the hostile tenants, against the same load alone.
   */
  async hostile(): Promise<void> {
    const server = this.targets.service;
    if (!this.targets.serviceLanguages.includes("javascript") || !this.alive(server)) return;
    const shape = {
      normalTenants: 4,
      normalConcurrency: 8,
      hostileConcurrency: 2,
    };
    const key: FigureKey = {
      scenario: "hostile",
      metric: "",
      language: "javascript",
      program: "evaluator",
      concurrency: shape.normalConcurrency,
    };
    const run = await runHostileNeighbours(`${server.url}/run_code`, {
      ...shape,
      program: program("javascript", "evaluator"),
      warmupMs: this.plan.tenants.warmupMs,
      durationMs: this.plan.tenants.durationMs,
      prefix: "hostile-",
    });
    this.record("service, normal tenants alone", key, run.calm);
    const beside = this.record("service, normal tenants beside hostile ones", key, run.beside);
    for (const { kind, result } of run.hostile) {
      this.record(`service, hostile tenant (${kind})`, { ...key, metric: kind }, result);
    }
    const name = "the same tenants alone";
    this.add(makeFigure({ ...key, metric: "p90" }, {
      unit: "ms",
      better: "lower",
      service: beside.p90,
      reference: { name, value: run.calm.p90, target: TARGETS.hostileP90 },
    }));
    this.add(makeFigure({ ...key, metric: "p50" }, {
      unit: "ms",
      better: "lower",
      service: beside.p50,
      reference: { name, value: run.calm.p50 },
    }));
    this.add(makeFigure({ ...key, metric: "runs_per_s" }, {
      unit: "runs/s",
      better: "higher",
      service: beside.throughput,
      reference: { name, value: run.calm.throughput },
    }));
    this.add(makeFigure({ ...key, metric: "errors" }, {
      unit: "count",
      better: "lower",
      service: beside.errors,
    }));
    const outcomes = run.hostile.map(({ kind, result }) =>
      `${kind}: ${result.sent} runs, ${result.ok} ended ${HOSTILE_STATUS[kind]}` +
      (result.errors ? `, others ${JSON.stringify(result.errorKinds)}` : "")
    );
    this.results.notes.push(
      `hostile tenants: ${shape.normalTenants} normal tenants (${shape.normalConcurrency} ` +
        `requests in flight) measured alone, then beside ${HOSTILE_TENANTS.length} hostile ` +
        `tenants (${HOSTILE_TENANTS.join(", ")}) with ${shape.hostileConcurrency} runs each ` +
        `in flight (timeouts: ${JSON.stringify(HOSTILE_TIMEOUT_MS)} ms); ${outcomes.join("; ")}`,
    );
  }

  /**
   * A numpy evaluator's p50 on a service started with `FAAS_PYTHON_PRELOAD=numpy`, against a
   * trivial run's p50 on the same service. Skipped (with a note) when `python` has no numpy.
   */
  async preload(python: string): Promise<void> {
    if (!this.flags.languages.includes("python")) return;
    const probe = await new Deno.Command(python, {
      args: ["-I", "-c", "import numpy"],
      stdout: "null",
      stderr: "null",
    }).output().catch(() => undefined);
    if (!probe?.success) {
      this.note(
        `preload: ${python} cannot import numpy (install python3-numpy): not measured`,
      );
      return;
    }
    const env = { ...this.results.serviceEnv };
    env.FAAS_PYTHON_PRELOAD = [
      ...new Set([
        ...(env.FAAS_PYTHON_PRELOAD ?? "").split(",").map((name) => name.trim()).filter(Boolean),
        "numpy",
      ]),
    ].join(",");
    const name = `service (FAAS_PYTHON_PRELOAD=${env.FAAS_PYTHON_PRELOAD})`;
    let server: RunningServer;
    try {
      ({ server } = await startService(this.flags.main, {
        languages: ["python"],
        env,
        notes: this.results.notes,
        name,
      }));
    } catch (error) {
      this.note(`${name} did not start: ${error instanceof Error ? error.message : error}`);
      return;
    }
    this.preloadService = server;
    try {
      await this.waitForFullPool(["python"], server);
      const n = this.plan.sequential;
      const measured: Partial<Record<ProgramKind, LoadResult>> = {};
      for (const kind of ["trivial", "numpy"] as const) {
        const prog = program("python", kind);
        const body = requestBody(prog, "one");
        const url = `${server.url}/run_code`;
        await runLoad(url, { concurrency: 1, requests: n.warmup, body, check: prog.check });
        const key: FigureKey = {
          scenario: "preload",
          metric: "",
          language: "python",
          program: kind,
        };
        measured[kind] = await this.load(name, server, key, {
          concurrency: 1,
          requests: n.service,
          durationMs: n.maxMs,
          body,
          check: prog.check,
        });
      }
      const key: FigureKey = { scenario: "preload", metric: "", language: "python" };
      this.add(makeFigure({ ...key, program: "numpy", metric: "p50" }, {
        unit: "ms",
        better: "lower",
        service: measured.numpy?.p50,
        reference: {
          name: "a trivial run's p50, same service",
          value: measured.trivial?.p50,
          target: TARGETS.preloadLatency,
        },
      }));
      for (const kind of ["trivial", "numpy"] as const) {
        this.add(makeFigure({ ...key, program: kind, metric: "errors" }, {
          unit: "count",
          better: "lower",
          service: measured[kind]?.errors,
        }));
      }
    } finally {
      this.preloadService = undefined;
      const stopped = await server.stop();
      if (stopped.leftovers) {
        this.note(`${name} left ${stopped.leftovers} process(es) running; they were killed`);
      }
    }
  }

  /** Stops every target, noting any that needed SIGKILL or left processes behind. */
  async stopAll(): Promise<void> {
    const servers = [
      this.targets.service,
      this.targets.floor,
      ...Object.values(this.targets.spawn),
      ...this.targets.contextFloor,
      this.targets.forkFloor,
      this.preloadService,
    ].filter((s): s is RunningServer => s !== undefined);
    const stops = await Promise.all(servers.map(async (server) => {
      let result: StopResult | undefined;
      try {
        result = await server.stop();
      } catch (error) {
        this.note(`${server.name}: stopping failed: ${error}`);
      }
      return { server, result };
    }));
    for (const { server, result } of stops) {
      if (!result) continue;
      if (result.forced) this.note(`${server.name} ignored SIGTERM and was killed`);
      if (result.leftovers) {
        this.note(
          `${server.name} left ${result.leftovers} process(es) running after it exited; they were killed`,
        );
      }
      if (server === this.targets.service) {
        log(`service exited with code ${result.code} after SIGTERM`);
      }
    }
  }
}

async function main(): Promise<void> {
  let flags: Flags;
  try {
    flags = parseFlags(Deno.args);
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    Deno.exit(2);
  }
  const plan = flags.quick ? QUICK : FULL;
  const python = await resolvePython(Deno.env.get("FAAS_PYTHON") ?? "python3");
  const serviceEnv: Record<string, string> = {
    FAAS_POOL_SIZE: String(flags.poolSize),
    FAAS_MAX_INSTANCES: String(flags.maxInstances),
  };
  for (const [name, value] of Object.entries(Deno.env.toObject())) {
    if (name.startsWith("FAAS_") && !(name in serviceEnv)) serviceEnv[name] = value;
  }
  delete serviceEnv.FAAS_PORT;
  delete serviceEnv.FAAS_HOST;
  const bench = new Bench(flags, plan, serviceEnv);
  bench.results.machine.python = python;

  const stopOnSignal = () => {
    log("interrupted: stopping the servers and writing what was measured so far");
    bench.note("the run was interrupted: figures after that point are missing");
    bench.stopAll()
      .then(() => report(bench, flags.out))
      .finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", stopOnSignal);
  Deno.addSignalListener("SIGTERM", stopOnSignal);

  try {
    // Baselines start first, on a quiet machine, before the service fills its pool.
    const firstRun = await bench.startBaselines(python);
    await bench.startService(serviceEnv);
    bench.noteCpuGroups();
    bench.coldStartFigures(firstRun);
    bench.idleMemory();
    const selected = (scenario: ScenarioName) => flags.scenarios.includes(scenario);
    if (selected("recovery")) await bench.recovery();
    if (selected("sequential")) {
      for (const language of flags.languages) await bench.sequential(language);
    }
    if (selected("throughput")) {
      if (flags.languages.some((language) => language !== "python")) {
        await bench.measureBootFloor();
      }
      for (const language of flags.languages) {
        // TS runs on the JS runtime: in a quick run its throughput would repeat JS's.
        if (flags.quick && language === "typescript" && flags.languages.includes("javascript")) {
          bench.note("quick run: TS throughput not measured (same runtime as JS; see JS)");
          continue;
        }
        await bench.throughput(language);
      }
    }
    if (selected("preload")) await bench.preload(python);
    if (selected("zipf")) await bench.zipf();
    // Last: hostile runs kill runner processes, which the pool then boots again.
    if (selected("hostile")) await bench.hostile();
  } finally {
    await bench.stopAll();
    Deno.removeSignalListener("SIGINT", stopOnSignal);
    Deno.removeSignalListener("SIGTERM", stopOnSignal);
  }
  await report(bench, flags.out);
}

/** Writes the JSON (to `out`, default bench/results/<start time>.json) and prints the tables. */
async function report(bench: Bench, out?: string): Promise<void> {
  const { results } = bench;
  results.finishedAt = new Date().toISOString();
  results.machine.loadAtEnd = loadAverage();
  const stamp = results.startedAt.replace(/[:.]/g, "-");
  const path = out ?? new URL(`./results/${stamp}.json`, import.meta.url).pathname;
  const slash = path.lastIndexOf("/");
  if (slash > 0) await Deno.mkdir(path.slice(0, slash), { recursive: true });
  // Microsecond precision is noise on this scale: keep three decimals.
  const rounded = (_key: string, value: unknown) =>
    typeof value === "number" && !Number.isInteger(value) ? Math.round(value * 1000) / 1000 : value;
  await Deno.writeTextFile(path, JSON.stringify(results, rounded, 2) + "\n");

  const seconds = (Date.parse(results.finishedAt) - Date.parse(results.startedAt)) / 1000;
  const { mode, machine } = results;
  console.log(
    `## Benchmark (${mode}, ${machine.cpus} CPUs, Deno ${machine.deno}, ` +
      `load average ${machine.loadAtStart} at start, ${machine.loadAtEnd} at end)\n`,
  );
  console.log(renderMarkdown(results));
  console.log(`\nFull results: ${path} (${seconds.toFixed(0)} s)`);
}

if (import.meta.main) await main();
