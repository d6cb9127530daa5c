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
import { compileArgs } from "../deploy/compile.ts";
import vm from "node:vm";

const opts = { sanitizeOps: false, sanitizeResources: false };
const SECRET = "runner-mode-secret-4711";
/** The classic escape from a vm context; refused in a kept worker, the run's own realm else. */
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
  const { argv, env } = runnerCommandLine({
    launch: "self",
    modulesDir: "/sandbox/files/js",
    socketPath: "/sandbox/run/host.sock",
    token: "t0k3n",
    memoryLimitMb: 64,
    denoDir: "/sandbox/files/cache",
  });
  assertEquals(argv.slice(0, -3), selfRunnerArgv());
  assertEquals(argv[0], Deno.execPath());
  assertEquals(argv.slice(-3), [SELF_RUNNER_FLAG, "/sandbox/run/host.sock", "t0k3n"]);
  assert(argv.at(-4)!.endsWith("/main.ts"));
  // The compiled binary's baked-in flags (deno.json "compile" task), nothing remote.
  for (const flag of ["--allow-all", "--no-prompt", "--unstable-worker-options", "--no-remote"]) {
    assert(argv.includes(flag), `expected ${flag} in ${argv.join(" ")}`);
  }
  assertEquals(env.DENO_V8_FLAGS, "--max-old-space-size=64");
  assertEquals(env.DENO_DIR, "/sandbox/files/cache");
});

Deno.test(
  "runner mode: a self runner gives up every permission it does not need, then all",
  opts,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "faas-self-" });
    const socketPath = `${dir}/s`;
    const listener = Deno.listen({ transport: "unix", path: socketPath });
    const [command, ...args] = [
      ...selfRunnerArgv(),
      SELF_RUNNER_FLAG,
      socketPath,
      "t0k3n",
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
      const frames: { t: string; id?: number; data?: string }[] = [];
      let token = "";
      const until = async (type: string, id?: number): Promise<void> => {
        while (!frames.some((frame) => frame.t === type && (id === undefined || frame.id === id))) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`runner closed the socket before "${type}"`);
          let bytes = value;
          if (!token.endsWith("\n")) {
            const end = bytes.indexOf(10) + 1;
            token += new TextDecoder().decode(bytes.subarray(0, end || bytes.length));
            bytes = end ? bytes.subarray(end) : new Uint8Array(0);
          }
          for (const body of decoder.push(bytes)) frames.push(JSON.parse(body));
        }
      };
      const writer = conn.writable.getWriter();
      const builtins = vm.runInContext(
        "Object.getOwnPropertyNames(globalThis)",
        vm.createContext(),
      );
      await writer.write(encodeFrame({ t: "config", builtins }));
      await until("ready");
      assertEquals(token, "t0k3n\n");
      // A first run and a kept worker's run still work with no permission left.
      for (const id of [1, 2]) {
        await writer.write(encodeFrame({
          t: "run",
          id,
          code: "console.log('hi'); return 1;",
          file: "main.js",
        }));
        await until("done", id);
        assert(
          frames.some((frame) => frame.t === "out" && frame.id === id && frame.data === "hi\n"),
          JSON.stringify(frames),
        );
      }
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

      const file = await runCode(url, "js", "return Deno.readTextFileSync('/etc/hostname')");
      assertEquals(file.metadata.status, "error", file.output.ret_val);
      assertStringIncludes(file.output.stderr, "NotCapable");
      const escaped = await runCode(
        url,
        "js",
        ESCAPE + "return W.Deno.readTextFileSync('/etc/hostname')",
      );
      assertEquals(escaped.metadata.status, "error", escaped.output.ret_val);
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
        `return await (await fetch('http://127.0.0.1:${target.addr.port}/')).text()`,
      );
      assertEquals(net.metadata.status, "error", net.output.ret_val);
      assertStringIncludes(net.output.stderr, "NotCapable");
      const spawn = await runCode(
        url,
        "js",
        "return (await new Deno.Command('/usr/bin/id').output()).code",
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
  const self = selfRunnerArgv();
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
  "runner mode: the compile task embeds the runner modules, the Python packages and the docs",
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
      const zygote = await Deno.readTextFile(
        new URL("../src/sandbox/python/faas_python/zygote.py", import.meta.url),
      );
      const jailer = await Deno.readTextFile(
        new URL("../src/sandbox/jail/faas_jail/layers.py", import.meta.url),
      );
      const needles = [
        // Lines of the Python packages, the kept worker's refusal and the runner's narrowing.
        zygote.split("\n").find((line) => line.length > 40)!,
        jailer.split("\n").find((line) => line.length > 40)!,
        "code generation from strings is not available here",
        "could not revoke the",
        // The assets /docs serves (swagger-ui-dist's script and styles).
        "SwaggerUIBundle",
        ".swagger-ui .opblock",
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
