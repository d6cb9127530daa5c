/**
 * Entry of a syntax process: it loads the parsers once (amaro's wasm, acorn), warms them,
 * says `ready`, then answers the service's requests one at a time, reading frames from stdin
 * and writing one answer per request to stdout (see syntax_protocol.ts). It has no permission
 * at all: started with `deno run` it never had any, and started as the service's own
 * executable (`--faas-runner=syntax`, which has them baked in) it revokes every one before
 * it reads a request. It never runs the code it parses.
 *
 * Usage: `deno run --no-config --no-remote --no-npm --no-prompt syntax_main.ts`.
 *
 * @module
 */

import { originalPositions, prepareSource } from "./syntax.ts";
import {
  encodeAnswer,
  FrameReader,
  parseRequest,
  type PreparedAnswer,
  type SyntaxAnswer,
  type SyntaxRequest,
} from "./syntax_protocol.ts";

const PERMISSIONS = ["read", "write", "net", "env", "run", "ffi", "sys", "import"] as const;

/** Longest request read: the service's code cap, JSON-escaped, with room to spare. */
const MAX_REQUEST_BYTES = 512 * 1024 * 1024;

/** Runs the process until the service closes its stdin. */
export async function main(): Promise<void> {
  revokeAll();
  // Compiles the wasm and the parsers' hot paths now, so no request pays for them.
  prepareSource("enum Warm { A }\nconst warm: number = Warm.A;\nreturn warm;", "typescript");
  prepareSource("const warm = 1;\nreturn warm +;", "javascript");
  const writer = Deno.stdout.writable.getWriter();
  await writer.write(encodeAnswer({ t: "ready" }));
  const reader = new FrameReader();
  for await (const chunk of Deno.stdin.readable) {
    for (const frame of reader.push(chunk, MAX_REQUEST_BYTES)) {
      const request = parseRequest(frame);
      const answer = answerTo(request);
      await writer.write(fitted(answer, request));
      // The TypeScript parser is corrupt after it broke: the service replaces this process.
      if (answer.t === "prepared" && !answer.ok && answer.spent) Deno.exit(0);
    }
  }
  Deno.exit(0);
}

/** The answer to one request. */
function answerTo(request: SyntaxRequest): SyntaxAnswer {
  if (request.t === "map") {
    return { t: "mapped", id: request.id, positions: mapped(request), rss: rss() };
  }
  let prepared;
  try {
    prepared = prepareSource(request.code, request.language);
  } catch (error) {
    // A bug of the parsers (not a verdict on the code): this process is not trusted further.
    const reason = error instanceof Error ? error.message : String(error);
    prepared = {
      ok: false as const,
      problem: { message: `the syntax check failed (${reason.slice(0, 200)})`, line: 1, column: 1 },
      spent: true as const,
    };
  }
  const head = { t: "prepared" as const, id: request.id, rss: rss() };
  if (!prepared.ok) return { ...head, ...prepared };
  const answer: PreparedAnswer = { ...head, ok: true };
  if (request.output && request.language === "typescript") {
    answer.code = prepared.code;
    if (prepared.mapping) answer.mapping = prepared.mapping;
  }
  return answer;
}

/**
 * The frame of `answer`, or of a short answer saying it was too long when it is longer than
 * the service reads (the service would take it for garbage and kill this process).
 */
function fitted(answer: SyntaxAnswer, request: SyntaxRequest): Uint8Array {
  const frame = encodeAnswer(answer);
  if (frame.length - 4 <= request.maxAnswerBytes) return frame;
  if (request.t === "map") {
    return encodeAnswer({
      t: "mapped",
      id: request.id,
      positions: request.positions.map(() => null),
      rss: rss(),
    });
  }
  return encodeAnswer({
    t: "prepared",
    id: request.id,
    rss: rss(),
    ok: false,
    problem: {
      message: `the code is larger than ${request.maxAnswerBytes} bytes once its TypeScript ` +
        "is transformed",
      line: 1,
      column: 1,
    },
  });
}

function rss(): number {
  return Deno.memoryUsage().rss;
}

function mapped(request: Extract<SyntaxRequest, { t: "map" }>): ([number, number] | null)[] {
  try {
    return originalPositions(request.mapping, request.positions);
  } catch {
    return request.positions.map(() => null);
  }
}

/** Gives up every permission and exits when one is still granted afterwards. */
function revokeAll(): void {
  for (const name of PERMISSIONS) {
    Deno.permissions.revokeSync({ name });
    // "prompt" is as good as denied: syntax processes start with --no-prompt.
    if (Deno.permissions.querySync({ name }).state === "granted") {
      console.error(`syntax: could not revoke the ${name} permission`);
      Deno.exit(3);
    }
  }
}

if (import.meta.main) await main();
