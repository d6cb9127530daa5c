/**
 * deploy/observability/ holds a Grafana dashboard and Prometheus alert rules. Every metric and
 * label they query must be one a live service's `/metrics` exports; the dashboard must import
 * into Grafana and the rules load into Prometheus; and each alert must fire on its symptom while
 * a healthy service fires none (with promtool, Prometheus's own checker: Debian's `prometheus`
 * package ships it, `.ci/run` takes it from there; without it those parts are skipped, saying so).
 *
 * @module
 */

import { parse as parseYaml, stringify as toYaml } from "yaml";
import { assert, assertEquals } from "./helpers/assert.ts";
import { familyOf, parseExposition, selectors } from "./helpers/promql.ts";
import { postJson, runCode, startRealService } from "./e2e_helpers.ts";
import { findExecutable } from "./helpers/host.ts";

const ROOT = new URL("../", import.meta.url);
const DASHBOARD_PATH = "deploy/observability/grafana_dashboard.json";
const RULES_PATH = "deploy/observability/prometheus_rules.yaml";

/** Labels Prometheus attaches to every scraped series itself. */
const TARGET_LABELS = new Set(["job", "instance"]);

/** Series Prometheus makes itself for each target, not exported by the service. */
const SCRAPE_SERIES = new Set(["up"]);

/** What Grafana substitutes into a query before Prometheus sees it. */
const GRAFANA_VARIABLES: Record<string, string> = {
  "$__rate_interval": "1m",
  "$__interval": "15s",
  "$__range": "1h",
};

interface Query {
  /** Where it is, e.g. `panel "Runs/s" (A)`. */
  where: string;
  /** The PromQL Prometheus receives. */
  expr: string;
  /** A label whose values a Grafana variable lists, when the query is `label_values(…)`. */
  listsLabel?: string;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: { refId: string; expr: string; datasource?: { type: string; uid: string } }[];
  panels?: Panel[];
}

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

async function readDashboard() {
  return JSON.parse(await Deno.readTextFile(new URL(DASHBOARD_PATH, ROOT)));
}

async function readRules(): Promise<{ groups: { name: string; rules: Rule[] }[] }> {
  return parseYaml(await Deno.readTextFile(new URL(RULES_PATH, ROOT)));
}

function withGrafanaVariables(expr: string): string {
  let result = expr;
  for (const [name, value] of Object.entries(GRAFANA_VARIABLES)) {
    result = result.replaceAll(name, value);
  }
  return result;
}

/** Every panel, those inside collapsed rows included. */
function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((panel) => [panel, ...allPanels(panel.panels ?? [])]);
}

/** Every PromQL query of the dashboard: its panels' targets and its variables' queries. */
function dashboardQueries(dashboard: {
  panels: Panel[];
  templating: { list: { name: string; type: string; query: unknown }[] };
}): Query[] {
  const queries: Query[] = [];
  for (const panel of allPanels(dashboard.panels)) {
    for (const target of panel.targets ?? []) {
      queries.push({
        where: `panel "${panel.title}" (${target.refId})`,
        expr: withGrafanaVariables(target.expr),
      });
    }
  }
  for (const variable of dashboard.templating.list) {
    if (variable.type !== "query") continue;
    const text = typeof variable.query === "string"
      ? variable.query
      : String((variable.query as { query: string }).query);
    const labelValues = /^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$/.exec(text.trim());
    assert(labelValues, `variable ${variable.name}: expected label_values(<selector>, <label>)`);
    queries.push({
      where: `variable "${variable.name}"`,
      expr: withGrafanaVariables(labelValues[1]),
      listsLabel: labelValues[2],
    });
  }
  return queries;
}

async function ruleQueries(): Promise<Query[]> {
  const { groups } = await readRules();
  return groups.flatMap((group) =>
    group.rules.map((rule) => ({ where: `rule ${rule.alert ?? rule.record}`, expr: rule.expr }))
  );
}

/** The promtool to use (`FAAS_PROMTOOL`, else the one on PATH), or why there is none. */
function findPromtool(): Promise<{ path: string } | { missing: string }> {
  return findExecutable("FAAS_PROMTOOL", "promtool", "Debian's prometheus package has it");
}

async function promtool(args: string[], cwd: string): Promise<{ ok: boolean; output: string }> {
  const { success, stdout, stderr } = await new Deno.Command(
    (promtoolFound as { path: string }).path,
    {
      args,
      cwd,
      stdout: "piped",
      stderr: "piped",
    },
  ).output();
  const decoder = new TextDecoder();
  return { ok: success, output: decoder.decode(stdout) + decoder.decode(stderr) };
}

const promtoolFound = await findPromtool();
if ("missing" in promtoolFound) {
  console.log(`skipping the promtool checks of ${RULES_PATH}: ${promtoolFound.missing}`);
}

Deno.test("every metric and label the dashboard and the alert rules query is exported", async () => {
  await using service = await startRealService({ FAAS_LANGUAGES: "javascript,python" });
  // Give each family samples to read labels from: runs of both languages, a refused request.
  await runCode(service.url, { language: "js", code: "return 1" });
  await runCode(service.url, { language: "python", code: "1" });
  const invalid = await postJson(service.url, "/run_code", { language: "js", code: "" });
  assertEquals(invalid.status, 400);
  const families = parseExposition(await (await fetch(service.url + "/metrics")).text());
  assert(families.size > 20, `a real exposition: ${[...families.keys()]}`);

  const queries = [...dashboardQueries(await readDashboard()), ...await ruleQueries()];
  assert(queries.length > 30, `the dashboard and the rules query something: ${queries.length}`);
  const problems: string[] = [];
  const used = new Set<string>();
  for (const query of queries) {
    const found = selectors(query.expr);
    if (found.length === 0) problems.push(`${query.where}: selects no metric: ${query.expr}`);
    for (const { metric, matchers } of found) {
      used.add(metric);
      if (SCRAPE_SERIES.has(metric)) {
        for (const { label } of matchers) {
          if (!TARGET_LABELS.has(label)) problems.push(`${query.where}: up has no label ${label}`);
        }
        continue;
      }
      const family = familyOf(families, metric);
      if (!family) {
        problems.push(`${query.where}: ${metric} is not exported`);
        continue;
      }
      const labels = [...matchers.map((matcher) => matcher.label)];
      if (query.listsLabel) labels.push(query.listsLabel);
      for (const label of labels) {
        if (TARGET_LABELS.has(label)) continue;
        if (family.samples === 0) {
          problems.push(`${query.where}: ${metric} has no samples to check ${label} against`);
        } else if (!family.labels.has(label)) {
          problems.push(
            `${query.where}: ${metric} has no label ${label} (it has ${[...family.labels]})`,
          );
        }
      }
    }
  }
  assertEquals(problems, []);
  // The service's own metrics are all on the dashboard.
  const shown = new Set([...used].map((name) => name.replace(/_(bucket|sum|count)$/, "")));
  const unshown = [...families.keys()].filter((name) =>
    name.startsWith("faas_") && !shown.has(name)
  );
  assertEquals(unshown, [], "every faas_* metric is used by the dashboard or a rule");
});

Deno.test("the selector reader finds every metric and skips functions, labels and keywords", () => {
  const read = (expr: string) =>
    selectors(expr).map(({ metric, matchers }) =>
      matchers.length ? `${metric}{${matchers.map((m) => m.label).join(",")}}` : metric
    );
  assertEquals(
    read(
      'histogram_quantile(0.99, sum by (le, language) (rate(a_bucket{job=~"x", l="y"}[5m])))',
    ),
    ["a_bucket{job,l}"],
  );
  assertEquals(
    read("sum(b) by (job) / ignoring(status) group_left c offset 5m > bool 1 and on(x) d"),
    ["b", "c", "d"],
  );
  assertEquals(read('absent(up{job="j"}) or vector(0) unless {__name__="e"}'), [
    "up{job}",
    "e{__name__}",
  ]);
  assertEquals(read("f == 0 and g > 0.5e3"), ["f", "g"]);
  assertEquals(read("sum without (instance) (rate(h[1h30m]))"), ["h"]);
});

Deno.test("the dashboard imports into Grafana: a datasource variable, panels on a grid", async () => {
  const dashboard = await readDashboard();
  assertEquals(typeof dashboard.title, "string");
  assertEquals(typeof dashboard.uid, "string");
  assert(dashboard.uid.length <= 40, "a uid Grafana accepts");
  assert(Number.isInteger(dashboard.schemaVersion) && dashboard.schemaVersion >= 30);
  assert(dashboard.id === undefined || dashboard.id === null, "no id: import assigns one");
  const variables = dashboard.templating.list as { name: string; type: string; query: unknown }[];
  const datasource = variables.find((variable) => variable.type === "datasource");
  assertEquals(datasource?.query, "prometheus");
  const panels = allPanels(dashboard.panels);
  const ids = panels.map((panel) => panel.id);
  assertEquals(new Set(ids).size, ids.length, "unique panel ids");
  const cells = new Set<string>();
  for (const panel of panels) {
    const { x, y, w, h } = panel.gridPos;
    assert(x >= 0 && w > 0 && x + w <= 24 && h > 0 && y >= 0, `"${panel.title}" fits the grid`);
    for (let col = x; col < x + w; col++) {
      for (let row = y; row < y + h; row++) {
        assert(!cells.has(`${col},${row}`), `"${panel.title}" overlaps another panel`);
        cells.add(`${col},${row}`);
      }
    }
    if (panel.type === "row") continue;
    assert(panel.targets && panel.targets.length > 0, `"${panel.title}" has queries`);
    for (const target of [panel, ...panel.targets]) {
      assertEquals(
        target.datasource,
        { type: "prometheus", uid: "${datasource}" },
        `"${panel.title}" reads the chosen Prometheus`,
      );
    }
    const refIds = panel.targets.map((target) => target.refId);
    assertEquals(new Set(refIds).size, refIds.length, `"${panel.title}" has unique refIds`);
  }
  for (
    const title of [
      "Runs/s by language and status",
      "Service error rate",
      "Execution time p50 / p99",
      "Queue time p50 / p99",
      "Queue length",
      "Sandbox instances by state",
      "Sandbox start time p50 / p99",
      "Sandbox starts/s by outcome",
      "Rejected requests/s by reason",
      "CPU",
      "Memory",
    ]
  ) {
    assert(panels.some((panel) => panel.title === title), `a panel "${title}"`);
  }
});

Deno.test({
  name: "every dashboard query is PromQL that Prometheus parses",
  ignore: "missing" in promtoolFound,
  async fn() {
    // promtool parses expressions of rule files: each query becomes a recording rule.
    const queries = dashboardQueries(await readDashboard());
    const rules = queries.map((query, index) => ({
      record: `dashboard:query_${index}`,
      expr: query.expr,
    }));
    const dir = await Deno.makeTempDir({ prefix: "faas-dashboard-" });
    try {
      await Deno.writeTextFile(
        `${dir}/dashboard.yaml`,
        toYaml({ groups: [{ name: "dashboard", rules }] }),
      );
      const { ok, output } = await promtool(["check", "rules", "dashboard.yaml"], dir);
      assert(ok, output);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

const SEVERITIES = ["critical", "warning"];
const RULE_KEYS = new Set(["alert", "expr", "for", "keep_firing_for", "labels", "annotations"]);
const GROUP_KEYS = new Set(["name", "interval", "query_offset", "limit", "rules", "labels"]);

Deno.test("the alert rules are a rules file Prometheus loads, each with a runbook", async () => {
  const text = await Deno.readTextFile(new URL(RULES_PATH, ROOT));
  const file = parseYaml(text);
  assertEquals(Object.keys(file), ["groups"]);
  assert(Array.isArray(file.groups) && file.groups.length > 0, "groups");
  const names = new Set<string>();
  for (const group of file.groups) {
    for (const key of Object.keys(group)) assert(GROUP_KEYS.has(key), `group key ${key}`);
    assertEquals(typeof group.name, "string");
    assert(Array.isArray(group.rules) && group.rules.length > 0, `group ${group.name} has rules`);
    for (const rule of group.rules as Rule[]) {
      const name = rule.alert!;
      for (const key of Object.keys(rule)) assert(RULE_KEYS.has(key), `${name}: key ${key}`);
      assert(/^[A-Z][A-Za-z0-9]+$/.test(name), `alert name ${name}`);
      assert(!names.has(name), `${name} is unique`);
      names.add(name);
      assert(typeof rule.expr === "string" && rule.expr.trim() !== "", `${name}: expr`);
      assert(/^(\d+(ms|s|m|h|d|w|y))+$/.test(rule.for ?? ""), `${name}: a duration in for`);
      assert(SEVERITIES.includes(rule.labels?.severity ?? ""), `${name}: severity`);
      const summary = rule.annotations?.summary ?? "";
      const description = rule.annotations?.description ?? "";
      assert(summary.length > 10 && !summary.includes("\n"), `${name}: a one-line summary`);
      // A runbook: what it means, then what to check or do.
      assert(description.length > 200, `${name}: a runbook-length description`);
      assert(/\b(check|look|scale|raise|restart|report)/i.test(description), `${name}: actions`);
      for (const template of [summary, description].join(" ").matchAll(/\{\{([^}]*)\}\}/g)) {
        assert(
          /^\s*\$labels\.[a-z_]+\s*$/.test(template[1]),
          `${name}: annotations template only $labels.<name>, not ${template[0]}`,
        );
      }
    }
  }
  for (
    const alert of [
      "FaasSandboxDown",
      "FaasSandboxRunsCrashing",
      "FaasSandboxHighErrorRate",
      "FaasSandboxQueueSaturated",
      "FaasSandboxSlowQueue",
      "FaasSandboxSlowRuns",
      "FaasSandboxStartFailures",
      "FaasSandboxNoIdleSandboxes",
      "FaasSandboxExecutionSlotsExhausted",
    ]
  ) {
    assert(names.has(alert), `an alert ${alert}`);
  }
  if ("path" in promtoolFound) {
    const { ok, output } = await promtool(["check", "rules", RULES_PATH], ROOT.pathname);
    assert(ok, output);
  }
});

// ---------------------------------------------------------------------------------------------
// The alerts on made-up series (promtool test rules): a healthy service fires none, and each
// alert fires on its own symptom with the labels and annotations the rules file gives it.

/** The labels of the made-up instance's series. */
const TARGET = { job: "faas-sandbox", instance: "sandbox-0:8000" };
const MINUTES = 40;
const BUCKETS = ["0.01", "0.1", "1", "10", "30", "+Inf"];

type Series = Record<string, string>;

function series(name: string, labels: Record<string, string> = {}): string {
  const all = { ...TARGET, ...labels };
  return `${name}{${Object.entries(all).map(([key, value]) => `${key}="${value}"`).join(",")}}`;
}

/** A counter growing by `perMinute` each minute. */
function counter(perMinute: number): string {
  return perMinute === 0 ? `0x${MINUTES}` : `0+${perMinute}x${MINUTES}`;
}

function gauge(value: number): string {
  return `${value}x${MINUTES}`;
}

/** A histogram whose `perMinute` observations all fall in the bucket `le`. */
function histogram(
  name: string,
  labels: Record<string, string>,
  options: { le: string; perMinute: number },
): Series {
  const result: Series = {};
  for (const le of BUCKETS) {
    const inBucket = le === "+Inf" || Number(le) >= Number(options.le);
    result[series(`${name}_bucket`, { ...labels, le })] = counter(
      inBucket ? options.perMinute : 0,
    );
  }
  result[series(`${name}_count`, labels)] = counter(options.perMinute);
  result[series(`${name}_sum`, labels)] = counter(options.perMinute * Number(options.le));
  return result;
}

const JS = { language: "javascript" };

/** A busy, healthy instance: 11 runs/s, 9% of them user errors, warm pool, short queue. */
function healthy(): Series {
  return {
    [series("up")]: gauge(1),
    [series("faas_executions_total", { ...JS, status: "success" })]: counter(600),
    [series("faas_executions_total", { ...JS, status: "error" })]: counter(60),
    [series("faas_executions_total", { ...JS, status: "crashed" })]: counter(0),
    [series("faas_rejected_requests_total", { reason: "invalid_request" })]: counter(6),
    [series("faas_rejected_requests_total", { reason: "internal_error" })]: counter(0),
    [series("faas_rejected_requests_total", { reason: "queue_full" })]: counter(0),
    [series("faas_queue_length")]: gauge(0),
    [series("faas_queue_capacity")]: gauge(1000),
    [series("faas_executions_in_flight")]: gauge(3),
    [series("faas_execution_slots")]: gauge(50),
    [series("faas_instances", { ...JS, state: "idle" })]: gauge(5),
    [series("faas_instances", { ...JS, state: "active" })]: gauge(3),
    [series("faas_http_accept_errors_total")]: counter(0),
    ...histogram("faas_execution_duration_seconds", JS, { le: "0.01", perMinute: 660 }),
    ...histogram("faas_queue_time_seconds", JS, { le: "0.01", perMinute: 660 }),
    ...histogram("faas_sandbox_start_seconds", { ...JS, outcome: "ok" }, {
      le: "0.1",
      perMinute: 10,
    }),
    ...histogram("faas_sandbox_start_seconds", { ...JS, outcome: "failed" }, {
      le: "0.1",
      perMinute: 0,
    }),
  };
}

interface Scenario {
  alert: string;
  /** The healthy series, changed to show the symptom. */
  series: Series;
  /** When to look: past the rule's `for`. */
  at: string;
  /** The alert's labels besides its rule's own (severity). */
  labels: Record<string, string>;
}

const PER_LANGUAGE = { ...TARGET, ...JS };

function without(all: Series, name: string): Series {
  return Object.fromEntries(Object.entries(all).filter(([key]) => !key.startsWith(`${name}{`)));
}

const SCENARIOS: Scenario[] = [
  {
    alert: "FaasSandboxDown",
    series: { ...healthy(), [series("up")]: `1 1 0x${MINUTES - 2}` },
    at: "10m",
    labels: TARGET,
  },
  {
    alert: "FaasSandboxTargetMissing",
    series: without(healthy(), "up"),
    at: "10m",
    labels: { job: "faas-sandbox" },
  },
  {
    alert: "FaasSandboxRunsCrashing",
    series: {
      ...healthy(),
      [series("faas_executions_total", { ...JS, status: "crashed" })]: counter(60),
    },
    at: "20m",
    labels: TARGET,
  },
  {
    alert: "FaasSandboxInternalErrors",
    series: {
      ...healthy(),
      [series("faas_rejected_requests_total", { reason: "internal_error" })]: counter(6),
    },
    at: "10m",
    labels: TARGET,
  },
  {
    alert: "FaasSandboxHighErrorRate",
    series: {
      ...healthy(),
      [series("faas_executions_total", { ...JS, status: "error" })]: counter(1200),
    },
    at: "30m",
    labels: TARGET,
  },
  {
    alert: "FaasSandboxQueueSaturated",
    series: { ...healthy(), [series("faas_queue_length")]: gauge(900) },
    at: "10m",
    labels: TARGET,
  },
  {
    alert: "FaasSandboxRejectingRuns",
    series: {
      ...healthy(),
      [series("faas_rejected_requests_total", { reason: "queue_full" })]: counter(30),
    },
    at: "10m",
    labels: TARGET,
  },
  {
    alert: "FaasSandboxExecutionSlotsExhausted",
    series: {
      ...healthy(),
      [series("faas_executions_in_flight")]: gauge(50),
      [series("faas_queue_length")]: gauge(3),
    },
    at: "10m",
    labels: TARGET,
  },
  {
    alert: "FaasSandboxNoIdleSandboxes",
    series: {
      ...healthy(),
      [series("faas_instances", { ...JS, state: "idle" })]: gauge(0),
      [series("faas_queue_length")]: gauge(3),
    },
    at: "20m",
    labels: PER_LANGUAGE,
  },
  {
    alert: "FaasSandboxSlowQueue",
    series: {
      ...healthy(),
      ...histogram("faas_queue_time_seconds", JS, { le: "10", perMinute: 660 }),
    },
    at: "20m",
    labels: PER_LANGUAGE,
  },
  {
    alert: "FaasSandboxSlowRuns",
    series: {
      ...healthy(),
      ...histogram("faas_execution_duration_seconds", JS, { le: "30", perMinute: 660 }),
    },
    at: "25m",
    labels: PER_LANGUAGE,
  },
  {
    alert: "FaasSandboxStartFailures",
    series: {
      ...healthy(),
      ...histogram("faas_sandbox_start_seconds", { ...JS, outcome: "failed" }, {
        le: "0.1",
        perMinute: 5,
      }),
    },
    at: "20m",
    labels: PER_LANGUAGE,
  },
  {
    alert: "FaasSandboxSlowSandboxStart",
    series: {
      ...healthy(),
      ...histogram("faas_sandbox_start_seconds", { ...JS, outcome: "ok" }, {
        le: "10",
        perMinute: 10,
      }),
    },
    at: "25m",
    labels: PER_LANGUAGE,
  },
  {
    alert: "FaasSandboxAcceptErrors",
    series: { ...healthy(), [series("faas_http_accept_errors_total")]: counter(3) },
    at: "10m",
    labels: TARGET,
  },
];

/** The rule's annotations as Prometheus expands them for an alert with `labels`. */
function expandAnnotations(rule: Rule, labels: Record<string, string>): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [key, template] of Object.entries(rule.annotations ?? {})) {
    result[key] = template.replace(
      /\{\{\s*\$labels\.([a-z_]+)\s*\}\}/g,
      (_, name: string) => labels[name] ?? "",
    );
  }
  return result;
}

function inputSeries(all: Series) {
  return Object.entries(all).map(([name, values]) => ({ series: name, values }));
}

Deno.test({
  name: "each alert fires on its symptom, and none on a healthy service",
  ignore: "missing" in promtoolFound,
  async fn() {
    const rules = (await readRules()).groups.flatMap((group) => group.rules);
    assertEquals(
      SCENARIOS.map((scenario) => scenario.alert).sort(),
      rules.map((rule) => rule.alert!).sort(),
      "a scenario for every alert",
    );
    const tests = [
      {
        name: "a healthy service",
        interval: "1m",
        input_series: inputSeries(healthy()),
        alert_rule_test: rules.flatMap((rule) =>
          ["10m", "30m"].map((at) => ({ eval_time: at, alertname: rule.alert, exp_alerts: [] }))
        ),
      },
      ...SCENARIOS.map((scenario) => {
        const rule = rules.find((candidate) => candidate.alert === scenario.alert)!;
        return {
          name: scenario.alert,
          interval: "1m",
          input_series: inputSeries(scenario.series),
          alert_rule_test: [{
            eval_time: scenario.at,
            alertname: scenario.alert,
            exp_alerts: [{
              exp_labels: { ...scenario.labels, ...rule.labels },
              exp_annotations: expandAnnotations(rule, scenario.labels),
            }],
          }],
        };
      }),
    ];
    const dir = await Deno.makeTempDir({ prefix: "faas-alerts-" });
    try {
      await Deno.writeTextFile(
        `${dir}/alerts_test.yaml`,
        toYaml({
          rule_files: [new URL(RULES_PATH, ROOT).pathname],
          evaluation_interval: "1m",
          tests,
        }),
      );
      const { ok, output } = await promtool(["test", "rules", "alerts_test.yaml"], dir);
      assert(ok, output);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
