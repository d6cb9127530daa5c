/**
 * The programs every target runs, per language, and how their answers are judged: the same
 * inputs go to the service and to each baseline.
 *
 * @module
 */

import { type AnswerCheck, checkRunSucceeded } from "./load.ts";

/** Languages measured, by their canonical contract names. */
export type BenchLanguage = "javascript" | "typescript" | "python";

/** Kinds of program measured. */
export type ProgramKind = "trivial" | "evaluator";

/** One program: its source, its input, and a check of its answer. */
export interface Program {
  /** Language of the source. */
  language: BenchLanguage;
  /** Which of the measured programs this is. */
  kind: ProgramKind;
  /** Source code as sent in `code`. */
  code: string;
  /** JSON value sent as `input`. */
  input?: unknown;
  /** Judges a 200 answer: a successful run with the expected `ret_val`. */
  check: AnswerCheck;
}

/** A conversation turn as an evaluator receives it: the answer to score and the reference. */
export const TURN = {
  turn_id: "turn-0042",
  evaluate_dataset_fields: {
    input: "What does a closed-loop load generator do?",
    reference_output:
      "It keeps a fixed number of requests in flight: each client sends a request, waits for " +
      "the full answer, then sends the next one, so the offered load follows the latency.",
  },
  evaluate_target_output_fields: {
    actual_output:
      "A closed loop generator keeps a fixed number of clients; each sends one request, waits " +
      "for the answer and only then sends the next, so load adapts to the server latency.",
  },
};

const TRIVIAL_JS = "console.log('Hello World'); return 42;";
const TRIVIAL_TS = "const answer: number = 42;\nconsole.log('Hello World');\nreturn answer;";
const TRIVIAL_PY = "print('Hello World')\n42";

const EVALUATOR_JS = `function tokens(text) {
  return String(text).toLowerCase().match(/[a-z0-9]+/g) ?? [];
}

function exec_evaluation(turn) {
  const actual = tokens(turn.evaluate_target_output_fields.actual_output);
  const expected = tokens(turn.evaluate_dataset_fields.reference_output);
  const wanted = new Map();
  for (const t of expected) wanted.set(t, (wanted.get(t) ?? 0) + 1);
  let overlap = 0;
  for (const t of actual) {
    const n = wanted.get(t) ?? 0;
    if (n > 0) {
      overlap++;
      wanted.set(t, n - 1);
    }
  }
  const precision = actual.length ? overlap / actual.length : 0;
  const recall = expected.length ? overlap / expected.length : 0;
  const f1 = precision + recall ? (2 * precision * recall) / (precision + recall) : 0;
  return {
    score: Math.round(f1 * 1000) / 1000,
    reason: \`token F1: \${overlap} shared tokens, \${actual.length} actual, \${expected.length} expected\`,
  };
}

console.log("scoring", input.turn_id);
const result = exec_evaluation(input);
console.log("__COZE_RETURN_VAL_START__");
console.log(JSON.stringify(result));
console.log("__COZE_RETURN_VAL_END__");
`;

const EVALUATOR_TS = `interface Turn {
  turn_id: string;
  evaluate_dataset_fields: { input: string; reference_output: string };
  evaluate_target_output_fields: { actual_output: string };
}

interface Verdict {
  score: number;
  reason: string;
}

function tokens(text: unknown): string[] {
  return String(text).toLowerCase().match(/[a-z0-9]+/g) ?? [];
}

function exec_evaluation(turn: Turn): Verdict {
  const actual = tokens(turn.evaluate_target_output_fields.actual_output);
  const expected = tokens(turn.evaluate_dataset_fields.reference_output);
  const wanted = new Map<string, number>();
  for (const t of expected) wanted.set(t, (wanted.get(t) ?? 0) + 1);
  let overlap = 0;
  for (const t of actual) {
    const n = wanted.get(t) ?? 0;
    if (n > 0) {
      overlap++;
      wanted.set(t, n - 1);
    }
  }
  const precision = actual.length ? overlap / actual.length : 0;
  const recall = expected.length ? overlap / expected.length : 0;
  const f1 = precision + recall ? (2 * precision * recall) / (precision + recall) : 0;
  return {
    score: Math.round(f1 * 1000) / 1000,
    reason: \`token F1: \${overlap} shared tokens, \${actual.length} actual, \${expected.length} expected\`,
  };
}

const turn = input as Turn;
console.log("scoring", turn.turn_id);
const result: Verdict = exec_evaluation(turn);
console.log("__COZE_RETURN_VAL_START__");
console.log(JSON.stringify(result));
console.log("__COZE_RETURN_VAL_END__");
`;

const EVALUATOR_PY = `import json
import re


def tokens(text):
    return re.findall(r"[a-z0-9]+", str(text).lower())


def exec_evaluation(turn):
    actual = tokens(turn["evaluate_target_output_fields"]["actual_output"])
    expected = tokens(turn["evaluate_dataset_fields"]["reference_output"])
    wanted = {}
    for t in expected:
        wanted[t] = wanted.get(t, 0) + 1
    overlap = 0
    for t in actual:
        if wanted.get(t, 0) > 0:
            overlap += 1
            wanted[t] -= 1
    precision = overlap / len(actual) if actual else 0
    recall = overlap / len(expected) if expected else 0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0
    return {
        "score": round(f1, 3),
        "reason": f"token F1: {overlap} shared tokens, {len(actual)} actual, {len(expected)} expected",
    }


print("scoring", input["turn_id"])
result = exec_evaluation(input)
print("__COZE_RETURN_VAL_START__")
print(json.dumps(result))
print("__COZE_RETURN_VAL_END__")
`;

/** The score every evaluator must find for {@link TURN}, computed here as the oracle. */
export function expectedScore(): number {
  const tokens = (text: string) => text.toLowerCase().match(/[a-z0-9]+/g) ?? [];
  const actual = tokens(TURN.evaluate_target_output_fields.actual_output);
  const expected = tokens(TURN.evaluate_dataset_fields.reference_output);
  const wanted = new Map<string, number>();
  for (const t of expected) wanted.set(t, (wanted.get(t) ?? 0) + 1);
  let overlap = 0;
  for (const t of actual) {
    const n = wanted.get(t) ?? 0;
    if (n > 0) {
      overlap++;
      wanted.set(t, n - 1);
    }
  }
  const precision = overlap / actual.length;
  const recall = overlap / expected.length;
  return (2 * precision * recall) / (precision + recall);
}

interface RunAnswer {
  output?: { stdout?: unknown; ret_val?: unknown };
}

function checkTrivial(answer: unknown): string | undefined {
  const problem = checkRunSucceeded(answer);
  if (problem) return problem;
  const output = (answer as RunAnswer).output;
  if (output?.ret_val !== "42" || output.stdout !== "Hello World\n") return "wrong_result";
  return undefined;
}

function checkEvaluator(answer: unknown): string | undefined {
  const problem = checkRunSucceeded(answer);
  if (problem) return problem;
  const output = (answer as RunAnswer).output;
  if (typeof output?.ret_val !== "string" || typeof output.stdout !== "string") {
    return "wrong_result";
  }
  if (output.stdout.includes("__COZE_RETURN_VAL_START__")) return "wrong_result";
  try {
    const verdict = JSON.parse(output.ret_val);
    if (Math.abs(verdict.score - expectedScore()) > 0.001) return "wrong_result";
    if (typeof verdict.reason !== "string") return "wrong_result";
  } catch {
    return "wrong_result";
  }
  return undefined;
}

const SOURCES: Record<BenchLanguage, Record<ProgramKind, string>> = {
  javascript: { trivial: TRIVIAL_JS, evaluator: EVALUATOR_JS },
  typescript: { trivial: TRIVIAL_TS, evaluator: EVALUATOR_TS },
  python: { trivial: TRIVIAL_PY, evaluator: EVALUATOR_PY },
};

/** The program of `kind` in `language`. */
export function program(language: BenchLanguage, kind: ProgramKind): Program {
  return {
    language,
    kind,
    code: SOURCES[language][kind],
    input: kind === "evaluator" ? TURN : undefined,
    check: kind === "trivial" ? checkTrivial : checkEvaluator,
  };
}

/** How tenants are assigned: one tenant for every request, or a new one per request. */
export type Tenancy = "one" | "new" | "none";

/**
 * A body factory for {@link runLoad}: the program as a `/run_code` request, tagged with one
 * fixed tenant, a new tenant per request (`ext.space_id` unique), or no tenant at all.
 */
export function requestBody(prog: Program, tenancy: Tenancy): (index: number) => unknown {
  const run = crypto.randomUUID().slice(0, 8);
  return (index) => ({
    language: prog.language,
    code: prog.code,
    timeout: 5000,
    ...(prog.input === undefined ? {} : { input: prog.input }),
    ...(tenancy === "none"
      ? {}
      : { ext: { space_id: tenancy === "one" ? "bench-tenant" : `bench-${run}-${index}` } }),
  });
}
