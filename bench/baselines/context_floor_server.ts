/**
 * The warm-context floor: what a JS run costs at best on this machine behind HTTP, with the
 * service's isolation model for later runs of a tenant (a fresh `node:vm` context per run in a
 * kept no-permission worker) and nothing else. A Hono route on `Deno.serve` (as the no-op
 * floor) reads the request, posts the code and its input to one warm Web Worker started with
 * `deno: {permissions: "none"}` in this process (context_floor_worker.ts), and answers with
 * the contract's shape, `ret_val` resolved with the service's rules.
 *
 * One process runs one worker: a single thread runs the code. The harness starts one such
 * process per core and spreads requests over them round-robin.
 *
 * Listens on `FAAS_HOST`:`FAAS_PORT`.
 *
 * @module
 */

import { Hono } from "hono";
import { readRequest, runAnswer } from "./run_answer.ts";

interface Reply {
  id: number;
  status: "success" | "error";
  stdout: string;
  stderr: string;
  explicit?: string;
  returned?: string;
  durationMs: number;
}

const worker = new Worker(new URL("./context_floor_worker.ts", import.meta.url), {
  type: "module",
  deno: { permissions: "none" },
});
const waiting = new Map<number, (reply: Reply) => void>();
let nextId = 0;
worker.onmessage = (event: MessageEvent<Reply>) => {
  waiting.get(event.data.id)?.(event.data);
  waiting.delete(event.data.id);
};
worker.onerror = (event) => {
  event.preventDefault();
  console.error(`warm-context floor: the worker failed: ${event.message}`);
  Deno.exit(3);
};

const app = new Hono();
app.get("/health", (c) => c.json({ status: "healthy" }));
app.post("/run_code", async (c) => {
  const request = readRequest(await c.req.json());
  if (typeof request === "string") return c.json({ error: request }, 400);
  const id = nextId++;
  const { promise, resolve } = Promise.withResolvers<Reply>();
  waiting.set(id, resolve);
  worker.postMessage({ id, code: request.code, input: request.input });
  const reply = await promise;
  return c.json(runAnswer({
    ...reply,
    language: request.language,
    exitCode: reply.status === "success" ? 0 : 1,
    timeoutMs: request.timeoutMs,
  }, "context-floor"));
});

const server = Deno.serve({
  hostname: Deno.env.get("FAAS_HOST") ?? "127.0.0.1",
  port: Number(Deno.env.get("FAAS_PORT") ?? "0"),
  onListen: () => {},
}, app.fetch);
Deno.addSignalListener("SIGTERM", () => server.shutdown());
await server.finished;
worker.terminate();
