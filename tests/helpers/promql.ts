/**
 * Reading PromQL conservatively, enough to say which metrics and labels an expression selects,
 * and reading the Prometheus text exposition, enough to say which metrics and labels a
 * `/metrics` answer has.
 *
 * An expression is split into tokens (strings, numbers and durations, identifiers, punctuation).
 * An identifier is a metric name unless it is a function (followed by `(`), an aggregation
 * operator, a keyword or operator word, or a label inside a `by (…)`, `without (…)`, `on (…)`, `ignoring (…)` or
 * `group_left/right (…)` list; everything between `{` and `}` is label matchers, between `[` and
 * `]` a range. So nothing that names a metric is missed, including a bare `faas_queue_length`.
 *
 * @module
 */

/** A selector found in an expression: its metric name and the labels its matchers name. */
export interface Selector {
  /** The metric name, as written (a histogram's `_bucket` suffix included). */
  metric: string;
  /** Labels named in its `{…}` matchers, with their operators and values. */
  matchers: { label: string; op: string; value: string }[];
}

type Token = { kind: "ident" | "string" | "number" | "punct"; text: string };

/** Words that are not metric names where they stand alone. */
const KEYWORDS = new Set([
  "and",
  "or",
  "unless",
  "bool",
  "offset",
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "atan2",
  "inf",
  "nan",
]);

/** Aggregation operators, which may take `by (…)` or `without (…)` before their `(`. */
const AGGREGATIONS = new Set([
  "sum",
  "min",
  "max",
  "avg",
  "group",
  "stddev",
  "stdvar",
  "count",
  "count_values",
  "bottomk",
  "topk",
  "quantile",
  "limitk",
  "limit_ratio",
]);

/** Words followed by a list of label names in parentheses. */
const LABEL_LISTS = new Set(["by", "without", "on", "ignoring", "group_left", "group_right"]);

function tokenize(expr: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < expr.length) {
    const rest = expr.slice(i);
    const space = /^(\s+|#[^\n]*)/.exec(rest);
    if (space) {
      i += space[0].length;
      continue;
    }
    const string = /^("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)/.exec(rest);
    if (string) {
      tokens.push({ kind: "string", text: string[0].slice(1, -1) });
      i += string[0].length;
      continue;
    }
    const number =
      /^(0x[0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?(?:ms|[smhdwy])?(?:\d+(?:ms|[smhdwy]))*)/
        .exec(rest);
    if (number) {
      tokens.push({ kind: "number", text: number[0] });
      i += number[0].length;
      continue;
    }
    const ident = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(rest);
    if (ident) {
      tokens.push({ kind: "ident", text: ident[0] });
      i += ident[0].length;
      continue;
    }
    const punct = /^(=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])/.exec(rest);
    if (!punct) throw new Error(`expected PromQL, got ${JSON.stringify(rest.slice(0, 20))}`);
    tokens.push({ kind: "punct", text: punct[0] });
    i += punct[0].length;
  }
  return tokens;
}

/** Every selector of `expr`, in order. Throws on text that is not PromQL's. */
export function selectors(expr: string): Selector[] {
  const tokens = tokenize(expr);
  const found: Selector[] = [];
  let i = 0;
  const skipTo = (close: string) => {
    while (i < tokens.length && tokens[i].text !== close) i++;
    i++;
  };
  const matchers = (): Selector["matchers"] => {
    const list: Selector["matchers"] = [];
    i++; // "{"
    while (i < tokens.length && tokens[i].text !== "}") {
      if (tokens[i].text === ",") {
        i++;
        continue;
      }
      const [label, op, value] = [tokens[i], tokens[i + 1], tokens[i + 2]];
      if (label?.kind !== "ident" && label?.kind !== "string" || value?.kind !== "string") {
        throw new Error(`expected a label matcher in ${expr}`);
      }
      list.push({ label: label.text, op: op.text, value: value.text });
      i += 3;
    }
    i++; // "}"
    return list;
  };
  while (i < tokens.length) {
    const token = tokens[i];
    const next = tokens[i + 1];
    if (token.text === "[") {
      skipTo("]");
      continue;
    }
    if (token.text === "{") {
      // A selector without a name before the braces: {__name__="…"}.
      const list = matchers();
      const name = list.find((matcher) => matcher.label === "__name__" && matcher.op === "=");
      if (name) found.push({ metric: name.value, matchers: list });
      continue;
    }
    if (token.kind !== "ident") {
      i++;
      continue;
    }
    if (LABEL_LISTS.has(token.text) && next?.text === "(") {
      i++;
      skipTo(")");
      continue;
    }
    if (next?.text === "(" || KEYWORDS.has(token.text) || AGGREGATIONS.has(token.text)) {
      i++;
      continue;
    }
    i++;
    found.push({ metric: token.text, matchers: next?.text === "{" ? matchers() : [] });
  }
  return found;
}

/** A metric family of a `/metrics` answer. */
export interface Family {
  /** Its `# TYPE`: counter, gauge, histogram, summary or untyped. */
  type: string;
  /** Labels its samples carry (a histogram's `le` included). */
  labels: Set<string>;
  /** How many samples it has. */
  samples: number;
}

/** The families of a Prometheus text exposition, by name. */
export function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) {
      families.set(type[1], { type: type[2], labels: new Set(), samples: 0 });
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+/.exec(line);
    if (!sample) continue;
    const family = familyOf(families, sample[1]);
    if (!family) continue;
    family.samples++;
    for (const label of (sample[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) {
      family.labels.add(label[1]);
    }
  }
  return families;
}

/** Suffixes of the series of a histogram (and of a summary, but `_bucket`). */
const SERIES_SUFFIXES = ["_bucket", "_sum", "_count"];

/**
 * The family a series name belongs to: itself, or a histogram (or summary) it is the
 * `_bucket`, `_sum` or `_count` series of.
 */
export function familyOf(families: Map<string, Family>, name: string): Family | undefined {
  const own = families.get(name);
  if (own) return own;
  for (const suffix of SERIES_SUFFIXES) {
    if (!name.endsWith(suffix)) continue;
    const family = families.get(name.slice(0, -suffix.length));
    if (family?.type === "histogram") return family;
    if (family?.type === "summary" && suffix !== "_bucket") return family;
  }
  return undefined;
}
