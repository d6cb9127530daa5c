/**
 * The Python fork floor: what a Python run costs at best on this machine behind HTTP. A Hono
 * route on `Deno.serve` (as the no-op floor) hands each request to a warm interpreter
 * (fork_floor.py: the service's Python, with the modules the service preloads, its heap
 * frozen) over its stdin, as a length-prefixed JSON frame; the interpreter forks a child per
 * request that runs the code with `input` and `return_val`, its output captured through
 * pipes, and answers on its stdout. Runs overlap: an interpreter forks each job as soon as it
 * arrives. The answer has the contract's shape, `ret_val` resolved with the service's rules.
 *
 * A fork is work of the parent (it copies the parent's page tables, ≈ 20–35 ms here where a
 * page fault costs ≈ 3 µs), so one parent forks one child at a time; the service forks from
 * one zygote per slot, in parallel. The floor runs one interpreter per core and hands them
 * requests round-robin.
 *
 * Listens on `FAAS_HOST`:`FAAS_PORT`; `BENCH_PYTHON` names the interpreter, `BENCH_PARENTS`
 * how many run (default: one per core).
 *
 * @module
 */

import { Hono } from "hono";
import { type FloorRun, readRequest, runAnswer } from "./run_answer.ts";

type Answer = Pick<FloorRun, "status" | "stdout" | "stderr" | "explicit" | "returned"> & {
  id: number;
  exit_code: number;
};

const python = Deno.env.get("BENCH_PYTHON") ?? "python3";
const count = Number(Deno.env.get("BENCH_PARENTS") ?? navigator.hardwareConcurrency);
if (!Number.isInteger(count) || count < 1) {
  console.error(`fork floor: expected BENCH_PARENTS to be a positive integer, got ${count}`);
  Deno.exit(2);
}
const parents = Array.from({ length: count }, () => {
  const child = new Deno.Command(python, {
    args: ["-I", new URL("./fork_floor.py", import.meta.url).pathname],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  return { child, writer: child.stdin.getWriter() };
});
const waiting = new Map<number, (answer: Answer) => void>();
let nextId = 0;

/** Reads an interpreter's answer frames and settles the requests waiting for them. */
async function readAnswers(child: Deno.ChildProcess): Promise<void> {
  let buffer = new Uint8Array(0);
  for await (const chunk of child.stdout) {
    const joined = new Uint8Array(buffer.length + chunk.length);
    joined.set(buffer);
    joined.set(chunk, buffer.length);
    buffer = joined;
    while (buffer.length >= 4) {
      const size = new DataView(buffer.buffer, buffer.byteOffset).getUint32(0);
      if (buffer.length < 4 + size) break;
      const answer = JSON.parse(new TextDecoder().decode(buffer.subarray(4, 4 + size)));
      buffer = buffer.slice(4 + size);
      waiting.get(answer.id)?.(answer);
      waiting.delete(answer.id);
    }
  }
}

const app = new Hono();
app.get("/health", (c) => c.json({ status: "healthy" }));
app.post("/run_code", async (c) => {
  const request = readRequest(await c.req.json());
  if (typeof request === "string") return c.json({ error: request }, 400);
  const started = performance.now();
  const id = nextId++;
  const { promise, resolve } = Promise.withResolvers<Answer>();
  waiting.set(id, resolve);
  const data = new TextEncoder().encode(JSON.stringify({
    id,
    code: request.code,
    input: request.input ?? null,
    timeout_ms: request.timeoutMs,
  }));
  const frame = new Uint8Array(4 + data.length);
  new DataView(frame.buffer).setUint32(0, data.length);
  frame.set(data, 4);
  await parents[id % parents.length].writer.write(frame);
  const answer = await promise;
  return c.json(runAnswer({
    ...answer,
    language: request.language,
    exitCode: answer.exit_code,
    durationMs: performance.now() - started,
    timeoutMs: request.timeoutMs,
  }, "fork-floor"));
});

const reading = Promise.all(parents.map(({ child }) => readAnswers(child)));
const server = Deno.serve({
  hostname: Deno.env.get("FAAS_HOST") ?? "127.0.0.1",
  port: Number(Deno.env.get("FAAS_PORT") ?? "0"),
  onListen: () => {},
}, app.fetch);
Deno.addSignalListener("SIGTERM", () => server.shutdown());
// An interpreter ending first (it failed) ends the server too: its requests would hang.
for (const { child } of parents) {
  child.status.then((status) => {
    if (!status.success) {
      console.error(`fork floor: an interpreter exited with code ${status.code}`);
      Deno.exit(3);
    }
  });
}
await server.finished;
for (const { child, writer } of parents) {
  await writer.close();
  await child.status;
}
await reading;
