/**
 * The process-per-request baseline: a minimal HTTP server speaking the `/run_code` contract
 * that starts a fresh interpreter for every run, as code runners commonly do.
 *
 * Modes (`--mode=`):
 * - `deno-run`: writes the code to a temporary file and runs `deno run` on it with no
 *   permissions at all (JavaScript and TypeScript);
 * - `deno-eval`: passes the code to `deno eval` (no file; note that `deno eval` grants every
 *   permission, so it is a speed reference, not a sandbox);
 * - `python3`: writes the code to a temporary file and runs it with `python3 -I` through a
 *   small wrapper that gives it `input`, `return_val` and the notebook-style last value.
 *
 * The answer's `ret_val` is resolved with the service's own precedence rules, so both do the
 * same work per run. Listens on `FAAS_HOST`:`FAAS_PORT`; `BENCH_PYTHON` names the Python.
 *
 * @module
 */

import { resolveRetVal } from "../../src/ret_val.ts";

type Mode = "deno-run" | "deno-eval" | "python3";

const MODES: readonly Mode[] = ["deno-run", "deno-eval", "python3"];

const modeArg = Deno.args.find((arg) => arg.startsWith("--mode="))?.slice("--mode=".length);
if (!MODES.includes(modeArg as Mode)) {
  console.error(`expected --mode= one of ${MODES.join(", ")}, got ${modeArg ?? "nothing"}`);
  Deno.exit(2);
}
const mode = modeArg as Mode;
const python = Deno.env.get("BENCH_PYTHON") ?? "python3";
const workDir = await Deno.makeTempDir({ prefix: "bench-spawn-" });

/** Runs the code as the body of an async function and reports what it returned on a tagged line. */
function denoSource(code: string): string {
  return `const input = JSON.parse(Deno.args[0]);
globalThis.input = input;
let __explicit;
globalThis.return_val = (v) => { __explicit = typeof v === "string" ? v : JSON.stringify(v); };
const __returned = await (async () => {
${code}
})();
console.log(Deno.args[1] + JSON.stringify({
  explicit: __explicit,
  returned: __returned === undefined ? undefined : JSON.stringify(__returned) ?? String(__returned),
}));
`;
}

const PYTHON_WRAPPER = `import ast, json, sys
_path, _input, _tag = sys.argv[1], sys.argv[2], sys.argv[3]
_explicit = None
def return_val(v):
    global _explicit
    _explicit = v if isinstance(v, str) else json.dumps(v)
_tree = ast.parse(open(_path).read(), _path)
_last = _tree.body.pop() if _tree.body and isinstance(_tree.body[-1], ast.Expr) else None
_globals = {"__name__": "__main__", "input": json.loads(_input), "return_val": return_val}
exec(compile(_tree, _path, "exec"), _globals)
_value = eval(compile(ast.Expression(_last.value), _path, "eval"), _globals) if _last else None
if _value is not None:
    try:
        _value = json.dumps(_value)
    except (TypeError, ValueError):
        _value = repr(_value)
print(_tag + json.dumps({"explicit": _explicit, "returned": _value}))
`;
const pythonWrapper = `${workDir}/wrapper.py`;
await Deno.writeTextFile(pythonWrapper, PYTHON_WRAPPER);

interface Job {
  language: string;
  code: string;
  input: unknown;
  timeoutMs: number;
}

const EXTENSIONS: Record<string, string> = {
  javascript: "js",
  js: "js",
  typescript: "ts",
  ts: "ts",
};

function command(job: Job, file: string, tag: string): { program: string; args: string[] } {
  const input = JSON.stringify(job.input ?? null);
  if (mode === "python3") return { program: python, args: ["-I", pythonWrapper, file, input, tag] };
  const ext = EXTENSIONS[job.language.toLowerCase()];
  if (mode === "deno-eval") {
    return {
      program: Deno.execPath(),
      args: ["eval", `--ext=${ext}`, "--no-config", denoSource(job.code), input, tag],
    };
  }
  return {
    program: Deno.execPath(),
    args: ["run", "--no-prompt", "--no-config", file, input, tag],
  };
}

async function run(job: Job): Promise<Record<string, unknown>> {
  const started = performance.now();
  const tag = `\n__BENCH_${crypto.randomUUID()}__`;
  const ext = mode === "python3" ? "py" : EXTENSIONS[job.language.toLowerCase()];
  const file = `${workDir}/${crypto.randomUUID()}.${ext}`;
  if (mode !== "deno-eval") {
    await Deno.writeTextFile(file, mode === "python3" ? job.code : denoSource(job.code));
  }
  const { program, args } = command(job, file, tag.slice(1));
  const signal = AbortSignal.timeout(job.timeoutMs);
  let result: Deno.CommandOutput;
  try {
    result = await new Deno.Command(program, {
      args,
      cwd: workDir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal,
    }).output();
  } finally {
    if (mode !== "deno-eval") await Deno.remove(file).catch(() => {});
  }
  const rawStdout = new TextDecoder().decode(result.stdout);
  const stderr = new TextDecoder().decode(result.stderr);
  const at = rawStdout.lastIndexOf(tag);
  let sources: { explicit?: string; returned?: string } = {};
  let stdout = rawStdout;
  if (at >= 0) {
    sources = JSON.parse(rawStdout.slice(at + tag.length).trim());
    stdout = rawStdout.slice(0, at + 1);
  }
  const resolved = resolveRetVal({
    explicit: sources.explicit ?? undefined,
    returned: sources.returned ?? undefined,
    stdout,
  });
  const status = signal.aborted ? "timeout" : result.code === 0 ? "success" : "error";
  return {
    output: { stdout: resolved.stdout, stderr, ret_val: resolved.retVal },
    metadata: {
      task_id: crypto.randomUUID(),
      instance_id: "spawn",
      language: job.language,
      status,
      exit_code: result.code,
      duration: Math.round(performance.now() - started),
      queue_time: 0,
      truncated: false,
    },
    error: status === "timeout" ? `execution timed out after ${job.timeoutMs} ms` : "",
  };
}

async function handle(request: Request): Promise<Response> {
  const path = new URL(request.url).pathname;
  if (request.method === "GET" && path === "/health") return Response.json({ status: "healthy" });
  if (request.method !== "POST" || path !== "/run_code") {
    return Response.json({ error: `no route ${request.method} ${path}` }, { status: 404 });
  }
  let body: { language?: unknown; code?: unknown; input?: unknown; timeout?: unknown };
  try {
    body = await request.json();
  } catch {
    return Response.json({ error: "expected a JSON body" }, { status: 400 });
  }
  if (typeof body.code !== "string" || typeof body.language !== "string") {
    return Response.json({ error: "expected string fields language and code" }, { status: 400 });
  }
  const job: Job = {
    language: body.language,
    code: body.code,
    input: body.input,
    timeoutMs: typeof body.timeout === "number" ? body.timeout : 30_000,
  };
  try {
    return Response.json(await run(job));
  } catch (error) {
    return Response.json({ error: `spawn failed: ${error}` }, { status: 500 });
  }
}

const server = Deno.serve({
  hostname: Deno.env.get("FAAS_HOST") ?? "127.0.0.1",
  port: Number(Deno.env.get("FAAS_PORT") ?? "0"),
  onListen: () => {},
}, handle);
Deno.addSignalListener("SIGTERM", () => server.shutdown());
await server.finished;
await Deno.remove(workDir, { recursive: true });
