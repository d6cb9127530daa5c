/**
 * The programs every target runs, per language, and how their answers are judged: the same
 * inputs go to the service and to each baseline.
 *
 * @module
 */

import { type AnswerCheck, checkRunSucceeded } from "./load.ts";

/** Languages measured, by their canonical contract names. */
export type BenchLanguage = "javascript" | "typescript" | "python";

/**
 * Kinds of program measured: the trivial seed example, the platform's evaluator template,
 * and (Python only) an evaluator that scores with numpy.
 */
export type ProgramKind = "trivial" | "evaluator" | "numpy";

/** One program: its source, its input, and a check of its answer. */
export interface Program {
  /** Language of the source. */
  language: BenchLanguage;
  /** Which of the measured programs this is. */
  kind: ProgramKind | HostileKind;
  /** Source code as sent in `code`. */
  code: string;
  /** JSON value sent as `input`. */
  input?: unknown;
  /** Judges a 200 answer: a successful run with the expected `ret_val`. */
  check: AnswerCheck;
}

/**
 * A dataset turn as the platform hands it to a code evaluator: each field a content with its
 * type and text. The platform's code builder embeds it in the code; here it travels as
 * `input`, so that every target parses the same JSON the same way.
 */
export const TURN = {
  turn_id: "turn-0042",
  evaluate_dataset_fields: {
    input: { content_type: "Text", text: "What does a closed-loop load generator do?" },
    reference_output: {
      content_type: "Text",
      text: "It keeps a fixed number of requests in flight: each client sends a request, waits " +
        "for the full answer, then sends the next one, so the offered load follows the latency.",
    },
  },
  evaluate_target_output_fields: {
    actual_output: {
      content_type: "Text",
      text: "A closed loop generator keeps a fixed number of clients; each sends one request, " +
        "waits for the answer and only then sends the next, so load adapts to the server latency.",
    },
  },
  ext: {},
};

/** What an evaluator prints besides its result: one log line naming the turn. */
export const EVALUATOR_LOG = `scoring ${TURN.turn_id}\n`;

const TRIVIAL_JS = "console.log('Hello World'); return 42;";
const TRIVIAL_TS = "const answer: number = 42;\nconsole.log('Hello World');\nreturn answer;";
const TRIVIAL_PY = "print('Hello World')\n42";

// The evaluators follow the platform's template: the user's `exec_evaluation` returns an
// `EvalOutput`; the template defines that class and its own `return_val`, which prints the
// result between the marker lines, calls the evaluator (awaiting it when it is async), and
// turns a failure into a zero score.

const EVALUATOR_JS = `class EvalOutput {
  constructor(score, reason) {
    this.score = score;
    this.reason = reason;
  }
}

function return_val(value) {
  console.log("__COZE_RETURN_VAL_START__");
  console.log(value);
  console.log("__COZE_RETURN_VAL_END__");
}

function tokens(text) {
  return String(text).toLowerCase().match(/[a-z0-9]+/g) ?? [];
}

function exec_evaluation(turn) {
  const actual = tokens(turn.evaluate_target_output_fields.actual_output.text);
  const expected = tokens(turn.evaluate_dataset_fields.reference_output.text);
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
  return new EvalOutput(
    Math.round(f1 * 1000) / 1000,
    \`token F1: \${overlap} shared tokens, \${actual.length} actual, \${expected.length} expected\`,
  );
}

const turn = input;
console.log("scoring", turn.turn_id);
let result;
try {
  result = await exec_evaluation(turn);
} catch (error) {
  console.error(\`evaluation failed: \${error}\`);
  result = new EvalOutput(0, \`evaluation failed: \${error}\`);
}
return_val(JSON.stringify({ score: result.score, reason: result.reason }));
`;

const EVALUATOR_TS = `interface Content {
  content_type: string;
  text: string;
}

interface Turn {
  turn_id: string;
  evaluate_dataset_fields: Record<string, Content>;
  evaluate_target_output_fields: Record<string, Content>;
  ext: Record<string, string>;
}

class EvalOutput {
  constructor(public score: number, public reason: string) {}
}

function return_val(value: string): void {
  console.log("__COZE_RETURN_VAL_START__");
  console.log(value);
  console.log("__COZE_RETURN_VAL_END__");
}

function tokens(text: unknown): string[] {
  return String(text).toLowerCase().match(/[a-z0-9]+/g) ?? [];
}

function exec_evaluation(turn: Turn): EvalOutput {
  const actual = tokens(turn.evaluate_target_output_fields.actual_output.text);
  const expected = tokens(turn.evaluate_dataset_fields.reference_output.text);
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
  return new EvalOutput(
    Math.round(f1 * 1000) / 1000,
    \`token F1: \${overlap} shared tokens, \${actual.length} actual, \${expected.length} expected\`,
  );
}

const turn = input as Turn;
console.log("scoring", turn.turn_id);
let result: EvalOutput;
try {
  result = await exec_evaluation(turn);
} catch (error) {
  console.error(\`evaluation failed: \${error}\`);
  result = new EvalOutput(0, \`evaluation failed: \${error}\`);
}
return_val(JSON.stringify({ score: result.score, reason: result.reason }));
`;

const EVALUATOR_PY = `import asyncio
import json
import re
import sys
from dataclasses import asdict, dataclass
from typing import Any, Dict


@dataclass
class EvalOutput:
    score: float
    reason: str


def return_val(value):
    print("__COZE_RETURN_VAL_START__")
    print(value)
    print("__COZE_RETURN_VAL_END__")


def tokens(text):
    return re.findall(r"[a-z0-9]+", str(text).lower())


def exec_evaluation(turn: Dict[str, Any]) -> EvalOutput:
    actual = tokens(turn["evaluate_target_output_fields"]["actual_output"]["text"])
    expected = tokens(turn["evaluate_dataset_fields"]["reference_output"]["text"])
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
    return EvalOutput(
        score=round(f1, 3),
        reason=f"token F1: {overlap} shared tokens, {len(actual)} actual, {len(expected)} expected",
    )


turn = input
print("scoring", turn["turn_id"])
try:
    result = exec_evaluation(turn)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
except Exception as e:
    print(f"evaluation failed: {e}", file=sys.stderr)
    result = EvalOutput(score=0.0, reason=f"evaluation failed: {e}")
return_val(json.dumps(asdict(result), ensure_ascii=False))
`;

// Scores with numpy arrays and returns a numpy scalar (np.float32, which is not a Python
// float): the answer is right only if the service imported numpy and turned the scalar into
// JSON.
const NUMPY_PY = `import re

import numpy as np


def tokens(text):
    return re.findall(r"[a-z0-9]+", str(text).lower())


def exec_evaluation(turn):
    actual = tokens(turn["evaluate_target_output_fields"]["actual_output"]["text"])
    expected = tokens(turn["evaluate_dataset_fields"]["reference_output"]["text"])
    vocabulary = {t: i for i, t in enumerate(sorted(set(actual) | set(expected)))}
    a = np.bincount(np.array([vocabulary[t] for t in actual]), minlength=len(vocabulary))
    e = np.bincount(np.array([vocabulary[t] for t in expected]), minlength=len(vocabulary))
    overlap = np.minimum(a, e).sum()
    return np.float32(2 * overlap / (a.sum() + e.sum()))


exec_evaluation(input)
`;

/** The score every evaluator must find for {@link TURN}, computed here as the oracle. */
export function expectedScore(): number {
  const tokens = (text: string) => text.toLowerCase().match(/[a-z0-9]+/g) ?? [];
  const actual = tokens(TURN.evaluate_target_output_fields.actual_output.text);
  const expected = tokens(TURN.evaluate_dataset_fields.reference_output.text);
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

/**
 * The template's answer: the marker block taken out of stdout as `ret_val` (a JSON object with
 * the oracle's score, rounded to 3 places, and a reason), and only the log line left in stdout.
 */
function checkEvaluator(answer: unknown): string | undefined {
  const problem = checkRunSucceeded(answer);
  if (problem) return problem;
  const output = (answer as RunAnswer).output;
  if (typeof output?.ret_val !== "string" || output.stdout !== EVALUATOR_LOG) {
    return "wrong_result";
  }
  try {
    const verdict = JSON.parse(output.ret_val);
    if (verdict.score !== Math.round(expectedScore() * 1000) / 1000) return "wrong_result";
    if (typeof verdict.reason !== "string" || !verdict.reason.startsWith("token F1: ")) {
      return "wrong_result";
    }
  } catch {
    return "wrong_result";
  }
  return undefined;
}

/** The numpy evaluator's answer: the score as a JSON number (a float32's precision), no output. */
function checkNumpy(answer: unknown): string | undefined {
  const problem = checkRunSucceeded(answer);
  if (problem) return problem;
  const output = (answer as RunAnswer).output;
  if (typeof output?.ret_val !== "string" || output.stdout !== "") return "wrong_result";
  let score: unknown;
  try {
    score = JSON.parse(output.ret_val);
  } catch {
    return "wrong_result";
  }
  if (typeof score !== "number" || Math.abs(score - expectedScore()) > 1e-6) {
    return "wrong_result";
  }
  return undefined;
}

const SOURCES: Record<BenchLanguage, Partial<Record<ProgramKind, string>>> = {
  javascript: { trivial: TRIVIAL_JS, evaluator: EVALUATOR_JS },
  typescript: { trivial: TRIVIAL_TS, evaluator: EVALUATOR_TS },
  python: { trivial: TRIVIAL_PY, evaluator: EVALUATOR_PY, numpy: NUMPY_PY },
};

const CHECKS: Record<ProgramKind, AnswerCheck> = {
  trivial: checkTrivial,
  evaluator: checkEvaluator,
  numpy: checkNumpy,
};

/** The program of `kind` in `language`; throws when that language has no such program. */
export function program(language: BenchLanguage, kind: ProgramKind): Program {
  const code = SOURCES[language][kind];
  if (code === undefined) {
    throw new RangeError(`expected a program kind that exists in ${language}, got "${kind}"`);
  }
  return {
    language,
    kind,
    code,
    input: kind === "trivial" ? undefined : TURN,
    check: CHECKS[kind],
  };
}

/** What a hostile tenant's program does: spin forever, or grow the heap or ArrayBuffers. */
export type HostileKind = "loop" | "heap_bomb" | "buffer_bomb";

const HOSTILE_JS: Record<HostileKind, string> = {
  loop: "while (true) {}",
  heap_bomb: "const hold = [];\nwhile (true) hold.push(new Array(1 << 20).fill(hold.length));",
  buffer_bomb:
    "const hold = [];\nwhile (true) hold.push(new Uint8Array(16 << 20).fill(hold.length));",
};

/** The status each hostile program must end with: the service stopped it for that reason. */
export const HOSTILE_STATUS: Record<HostileKind, string> = {
  loop: "timeout",
  heap_bomb: "memory_limit",
  buffer_bomb: "memory_limit",
};

/**
 * A hostile JavaScript program; its check accepts only the end the service must give it
 * ({@link HOSTILE_STATUS}), and names any other as a failure.
 */
export function hostileProgram(kind: HostileKind): Program {
  return {
    language: "javascript",
    kind,
    code: HOSTILE_JS[kind],
    check: (answer) => {
      const status = (answer as { metadata?: { status?: unknown } })?.metadata?.status;
      if (status === HOSTILE_STATUS[kind]) return undefined;
      return `status_${typeof status === "string" ? status : "missing"}`;
    },
  };
}

/**
 * How tenants are assigned: one tenant for every request, a new one per request, none at
 * all, or a function naming the tenant of the `index`-th request.
 */
export type Tenancy = "one" | "new" | "none";

/** The tenant (`ext.space_id`) of the `index`-th request. */
export type TenantOf = (index: number) => string;

/** Options of {@link requestBody}. */
export interface RequestOptions {
  /** The run's `timeout` in ms; defaults to 5000, what the platform's client sends. */
  timeoutMs?: number;
}

/**
 * A body factory for {@link runLoad}: the program as a `/run_code` request, tagged with one
 * fixed tenant, a new tenant per request (`ext.space_id` unique), no tenant at all, or the
 * tenant a function names.
 */
export function requestBody(
  prog: Program,
  tenancy: Tenancy | TenantOf,
  options: RequestOptions = {},
): (index: number) => unknown {
  const run = crypto.randomUUID().slice(0, 8);
  const tenantOf: TenantOf | undefined = typeof tenancy === "function"
    ? tenancy
    : tenancy === "one"
    ? () => "bench-tenant"
    : tenancy === "new"
    ? (index) => `bench-${run}-${index}`
    : undefined;
  return (index) => ({
    language: prog.language,
    code: prog.code,
    timeout: options.timeoutMs ?? 5000,
    ...(prog.input === undefined ? {} : { input: prog.input }),
    ...(tenantOf ? { ext: { space_id: tenantOf(index) } } : {}),
  });
}
