/**
 * The benchmark's results: every figure with its baselines and ratios, rendered as markdown
 * tables for people and kept as JSON for machines.
 *
 * @module
 */

import type { LoadResult } from "./load.ts";
import { ratio } from "./stats.ts";
import type { BenchLanguage, ProgramKind, Tenancy } from "./programs.ts";

/** Which group of measurements a figure belongs to. */
export type Scenario =
  | "sequential"
  | "throughput"
  | "zipf"
  | "hostile"
  | "preload"
  | "cold_start"
  | "boot_floor"
  | "recovery"
  | "memory";

/** Where a figure was measured. */
export interface FigureKey {
  /** Group of measurements. */
  scenario: Scenario;
  /** What is measured, e.g. `p50`, `runs_per_s`, `to_first_run`, `rss_peak`. */
  metric: string;
  /** Language of the programs run, when one applies. */
  language?: BenchLanguage;
  /** Program run, when one applies. */
  program?: ProgramKind;
  /** Requests in flight, for throughput figures. */
  concurrency?: number;
  /** Tenant assignment of the service's requests, for throughput figures. */
  tenancy?: Tenancy;
}

/** One measured figure of the service with the same figure of each baseline. */
export interface Figure extends FigureKey {
  /** Unit of every value of the figure (`ms`, `runs/s`, `MiB`, `count`). */
  unit: string;
  /** Whether a lower or a higher value is better. */
  better: "lower" | "higher";
  /** The service's value; `null` when it was not measured (e.g. the service did not start). */
  service: number | null;
  /** The process-per-request baseline's value (`deno run` or `python3` per request). */
  spawn: number | null;
  /** Which process-per-request baseline `spawn` is. */
  spawnName?: string;
  /** The no-op HTTP floor's value. */
  floor: number | null;
  /** `service / spawn`. */
  vsSpawn: number | null;
  /** `service / floor`. */
  vsFloor: number | null;
  /**
   * Boots per second of a fresh process hosting a no-permission worker (see boot_floor.ts),
   * on the figures it bounds: the JS/TS "new each" throughput, and the boot floor's own.
   */
  bootFloor?: number | null;
  /** `service / bootFloor`, where `bootFloor` is set. */
  vsBootFloor?: number | null;
  /** The floor or figure of the same run this figure is judged against, where one is. */
  reference?: Reference;
}

/**
 * A goal for a figure: its ratio to its reference (`service / reference`), or its own value,
 * at least or at most a limit.
 */
export interface Target {
  /** What the limit bounds. */
  of: "ratio" | "value";
  /** `min`: at least the limit; `max`: at most. */
  bound: "min" | "max";
  /** The limit (a ratio, or a value in the figure's unit). */
  limit: number;
}

/** A floor (or another figure of the same run) a service figure is judged against. */
export interface Reference {
  /** What it is, e.g. `warm-context floor`. */
  name: string;
  /** Its value in the figure's unit; `null` when it was not measured. */
  value: number | null;
  /** `service / value`. */
  ratio: number | null;
  /** The goal, when one is set. */
  target?: Target;
  /** Whether the goal is met; `null` when a value it needs is missing. */
  met?: boolean | null;
}

/** A reference before its ratio is computed. */
export interface ReferenceValues {
  /** What it is. */
  name: string;
  /** Its value in the figure's unit. */
  value?: number | null;
  /** The goal, when one is set. */
  target?: Target;
}

/** Raw summary of one load run, kept in the JSON for audit. */
export interface RawRun {
  /** Target measured (`service`, `deno run per request`, `no-op floor`, ...). */
  target: string;
  /** Where it was measured. */
  key: FigureKey;
  /** Its latency summary, failures and a sample of each kind of failure. */
  summary: LoadResult;
}

/** Everything one benchmark run found. */
export interface BenchResults {
  /** ISO time the run started. */
  startedAt: string;
  /** ISO time the run ended. */
  finishedAt?: string;
  /** `quick` or `full`. */
  mode: string;
  /** Machine and runtime versions. */
  machine: Record<string, string | number>;
  /** Configuration the service ran with (`FAAS_*`). */
  serviceEnv: Record<string, string>;
  /** Things the reader must know (skipped parts, failures, caveats). */
  notes: string[];
  /** Every figure with its baselines and ratios. */
  figures: Figure[];
  /** Raw load runs. */
  runs: RawRun[];
}

/** The values of one figure, before ratios are computed. */
export interface FigureValues {
  /** Unit of the values. */
  unit: string;
  /** Whether a lower or a higher value is better. */
  better: "lower" | "higher";
  /** The service's value. */
  service?: number | null;
  /** The process-per-request baseline's value. */
  spawn?: number | null;
  /** Which process-per-request baseline. */
  spawnName?: string;
  /** The no-op floor's value. */
  floor?: number | null;
  /** The boot floor's value, on the figures it bounds (absent on the others). */
  bootFloor?: number | null;
  /** The floor or figure this one is judged against, where one is. */
  reference?: ReferenceValues;
}

/** Builds a figure, computing its ratios. */
export function makeFigure(key: FigureKey, values: FigureValues): Figure {
  const service = finiteOrNull(values.service);
  const spawn = finiteOrNull(values.spawn);
  const floor = finiteOrNull(values.floor);
  const figure: Figure = {
    ...key,
    unit: values.unit,
    better: values.better,
    service,
    spawn,
    spawnName: spawn === null ? undefined : values.spawnName,
    floor,
    vsSpawn: ratio(service, spawn),
    vsFloor: ratio(service, floor),
  };
  if (values.reference) figure.reference = makeReference(service, values.reference);
  if (values.bootFloor === undefined) return figure;
  const bootFloor = finiteOrNull(values.bootFloor);
  return { ...figure, bootFloor, vsBootFloor: ratio(service, bootFloor) };
}

/** A reference with its ratio to `service` and whether its target is met. */
export function makeReference(service: number | null, values: ReferenceValues): Reference {
  const value = finiteOrNull(values.value);
  const reference: Reference = { name: values.name, value, ratio: ratio(service, value) };
  if (values.target) {
    reference.target = values.target;
    reference.met = meets(values.target, { service, ratio: reference.ratio });
  }
  return reference;
}

/** Whether `target` is met; `null` when the number it bounds is missing. */
export function meets(
  target: Target,
  values: { service: number | null; ratio: number | null },
): boolean | null {
  const measured = target.of === "ratio" ? values.ratio : values.service;
  if (measured === null) return null;
  return target.bound === "min" ? measured >= target.limit : measured <= target.limit;
}

function finiteOrNull(value: number | null | undefined): number | null {
  return value == null || !Number.isFinite(value) ? null : value;
}

const LANGUAGE_NAMES: Record<BenchLanguage, string> = {
  javascript: "JS",
  typescript: "TS",
  python: "Python",
};

function num(value: number | null | undefined, digits?: number): string {
  if (value == null || !Number.isFinite(value)) return "–";
  const d = digits ?? (Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2);
  return value.toFixed(d);
}

/**
 * A ratio for people against the process-per-request baseline, by the figure's direction and
 * unit: "**12× faster**", "3.1× slower", "**4× less**", ...
 */
function versus(value: number | null, better: "lower" | "higher", unit: string): string {
  if (value == null) return "–";
  if (value === 0) return better === "higher" ? "none served" : "0×";
  const [good, bad] = better === "higher"
    ? ["more", "fewer"]
    : unit === "ms"
    ? ["faster", "slower"]
    : unit === "count"
    ? ["fewer", "more"]
    : ["less", "more"];
  const gain = better === "lower" ? 1 / value : value;
  return gain >= 1 ? `**${num(gain)}× ${good}**` : `${num(1 / gain)}× ${bad}`;
}

/** `service / floor`, e.g. `1.8×`. */
function overFloor(value: number | null): string {
  return value == null ? "–" : `${num(value)}×`;
}

function find(figures: Figure[], key: Partial<FigureKey>): Figure | undefined {
  const names = Object.keys(key) as (keyof FigureKey)[];
  return figures.find((f) => names.every((name) => f[name] === key[name]));
}

function table(header: string[], rows: string[][]): string {
  return [
    `| ${header.join(" | ")} |`,
    `|${header.map(() => "---").join("|")}|`,
    ...rows.map((row) => `| ${row.join(" | ")} |`),
  ].join("\n");
}

function sequentialTable(figures: Figure[], languages: BenchLanguage[]): string | undefined {
  const rows: string[][] = [];
  let withEval = false;
  for (const language of languages) {
    for (const program of ["trivial", "evaluator"] as const) {
      // The one-tenant series; a new-tenant series, where measured, is in the floors table.
      const get = (metric: string) =>
        find(figures, { scenario: "sequential", language, program, metric, tenancy: undefined });
      const p50 = get("p50");
      if (!p50) continue;
      const p90 = get("p90");
      const p99 = get("p99");
      const errors = get("errors");
      const evalP50 = get("p50_deno_eval");
      if (evalP50) withEval = true;
      rows.push([
        LANGUAGE_NAMES[language],
        program,
        `${num(p50.service)} / ${num(p90?.service)} / ${num(p99?.service)}`,
        `${num(p50.spawn)} / ${num(p90?.spawn)} / ${num(p99?.spawn)}`,
        versus(p50.vsSpawn, "lower", "ms"),
        num(evalP50?.spawn),
        num(p50.floor),
        overFloor(p50.vsFloor),
        `${num(errors?.service, 0)} / ${num(errors?.spawn, 0)}`,
      ]);
    }
  }
  if (!rows.length) return undefined;
  const header = [
    "lang",
    "program",
    "service p50 / p90 / p99",
    "process per request p50 / p90 / p99",
    "p50 vs process per request",
    "deno eval p50",
    "no-op floor p50",
    "p50 ÷ floor",
    "errors service / baseline",
  ];
  if (!withEval) {
    header.splice(5, 1);
    for (const row of rows) row.splice(5, 1);
  }
  return "### Sequential round trip (ms, one request at a time, one tenant)\n\n" +
    table(header, rows);
}

/**
 * `service / boot floor` with the boot floor, e.g. `0.62× (46.1)`; empty on the rows the boot
 * floor does not bound.
 */
function overBootFloor(figure: Figure): string {
  if (figure.bootFloor === undefined) return "";
  if (figure.bootFloor === null) return "–";
  return `${overFloor(figure.vsBootFloor ?? null)} (${num(figure.bootFloor)})`;
}

function throughputTable(figures: Figure[], languages: BenchLanguage[]): string | undefined {
  const rows: string[][] = [];
  let withBootFloor = false;
  const levels = [...new Set(figures.flatMap((f) => f.concurrency ? [f.concurrency] : []))]
    .sort((a, b) => a - b);
  for (const language of languages) {
    for (const concurrency of levels) {
      for (const tenancy of ["one", "new"] as const) {
        const get = (metric: string) =>
          find(figures, { scenario: "throughput", language, concurrency, tenancy, metric });
        const rps = get("runs_per_s");
        if (!rps) continue;
        const p50 = get("p50");
        const p99 = get("p99");
        const errors = get("errors");
        if (rps.bootFloor !== undefined) withBootFloor = true;
        rows.push([
          LANGUAGE_NAMES[language],
          String(concurrency),
          tenancy === "one" ? "one" : "new each",
          num(rps.service),
          `${num(p50?.service)} / ${num(p99?.service)}`,
          num(errors?.service, 0),
          num(rps.spawn),
          `${num(p50?.spawn)} / ${num(p99?.spawn)}`,
          versus(rps.vsSpawn, "higher", "runs/s"),
          num(rps.floor),
          overFloor(rps.vsFloor),
          overBootFloor(rps),
        ]);
      }
    }
  }
  if (!rows.length) return undefined;
  const header = [
    "lang",
    "conc.",
    "tenant",
    "service runs/s",
    "p50 / p99 ms",
    "errors",
    "process per request runs/s",
    "p50 / p99 ms",
    "runs/s vs process per request",
    "floor req/s",
    "÷ floor",
    "÷ boot floor (boots/s)",
  ];
  if (!withBootFloor) {
    header.pop();
    for (const row of rows) row.pop();
  }
  return "### Throughput, closed loop, evaluator program\n\n" + table(header, rows);
}

const METRIC_LABELS: Record<string, string> = {
  runs_per_s: "runs/s",
  p50: "p50",
  p90: "p90",
  p99: "p99",
};

const SCENARIO_LABELS: Partial<Record<Scenario, string>> = {
  sequential: "sequential",
  zipf: "Zipf mix of tenants",
  hostile: "normal tenants beside looping and memory-bombing ones",
  preload: "with FAAS_PYTHON_PRELOAD=numpy",
};

/** A figure's name for people, from its key: "JS evaluator, one tenant, c16, runs/s". */
export function describeFigure(figure: FigureKey): string {
  const parts: string[] = [];
  const head = [
    figure.language ? LANGUAGE_NAMES[figure.language] : "",
    figure.program ?? "",
  ].filter(Boolean).join(" ");
  if (head) parts.push(head);
  const scenario = SCENARIO_LABELS[figure.scenario];
  if (scenario) parts.push(scenario);
  if (figure.tenancy === "one") parts.push("one tenant");
  if (figure.tenancy === "new") parts.push("a new tenant per request");
  if (figure.concurrency) parts.push(`c${figure.concurrency}`);
  parts.push(METRIC_LABELS[figure.metric] ?? figure.metric);
  return parts.join(", ");
}

function targetText(target: Target | undefined, unit: string): string {
  if (!target) return "–";
  const sign = target.bound === "min" ? "≥" : "≤";
  return target.of === "ratio" ? `${sign} ${target.limit}×` : `${sign} ${target.limit} ${unit}`;
}

function metText(met: boolean | null | undefined): string {
  return met === undefined || met === null ? "–" : met ? "yes" : "**no**";
}

function floorsTable(figures: Figure[]): string | undefined {
  const rows: string[][] = [];
  for (const figure of figures) {
    const reference = figure.reference;
    if (!reference) continue;
    rows.push([
      describeFigure(figure),
      figure.unit,
      num(figure.service),
      reference.name,
      num(reference.value),
      overFloor(reference.ratio),
      targetText(reference.target, figure.unit),
      metText(reference.met),
    ]);
  }
  if (!rows.length) return undefined;
  return "### Against the floors (ratio = service ÷ floor, measured in this run)\n\n" + table([
    "figure",
    "unit",
    "service",
    "floor or reference",
    "its value",
    "ratio",
    "target",
    "met",
  ], rows);
}

const OTHER_LABELS: Record<string, string> = {
  to_health: "start → /health 200",
  to_first_run: "start → first run answered",
  to_full_pool: "start → pool full",
  boots_per_s: "fresh process + no-permission worker boots (boot floor)",
  burst_ms: "burst answered",
  recovery_ms: "burst end → pool full again",
  rss_idle: "RSS idle (process tree)",
  rss_peak: "RSS peak under load (process tree)",
  processes_peak: "processes peak under load",
};

function otherTable(figures: Figure[], runs: RawRun[]): string | undefined {
  const rows: string[][] = [];
  for (const scenario of ["cold_start", "boot_floor", "recovery", "memory"] as const) {
    for (const f of figures.filter((f) => f.scenario === scenario)) {
      const language = f.language ? ` (${LANGUAGE_NAMES[f.language]})` : "";
      const digits = f.unit === "count" ? 0 : undefined;
      if (scenario === "boot_floor") {
        // A baseline of its own, measured like the process-per-request ones: by starting
        // processes. It has no service value to compare (the throughput table does that).
        const loops = runs.find((run) => run.key.scenario === "boot_floor")?.summary.concurrency;
        rows.push([
          OTHER_LABELS[f.metric] ?? f.metric,
          f.unit,
          "–",
          f.bootFloor == null ? "–" : `${num(f.bootFloor)}${loops ? ` (${loops} loops)` : ""}`,
          "–",
          "–",
          "–",
        ]);
        continue;
      }
      rows.push([
        `${OTHER_LABELS[f.metric] ?? f.metric}${language}`,
        f.unit,
        num(f.service, digits),
        f.spawn == null ? "–" : `${num(f.spawn, digits)}${f.spawnName ? ` (${f.spawnName})` : ""}`,
        versus(f.vsSpawn, f.better, f.unit),
        num(f.floor, digits),
        overFloor(f.vsFloor),
      ]);
    }
  }
  if (!rows.length) return undefined;
  return "### Start, recovery, memory\n\n" + table([
    "figure",
    "unit",
    "service",
    "process per request",
    "vs process per request",
    "no-op floor",
    "÷ floor",
  ], rows);
}

/** Renders the figures as markdown tables, one per group of scenarios, then the notes. */
export function renderMarkdown(results: BenchResults): string {
  const { figures } = results;
  const languages = [...new Set(figures.flatMap((f) => f.language ? [f.language] : []))];
  const parts = [
    floorsTable(figures),
    sequentialTable(figures, languages),
    throughputTable(figures, languages),
    otherTable(figures, results.runs),
  ].filter((part): part is string => part !== undefined);
  if (results.notes.length) {
    parts.push("Notes:\n" + results.notes.map((note) => `- ${note}`).join("\n"));
  }
  return parts.join("\n\n");
}
