import { assert } from "../tests/helpers/assert.ts";
import { MachineLoad } from "./machine_load.ts";

Deno.test("machine load: a core kept busy shows in the busy share", async () => {
  const load = new MachineLoad();
  try {
    const cores = navigator.hardwareConcurrency ?? 1;
    // Spin this thread through two sampling intervals, then let a sample land.
    const until = performance.now() + 600;
    while (performance.now() < until) {
      // busy
    }
    await new Promise((resolve) => setTimeout(resolve, 0));
    const share = load.busyShare;
    assert(share <= 1, `a share of at most 1, got ${share}`);
    assert(share >= 0.5 / cores, `at least half a core of ${cores} busy, got ${share}`);
  } finally {
    load.stop();
  }
});
