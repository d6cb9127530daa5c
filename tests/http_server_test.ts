/**
 * The service's HTTP server as a hostile client meets it: bodies at the size limit, many at
 * once; idle and slow connections by the hundreds.
 */

import { assert, assertEquals } from "./helpers/assert.ts";
import { spawnService } from "./helpers/service_process.ts";
import { bodyLimitBytes, parseConfig } from "../src/config.ts";

const ENTRY = "tests/helpers/serve_entry.ts";
const MIB = 1024 * 1024;

/** VmRSS and VmHWM (peak RSS) of `pid`, MiB. */
function memory(pid: number): { rss: number; peak: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)![1]);
  return { rss: field("VmRSS") / 1024, peak: field("VmHWM") / 1024 };
}

/** Old-space cap of the service under test, MiB (`DENO_V8_FLAGS`); see the test below. */
const HEAP_CAP_MIB = 256;

Deno.test({
  name: "near-limit bodies at once fit in a bounded heap, round after round",
  ignore: Deno.build.os !== "linux",
  async fn() {
    // With its heap capped, a service that kept more than about twice each body per request
    // (its text and its parsed value) would run out of heap and die here: V8 collects garbage
    // before it gives up, so only what is really held counts.
    await using service = spawnService(ENTRY, {
      DENO_V8_FLAGS: `--max-old-space-size=${HEAP_CAP_MIB}`,
    });
    const url = await service.listening();
    const pid = service.child.pid;
    // The default code cap, with every character escaped to two bytes: the body limit's worst.
    const limit = bodyLimitBytes(parseConfig({}));
    const code = '"'.repeat(16 * MIB - 64);
    const padding = limit - JSON.stringify({ language: "python", code, input: "" }).length - 16;
    const body = JSON.stringify({ language: "python", code, input: "x".repeat(padding) });
    assert(body.length <= limit && body.length > limit - 64, `${body.length} near ${limit}`);
    const post = async () => {
      const response = await fetch(url + "/run_code", { method: "POST", body });
      assertEquals(response.status, 200);
      assertEquals((await response.json()).metadata.status, "success");
    };
    await post();
    const before = memory(pid).rss;
    const concurrent = 4;
    const growth: number[] = [];
    for (let round = 0; round < 3; round++) {
      // Forget the peak so far: VmHWM restarts from the current RSS.
      Deno.writeTextFileSync(`/proc/${pid}/clear_refs`, "5");
      await Promise.all(Array.from({ length: concurrent }, post));
      growth.push(memory(pid).peak - before);
    }
    const bodyMib = body.length / MIB;
    console.log(
      `${concurrent} bodies of ${bodyMib.toFixed(1)} MiB at once, heap cap ${HEAP_CAP_MIB} MiB: ` +
        `RSS ${before.toFixed(0)} MiB before, peak growth per round ` +
        growth.map((mib) => `${mib.toFixed(0)} MiB`).join(", "),
    );
    const bound = concurrent * 5 * bodyMib;
    for (const mib of growth) assert(mib < bound, `peak growth ${mib} MiB over ${bound} MiB`);
  },
});
