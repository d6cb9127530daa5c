/**
 * The service's HTTP server as a hostile client meets it: bodies at the size limit, many at
 * once; idle and slow connections by the hundreds.
 */

import { assert, assertEquals, assertStringIncludes } from "./helpers/assert.ts";
import { spawnService } from "./helpers/service_process.ts";
import { withTimeout } from "../src/async.ts";
import { bodyLimitBytes, parseConfig } from "../src/config.ts";
import { defaultMaxConnections, openFileLimits } from "../src/http/server.ts";

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

/** Opens `count` TCP connections to `url`; each sends `head` (maybe nothing) and then waits. */
async function openIdle(url: string, count: number, head = ""): Promise<Deno.TcpConn[]> {
  const { hostname, port } = new URL(url);
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < count; i++) {
    const conn = await Deno.connect({ hostname, port: Number(port) });
    if (head) await conn.write(new TextEncoder().encode(head));
    conns.push(conn);
  }
  return conns;
}

/** Resolves with the time (ms since `since`) at which the server closed `conn`. */
async function closedAt(conn: Deno.TcpConn, since: number): Promise<number> {
  const buffer = new Uint8Array(4096);
  try {
    while ((await conn.read(buffer)) !== null) {
      // Whatever the server answered: wait for the end.
    }
  } catch {
    // Reset by the server: closed too.
  }
  const at = performance.now() - since;
  conn.close();
  return at;
}

/** GET /health within `ms`, on a connection of its own; fails when it takes longer. */
async function healthWithin(url: string, ms: number): Promise<void> {
  const started = performance.now();
  const response = await fetch(url + "/health", {
    signal: AbortSignal.timeout(ms),
    headers: { Connection: "close" },
  });
  assertEquals(response.status, 200);
  await response.body?.cancel();
  assert(performance.now() - started < ms);
}

function exited(child: Deno.ChildProcess): Promise<boolean> {
  return Promise.race([
    child.status.then(() => true),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 0)),
  ]);
}

Deno.test({
  name: "idle and slow connections past the cap: the service answers, closes them, lives on",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using service = spawnService(ENTRY, {
      FAAS_MAX_CONNECTIONS: "100",
      FAAS_IDLE_TIMEOUT: "1000",
    });
    const url = await service.listening();
    const opened = performance.now();
    // 400 that send nothing and 100 that send half a request head, 5 times the cap.
    const idle = await openIdle(url, 400);
    const slow = await openIdle(url, 100, "GET /health HTTP/1.1\r\nHost: x\r\n");
    const closed = [...idle, ...slow].map((conn) => closedAt(conn, opened));
    // A client with a real request is answered at once: it takes the place of an idle one.
    for (let i = 0; i < 5; i++) await healthWithin(url, 2_000);
    const metrics = await (await fetch(url + "/metrics")).text();
    const open = /faas_http_connections\{state="idle"\} (\d+)/.exec(metrics)?.[1];
    assert(Number(open) <= 100, `at most the cap open: ${open}`);
    // Every one of them is closed: past the cap at once, the rest at their idle timeout.
    const times = await withTimeout(Promise.all(closed), 10_000);
    if (!times) { for (const conn of [...idle, ...slow]) conn.close(); }
    assert(times, "every idle connection closed by the server within 10 s");
    const late = times.filter((ms) => ms > 1_000 + 2_000);
    assertEquals(late, [], "closed within the timeout plus 2 s");
    assert(times.filter((ms) => ms >= 1_000).length <= 100, "only the last 100 waited out");
    assertStringIncludes(metrics, 'faas_http_connections_closed_total{reason="evicted"}');
    assertEquals(await exited(service.child), false);
    await healthWithin(url, 2_000);
  },
});

Deno.test({
  name: "out of file descriptors, accept errors neither stop the service nor keep clients out",
  ignore: Deno.build.os !== "linux",
  async fn() {
    // The cap is above what the process may open: accept itself fails (EMFILE), which ended a
    // Deno.serve server and its process ("Too many open files").
    await using service = spawnService(ENTRY, {
      FAAS_MAX_CONNECTIONS: "10000",
      FAAS_IDLE_TIMEOUT: "60000",
    }, { openFiles: 160 });
    const url = await service.listening();
    const conns = await openIdle(url, 300);
    await service.stderr.waitFor((line) => line.includes('"msg":"accept_error"'), "accept_error");
    assertStringIncludes(service.stderr.text(), "Too many open files");
    for (let i = 0; i < 5; i++) await healthWithin(url, 5_000);
    assertEquals(await exited(service.child), false);
    for (const conn of conns) conn.close();
  },
});

Deno.test("the default connection cap leaves descriptors to the sandboxes, within 64 to 4096", () => {
  assertEquals(defaultMaxConnections(20_000, { sandboxes: 70 }), 4096);
  assertEquals(defaultMaxConnections(1_024, { sandboxes: 70 }), 1_024 - 256 - 8 * 70);
  assertEquals(defaultMaxConnections(200, { sandboxes: 70 }), 64);
  assertEquals(defaultMaxConnections(undefined, { sandboxes: 70 }), 1_024);
  const limits = openFileLimits();
  if (Deno.build.os === "linux") assert(limits && limits.soft <= limits.hard, "read from /proc");
});
