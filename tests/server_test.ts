import { assert, assertEquals, assertStringIncludes } from "./helpers/assert.ts";
import { spawnService } from "./helpers/service_process.ts";
import { until } from "./helpers/wait.ts";

const ENTRY = "tests/helpers/serve_entry.ts";

function post(url: string, body: unknown): Promise<Response> {
  return fetch(url + "/run_code", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

interface Health {
  status: string;
  scheduler: Record<string, number>;
}

async function health(url: string): Promise<{ status: number; body: Health }> {
  const response = await fetch(url + "/health");
  return { status: response.status, body: await response.json() };
}

/** True when `pid` is a live (not zombie) process. */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** Pids of live `sleep` processes whose only argument is `seconds`. */
function sleepsRunning(seconds: string): number[] {
  const found: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`);
      const [program, ...args] = cmdline.replace(/\0$/, "").split("\0");
      const matches = program.endsWith("sleep") && args.length === 1 && args[0] === seconds;
      if (matches && alive(Number(entry.name))) {
        found.push(Number(entry.name));
      }
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

Deno.test("SIGTERM drains, answers every accepted run and leaves no child process", async () => {
  await using service = spawnService(ENTRY, {
    FAAS_MAX_INSTANCES: "2",
    FAAS_DRAIN_TIMEOUT: "1500",
  });
  const url = await service.listening();
  // A duration no other process on the machine uses, to find our children by command line.
  const seconds = `61.${crypto.getRandomValues(new Uint32Array(1))[0]}`;
  const running = [1, 2].map(() =>
    post(url, { language: "python", code: `spawn ${seconds}`, timeout: 60000 })
  );
  const spawned = [1, 2].map((n) =>
    service.stderr.waitFor(
      (line) =>
        line.startsWith('{"spawned"') &&
        service.stderr.seen.filter((l) => l.startsWith('{"spawned"')).length >= n,
      `child ${n}`,
    )
  );
  await Promise.all(spawned);
  const pids = service.stderr.seen
    .filter((line) => line.startsWith('{"spawned"'))
    .map((line) => JSON.parse(line).spawned as number);
  assertEquals(pids.length, 2);
  assert(pids.every(alive), "children run before the signal");
  assertEquals(sleepsRunning(seconds).sort(), [...pids].sort());

  const queued = post(url, { language: "javascript", code: "print queued" });
  await until(async () => (await health(url)).body.scheduler.queuedTasks === 1, {
    what: "a queued run",
  });

  service.child.kill("SIGTERM");
  await service.stdout.waitFor((line) => line.includes('"msg":"draining"'), "draining");
  const during = await health(url);
  assertEquals(during.status, 503);
  assertEquals(during.body.status, "unhealthy");
  const refused = await post(url, { language: "javascript", code: "print new" });
  assertEquals(refused.status, 503);
  assert(Number(refused.headers.get("retry-after")) > 0);
  await refused.body?.cancel();

  for (const response of await Promise.all(running)) {
    assertEquals(response.status, 200);
    const body = await response.json();
    assertEquals(body.metadata.status, "crashed");
    assertStringIncludes(body.error, "shut down");
  }
  const late = await queued;
  assertEquals(late.status, 503);
  assert(late.headers.get("retry-after"));
  await late.body?.cancel();

  const status = await service.child.status;
  assertEquals(status.code, 0);
  assert(!pids.some(alive), "no child outlives the service");
  assertEquals(sleepsRunning(seconds), []);
  assertStringIncludes(service.stdout.text(), `"msg":"stopped","drained":false,"abandoned":1`);
});

Deno.test("SIGINT lets a run in flight finish, then exits 0", async () => {
  await using service = spawnService(ENTRY, { FAAS_DRAIN_TIMEOUT: "20000" });
  const url = await service.listening();
  const response = post(url, { language: "javascript", code: "sleep 300\nprint done" });
  await until(async () => (await health(url)).body.scheduler.runningTasks === 1, {
    what: "a running run",
  });
  service.child.kill("SIGINT");
  const body = await (await response).json();
  assertEquals(body.metadata.status, "success");
  assertEquals(body.output.stdout, "done\n");
  assertEquals((await service.child.status).code, 0);
});

Deno.test("SIGTERM while runtimes are still starting stops them and exits 0", async () => {
  const seconds = `62.${crypto.getRandomValues(new Uint32Array(1))[0]}`;
  await using service = spawnService(ENTRY, { FAAS_TEST_RUNTIMES: `stuck:${seconds}` });
  const line = await service.stderr.waitFor((text) => text.startsWith('{"spawned"'), "a child");
  const pid = JSON.parse(line).spawned as number;
  assert(alive(pid));
  service.child.kill("SIGTERM");
  assertEquals((await service.child.status).code, 0);
  assert(!alive(pid), "the child started during startup is gone");
  assertEquals(sleepsRunning(seconds), []);
});

async function startFailure(entry: string, env: Record<string, string>): Promise<string> {
  await using service = spawnService(entry, env);
  const status = await service.child.status;
  await Promise.all([service.stdout.done, service.stderr.done]);
  assertEquals(status.code, 1, service.stderr.text());
  const lines = service.stderr.seen.filter((line) => line.trim() !== "");
  assertEquals(lines.length, 1, `one line on stderr: ${service.stderr.text()}`);
  return lines[0];
}

Deno.test("a bad setting stops main.ts at start with one line naming it", async () => {
  const cases: [Record<string, string>, string][] = [
    [{ FAAS_PORT: "eighty" }, "FAAS_PORT"],
    [{ FAAS_MAX_INSTANCES: "0" }, "FAAS_MAX_INSTANCES"],
    [{ FAAS_LANGUAGES: "cobol" }, "FAAS_LANGUAGES"],
    [{ FAAS_DEBUG: "perhaps" }, "FAAS_DEBUG"],
  ];
  for (const [env, variable] of cases) {
    const line = await startFailure("main.ts", env);
    assertStringIncludes(line, `invalid ${variable}: expected`);
  }
});

Deno.test("an enabled language without a runtime stops the service at start", async () => {
  const line = await startFailure(ENTRY, { FAAS_TEST_RUNTIMES: "none", FAAS_LANGUAGES: "js" });
  assertStringIncludes(line, "no runtime is built into this service for javascript");
});

Deno.test("a runtime that cannot start stops the service at start", async () => {
  const line = await startFailure(ENTRY, { FAAS_TEST_RUNTIMES: "broken" });
  assertStringIncludes(line, "cannot start: the test runtime refuses to start");
});

Deno.test("a port already in use stops the service at start", async () => {
  await using taken = spawnService(ENTRY);
  const url = await taken.listening();
  const port = new URL(url).port;
  const line = await startFailure(ENTRY, { FAAS_PORT: port });
  assertStringIncludes(line, "cannot start:");
  assertStringIncludes(line.toLowerCase(), "address");
});
