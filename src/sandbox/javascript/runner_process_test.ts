/**
 * The host's side of a runner, against a peer that speaks the runner protocol over a real unix
 * socket (the runner itself is tested through the runtime): the supervision timers.
 */

import { assertEquals } from "../../../tests/helpers/assert.ts";
import type { JailedProcess, SandboxExit } from "../jail/mod.ts";
import { encodeFrame, FrameDecoder, parseHostFrame } from "./protocol.ts";
import type { HostFrame } from "./protocol.ts";
import { JsRunner } from "./runner_process.ts";

/** A scripted runner: a `sleep` process stands for its pid, the test speaks for it. */
async function scriptedRunner(dir: string) {
  const path = `${dir}/runner.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const peer = Deno.connect({ transport: "unix", path });
  const host = await listener.accept();
  listener.close();
  const runnerEnd = await peer;
  const stand = new Deno.Command("sleep", { args: ["600"], stdout: "null", stderr: "null" })
    .spawn();
  const exit = Promise.withResolvers<SandboxExit>();
  stand.status.then((status) =>
    exit.resolve({ signal: status.signal ? 9 : undefined, oom: false })
  );
  const process: JailedProcess = {
    id: 1,
    pid: stand.pid,
    slot: 0,
    conn: host,
    exit: exit.promise,
    kill: () => {
      try {
        stand.kill("SIGKILL");
      } catch {
        // already gone
      }
    },
  };
  const frames = (async function* () {
    const decoder = new FrameDecoder();
    for await (const chunk of runnerEnd.readable) {
      for (const body of decoder.push(chunk)) yield parseHostFrame(body) as HostFrame;
    }
  })();
  const writer = runnerEnd.writable.getWriter();
  return {
    process,
    /** The next frame the host sent. */
    next: async () => (await frames.next()).value as HostFrame,
    send: (frame: unknown) => writer.write(encodeFrame(frame)),
    close: async () => {
      process.kill();
      await stand.status;
      await writer.close().catch(() => {});
    },
  };
}

Deno.test("runner process: a run after a prepared worker outlives the prepare's boot timeout", async () => {
  const dir = await Deno.makeTempDir();
  const peer = await scriptedRunner(dir);
  const bootTimeoutMs = 200;
  const runner = new JsRunner(peer.process, {
    maxOutputBytes: 1024,
    outputPolicy: "truncate",
    memoryLimitMb: 64,
    builtins: [],
    bootTimeoutMs,
  });
  try {
    const booting = runner.boot();
    assertEquals((await peer.next()).t, "config");
    await peer.send({ t: "ready" });
    await booting;

    const job = { code: "return 1", file: "main.js", timeoutMs: 5_000 };
    const first = runner.run(job);
    const run1 = await peer.next();
    assertEquals(run1.t, "run");
    const id1 = (run1 as { id: number }).id;
    await peer.send({ t: "ack", id: id1 });
    await peer.send({ t: "done", id: id1, exitCode: 0, returned: "1" });
    assertEquals((await first).outcome.status, "success");

    // The kept worker boots while the runner is idle; it says so before the next run.
    runner.prepare();
    assertEquals((await peer.next()).t, "prepare");
    await peer.send({ t: "prepared" });
    // No event tells when the host has read it: give it a moment (a local socket needs far less).
    await new Promise((resolve) => setTimeout(resolve, 50));

    // The next run is still going well past the prepare's boot timeout: that timer is gone.
    const second = runner.run(job);
    const run2 = await peer.next();
    const id2 = (run2 as { id: number }).id;
    await peer.send({ t: "ack", id: id2 });
    await new Promise((resolve) => setTimeout(resolve, 3 * bootTimeoutMs));
    await peer.send({ t: "done", id: id2, exitCode: 0, returned: "2" });
    const outcome = (await second).outcome;
    assertEquals(outcome.status, "success", JSON.stringify(outcome));
  } finally {
    runner.kill();
    await peer.close();
    await Deno.remove(dir, { recursive: true });
  }
});
