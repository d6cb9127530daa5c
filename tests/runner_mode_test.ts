/**
 * The self runner mode, the one a compiled binary uses: the service starts its JS runners by
 * re-running its own entry point with `--faas-runner=javascript`, with the broad permissions a
 * binary has baked in, and each runner narrows them itself. Proven here under `deno run`
 * (`FAAS_RUNNER_MODE=self`) with the flags of the `compile` task: runs, limits and attacks
 * through the real service, the runner's own permissions, and a clean shutdown.
 */

import { assert, assertEquals, assertStringIncludes } from "./helpers/assert.ts";
import { spawnService } from "./helpers/service_process.ts";
import { encodeFrame, FrameDecoder } from "../src/sandbox/javascript/protocol.ts";
import {
  runnerCommandLine,
  SELF_RUNNER_FLAG,
  selfRunnerArgv,
} from "../src/sandbox/javascript/runner_command.ts";
import { parseConfig } from "../src/config.ts";
import { createJavaScriptRuntime } from "../src/sandbox/javascript/mod.ts";
import { run, testSettings } from "./javascript_helpers.ts";
import { compileArgs } from "../deploy/compile.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const SECRET = "runner-mode-secret-4711";
/** Reaches the realm the run's vm context lives in (the worker's, or the runner's if inline). */
const ESCAPE = "const W = console.log.constructor('return this')();\n";

interface RunAnswer {
  output: { stdout: string; stderr: string; ret_val: string };
  metadata: { status: string; instance_id: string };
  error: string;
}

async function runCode(
  url: string,
  language: string,
  code: string,
  timeout = 5_000,
): Promise<RunAnswer> {
  const response = await fetch(`${url}/run_code`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ language, code, timeout, ext: { space_id: "runner-mode" } }),
  });
  assertEquals(response.status, 200);
  return await response.json();
}

/** Parent pid of `pid`, or undefined when it is gone. */
function parentOf(pid: number): number | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return undefined;
  }
}

function commandLine(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ");
  } catch {
    return "";
  }
}

/**
 * Start time of `pid` (to tell a survivor from a reused pid), or undefined when it is gone
 * or a zombie (dead, only waiting to be reaped).
 */
function startTime(pid: number): string | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[0] === "Z" ? undefined : fields[19];
  } catch {
    return undefined;
  }
}

/** Every live descendant of `root`, with its start time. */
function descendants(root: number): Map<number, string> {
  const parents = new Map<number, number>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const parent = parentOf(Number(entry.name));
    if (parent !== undefined) parents.set(Number(entry.name), parent);
  }
  const found = new Map<number, string>();
  let frontier = [root];
  while (frontier.length > 0) {
    const next: number[] = [];
    for (const [pid, parent] of parents) {
      if (!frontier.includes(parent) || found.has(pid)) continue;
      const started = startTime(pid);
      if (started === undefined) continue;
      found.set(pid, started);
      next.push(pid);
    }
    frontier = next;
  }
  return found;
}

Deno.test("runner mode: FAAS_RUNNER_MODE is validated and defaults to deno under deno run", () => {
  assertEquals(parseConfig({}).runnerMode, "deno");
  assertEquals(parseConfig({ FAAS_RUNNER_MODE: " Self " }).runnerMode, "self");
  assertEquals(parseConfig({ FAAS_RUNNER_MODE: "auto" }).runnerMode, "deno");
  let message = "";
  try {
    parseConfig({ FAAS_RUNNER_MODE: "binary" });
  } catch (error) {
    message = String(error);
  }
  assertStringIncludes(
    message,
    'invalid FAAS_RUNNER_MODE: expected one of auto, self, deno, got "binary"',
  );
});

Deno.test("runner mode: a self runner is the service's entry with the runner flag", () => {
  const { command, args, env } = runnerCommandLine({
    socketPath: "/tmp/x/s",
    memoryLimitMb: 64,
    dataLimitBytes: 1 << 30,
    uid: 0,
    layers: { rlimit: true, netns: false, uid: false },
    launch: "self",
  });
  assertEquals(command, "setsid");
  assert(args.includes("nice"), "the runner runs niced");
  assert(args.includes("prlimit"), "the runner is started through prlimit");
  const program = args.slice(args.lastIndexOf("--") + 1);
  assertEquals(program, selfRunnerArgv({ socketPath: "/tmp/x/s" }));
  assertEquals(program[0], Deno.execPath());
  assertEquals(program.slice(-2), [SELF_RUNNER_FLAG, "/tmp/x/s"]);
  assert(program.at(-3)!.endsWith("/main.ts"));
  // The compiled binary's baked-in flags (deno.json "compile" task), nothing remote.
  for (const flag of ["--allow-all", "--no-prompt", "--unstable-worker-options", "--no-remote"]) {
    assert(program.includes(flag), `expected ${flag} in ${program.join(" ")}`);
  }
  assertEquals(env, { DENO_V8_FLAGS: "--max-old-space-size=64" });
});

Deno.test(
  "runner mode: a self runner gives up every permission before it is ready",
  opts,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "faas-self-" });
    const socketPath = `${dir}/s`;
    const listener = Deno.listen({ transport: "unix", path: socketPath });
    const [command, ...args] = [
      ...selfRunnerArgv({ socketPath }),
      "--report-permissions",
    ];
    const child = new Deno.Command(command, {
      args,
      clearEnv: true,
      env: { DENO_DIR: `${dir}/deno` },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      const conn = await listener.accept();
      const reader = conn.readable.getReader();
      const decoder = new FrameDecoder();
      const frames: { t: string; data?: string }[] = [];
      const until = async (type: string): Promise<void> => {
        while (!frames.some((frame) => frame.t === type)) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`runner closed the socket before "${type}"`);
          for (const body of decoder.push(value)) frames.push(JSON.parse(body));
        }
      };
      await until("ready");
      // A run still works with no permission left.
      const writer = conn.writable.getWriter();
      await writer.write(encodeFrame({
        t: "run",
        id: 1,
        code: "console.log('hi'); return 1;",
        file: "main.js",
        maxOutputBytes: 1024,
      }));
      await until("done");
      assert(
        frames.some((frame) => frame.t === "out" && frame.data === "hi\n"),
        JSON.stringify(frames),
      );
      conn.close();
    } finally {
      listener.close();
    }
    const { code, stderr } = await child.output();
    await Deno.remove(dir, { recursive: true });
    const text = new TextDecoder().decode(stderr);
    assertEquals(code, 0, text);
    const line = text.split("\n").find((item) => item.startsWith('{"permissions"'));
    assert(line, `expected a permission report on stderr: ${text}`);
    const states = JSON.parse(line).permissions as Record<string, string>;
    assertEquals(Object.keys(states).sort(), [
      "env",
      "ffi",
      "import",
      "net",
      "read",
      "run",
      "sys",
      "write",
    ]);
    for (const [name, state] of Object.entries(states)) {
      assert(state !== "granted", `${name} is still granted`);
    }
  },
);

Deno.test(
  "runner mode: user code on a self runner's own thread (inline) finds no permission",
  opts,
  async () => {
    const runtime = createJavaScriptRuntime(testSettings({ poolSize: 1 }), {
      runnerMode: "inline",
      launch: "self",
    });
    await runtime.start();
    try {
      const escaped = await run(
        runtime,
        ESCAPE + "const D = W.Deno ?? Deno;\n" +
          "const names = ['read','write','net','env','run','ffi','sys'];\n" +
          "return names.map((name) => D.permissions.querySync({ name }).state);",
      );
      assertEquals(escaped.status, "success", escaped.stderr);
      assert(!escaped.retVal.includes("granted"), escaped.retVal);
      const read = await run(runtime, ESCAPE + "return W.Deno.readTextFileSync('/etc/hostname')");
      assertEquals(read.status, "error", read.retVal);
      assertStringIncludes(read.stderr, "NotCapable");
    } finally {
      await runtime.shutdown();
    }
  },
);

Deno.test(
  "runner mode: the service in self mode runs, limits and contains code, and stops clean",
  opts,
  async () => {
    let hits = 0;
    const target = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, () => {
      hits++;
      return new Response("secret");
    });
    await using service = spawnService("main.ts", {
      FAAS_RUNNER_MODE: "self",
      FAAS_POOL_SIZE: "2",
      FAAS_DRAIN_TIMEOUT: "2000",
      FAAS_RUNNER_SECRET: SECRET,
    });
    try {
      const url = await service.listening();
      const pid = service.child.pid;

      const js = await runCode(url, "js", "console.log('Hello World'); return 42;");
      assertEquals([js.metadata.status, js.output.stdout, js.output.ret_val], [
        "success",
        "Hello World\n",
        "42",
      ], js.output.stderr);
      const ts = await runCode(
        url,
        "typescript",
        "const n: number = 41; console.log('Hello World'); return n + 1;",
      );
      assertEquals([ts.metadata.status, ts.output.ret_val], ["success", "42"], ts.output.stderr);

      // Every JS runner of the service is the service's own entry in runner mode.
      const runners = [...descendants(pid).keys()].map(commandLine)
        .filter((line) => line.includes(SELF_RUNNER_FLAG));
      assert(runners.length > 0, "expected self-launched runners under the service");
      for (const line of runners) assertStringIncludes(line, "main.ts");

      const slow = await runCode(url, "js", "while (true) {}", 500);
      assertEquals(slow.metadata.status, "timeout");
      assertStringIncludes(slow.error, "timed out after 500 ms");

      const file = await runCode(
        url,
        "js",
        ESCAPE + "return W.Deno.readTextFileSync('/etc/hostname')",
      );
      assertEquals(file.metadata.status, "error", file.output.ret_val);
      assertStringIncludes(file.output.stderr, "NotCapable");
      const env = await runCode(url, "js", ESCAPE + "return W.Deno.env.get('FAAS_RUNNER_SECRET')");
      assertEquals(env.metadata.status, "error", env.output.ret_val);
      assert(!JSON.stringify(env).includes(SECRET), "the service's environment leaked");
      const environ = await runCode(
        url,
        "js",
        ESCAPE + "return W.Deno.readTextFileSync('/proc/self/environ')",
      );
      assertEquals(environ.metadata.status, "error");
      const net = await runCode(
        url,
        "js",
        ESCAPE + `return await (await W.fetch('http://127.0.0.1:${target.addr.port}/')).text()`,
      );
      assertEquals(net.metadata.status, "error", net.output.ret_val);
      assertStringIncludes(net.output.stderr, "NotCapable");
      const spawn = await runCode(
        url,
        "js",
        ESCAPE + "return (await new W.Deno.Command('/usr/bin/id').output()).code",
      );
      assertEquals(spawn.metadata.status, "error", spawn.output.ret_val);
      assertEquals(hits, 0);

      const after = await runCode(url, "js", "console.log('Hello World'); return 42;");
      assertEquals(after.metadata.status, "success");

      const py = await runCode(url, "python", "print('Hello World')\n21 * 2");
      assertEquals([py.metadata.status, py.output.stdout, py.output.ret_val], [
        "success",
        "Hello World\n",
        "42",
      ], py.output.stderr);

      // SIGTERM: the service drains, exits 0, and takes every process it started with it.
      const started = descendants(pid);
      assert(started.size > 0);
      service.child.kill("SIGTERM");
      assertEquals((await service.child.status).code, 0, service.stderr.text());
      const survivors = [...started].filter(([child, since]) => startTime(child) === since);
      assertEquals(survivors.map(([child]) => commandLine(child)), []);
    } finally {
      await target.shutdown();
    }
  },
);

Deno.test("runner mode: deno run self runners get the flags the binary is compiled with", () => {
  const baked = compileArgs("/cache").filter((arg) =>
    ["--allow-all", "--no-prompt"].includes(arg) || arg.startsWith("--unstable-")
  );
  assertEquals(baked, ["--allow-all", "--no-prompt", "--unstable-worker-options"]);
  const self = selfRunnerArgv({ socketPath: "/tmp/s" });
  for (const flag of baked) assert(self.includes(flag), `self runners lack ${flag}`);
  const args = compileArgs("/cache", ["--target", "aarch64-unknown-linux-gnu"]);
  assertEquals(args.slice(args.indexOf("--include"), args.indexOf("--include") + 2), [
    "--include",
    "src/sandbox",
  ]);
  assertEquals(args.at(-1), "main.ts");
  assert(args.includes("--target") && args.includes("dist/faas-sandbox"));
  assert(!compileArgs("/cache", ["--output", "x"]).includes("dist/faas-sandbox"));
});

Deno.test(
  "runner mode: the compile task embeds the runner modules and the Python program",
  opts,
  async () => {
    // No denort can be downloaded here: the deno binary stands in for it, so the whole
    // embedding pipeline runs, but its output is not a runnable binary.
    const dir = await Deno.makeTempDir({ prefix: "faas-compile-" });
    try {
      const output = `${dir}/faas-sandbox`;
      const { code, stderr } = await new Deno.Command(Deno.execPath(), {
        args: ["task", "compile", "--output", output],
        cwd: new URL("../", import.meta.url),
        env: { DENORT_BIN: Deno.execPath(), NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const log = new TextDecoder().decode(stderr);
      assertEquals(code, 0, log);
      const python = await Deno.readTextFile(
        new URL("../src/sandbox/python/fork_server.py", import.meta.url),
      );
      const needles = [
        // A line of the Python program, the worker entry and the runner's narrowing.
        python.split("\n").find((line) => line.length > 40)!,
        "installSandbox(post).then(",
        "could not revoke the",
      ];
      for (const needle of needles) {
        const grep = await new Deno.Command("grep", {
          args: ["-c", "-a", "-F", "-e", needle, output],
          stdout: "piped",
        }).output();
        assert(grep.success, `expected the binary to embed ${JSON.stringify(needle)}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
