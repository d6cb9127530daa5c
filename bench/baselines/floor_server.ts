/**
 * The no-op HTTP floor: a Hono app on `Deno.serve` that reads the request body and answers a
 * constant, contract-shaped run result. Nothing can answer `/run_code` faster over HTTP on
 * this machine, so it marks the physical limit of the HTTP layer.
 *
 * Listens on `FAAS_HOST`:`FAAS_PORT`.
 *
 * @module
 */

import { Hono } from "hono";

const ANSWER = {
  output: { stdout: "Hello World\n", stderr: "", ret_val: "42" },
  metadata: {
    task_id: "floor",
    instance_id: "floor",
    language: "javascript",
    status: "success",
    exit_code: 0,
    duration: 0,
    queue_time: 0,
    truncated: false,
    pool_stats: { totalInstances: 0, idleInstances: 0, activeInstances: 0 },
  },
  error: "",
};

const app = new Hono();
app.get("/health", (c) => c.json({ status: "healthy" }));
app.post("/run_code", async (c) => {
  await c.req.arrayBuffer();
  return c.json(ANSWER);
});

const server = Deno.serve({
  hostname: Deno.env.get("FAAS_HOST") ?? "127.0.0.1",
  port: Number(Deno.env.get("FAAS_PORT") ?? "0"),
  onListen: () => {},
}, app.fetch);
Deno.addSignalListener("SIGTERM", () => server.shutdown());
await server.finished;
