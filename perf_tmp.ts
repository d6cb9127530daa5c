import { createJavaScriptRuntime } from "./src/sandbox/javascript/mod.ts";
const rt = createJavaScriptRuntime({ poolSize: 10, maxInstances: 16, memoryLimitMb: 256, maxOutputBytes: 1 << 20, pythonPath: "", requireIsolation: [], debug: false, onSandboxBoot: (_l, ms, ok) => boots.push(ms) }, { runnerMode: (Deno.args[0] ?? "worker") as "worker" | "inline", bootConcurrency: Number(Deno.args[1] ?? 4) });
const boots: number[] = [];
await rt.start();
const wait = async () => { while (rt.stats().idleInstances < 10) await new Promise((r) => setTimeout(r, 50)); };
await wait();
const EVAL = "const r = {score: input?.x ?? 1, reason: 'ok'}; console.log(JSON.stringify(r)); return r;";
let n = 0;
const job = (tenant?: string) => rt.run({ taskId: String(n++), language: "javascript", code: EVAL, input: { x: 0.5 }, timeoutMs: 5000, tenant });
// sequential warm
for (let i = 0; i < 50; i++) await job("seq");
const seq: number[] = [];
for (let i = 0; i < 300; i++) { const t = performance.now(); const o = await job("seq"); if (o.status !== "success") throw new Error(o.stderr); seq.push(performance.now() - t); }
seq.sort((a, b) => a - b);
console.log(`sequential warm run: p50 ${seq[150].toFixed(2)} ms p90 ${seq[270].toFixed(2)} ms`);
// concurrency 16 one tenant
async function conc(c: number, total: number, tenantOf: (i: number) => string | undefined) {
  let next = 0; let fails = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: c }, async () => { while (next < total) { const i = next++; const o = await job(tenantOf(i)); if (o.status !== "success") fails++; } }));
  const s = (performance.now() - t0) / 1000;
  return { rps: total / s, fails };
}
await conc(16, 200, () => "one");
console.log("c16 one tenant", await conc(16, 1500, () => "one"));
await wait();
console.log("c16 new tenant per request", await conc(16, 150, () => undefined));
boots.sort((a, b) => a - b);
console.log(`boots: n=${boots.length} p50 ${boots[Math.floor(boots.length / 2)].toFixed(1)} ms p90 ${boots[Math.floor(boots.length * 0.9)].toFixed(1)} ms`);
await rt.shutdown();
