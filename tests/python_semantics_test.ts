/**
 * The contract's rules for Python runs, proven through the Runtime interface on real zygotes.
 */

import assert from "node:assert/strict";
import { createPythonRuntime } from "./python_helpers.ts";
import { JAIL_LAYERS } from "../src/sandbox/jail/mod.ts";
import { droppedLine } from "../src/output.ts";
import { job, PYTHON, testSettings } from "./python_helpers.ts";

const runtime = createPythonRuntime(testSettings());
const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "python runtime starts and reports version and isolation layers",
  ...opts,
  fn: async () => {
    await runtime.start();
    const info = runtime.info();
    assert.equal(info.available, true);
    assert.match(info.version, /^3\.\d+\.\d+/);
    assert.equal(info.isolation.rlimits, true);
    assert.deepEqual(Object.keys(info.isolation).sort(), ["process", ...JAIL_LAYERS].sort());
    assert.deepEqual(runtime.languages, ["python"]);
  },
});

Deno.test({
  name: "stdout is captured and the last expression is the return value",
  ...opts,
  fn: async () => {
    const out = await runtime.run(job("print('Hello World')\n40 + 2"));
    assert.equal(out.status, "success");
    assert.equal(out.exitCode, 0);
    assert.equal(out.stdout, "Hello World\n");
    assert.equal(out.stderr, "");
    assert.equal(out.retVal, "42");
    assert.equal(out.truncated, false);
    assert.equal(out.error, undefined);
    assert.match(out.instanceId, /^python-/);
  },
});

Deno.test({
  name: "last expression values are JSON, non-JSON values their repr, None gives no value",
  ...opts,
  fn: async () => {
    assert.equal((await runtime.run(job("'hi'"))).retVal, '"hi"');
    assert.equal(
      (await runtime.run(job("{'a': [1, 2.5, None, True]}"))).retVal,
      '{"a": [1, 2.5, null, true]}',
    );
    assert.equal((await runtime.run(job("{1, 2}"))).retVal, "{1, 2}");
    assert.equal((await runtime.run(job("float('nan')"))).retVal, "nan");
    assert.equal((await runtime.run(job("None"))).retVal, "");
    assert.equal((await runtime.run(job("print('x')"))).retVal, "");
    assert.equal((await runtime.run(job("x = 5"))).retVal, "");
    assert.equal((await runtime.run(job("'héllo ✓'"))).retVal, '"héllo ✓"');
  },
});

Deno.test({
  name: "return_val sets ret_val: strings verbatim, other values as JSON, over the last expression",
  ...opts,
  fn: async () => {
    assert.equal((await runtime.run(job("return_val('plain text')\n1"))).retVal, "plain text");
    assert.equal((await runtime.run(job("return_val({'score': 1})"))).retVal, '{"score": 1}');
    assert.equal((await runtime.run(job("return_val(1)\nreturn_val([2])"))).retVal, "[2]");
    assert.equal((await runtime.run(job("return_val(object)"))).retVal, "<class 'object'>");
  },
});

Deno.test({
  name: "input is the JSON-decoded request input, None when absent",
  ...opts,
  fn: async () => {
    const out = await runtime.run(job("input['items'][1] * 2", { input: { items: [1, 21] } }));
    assert.equal(out.retVal, "42");
    assert.equal((await runtime.run(job("input is None"))).retVal, "true");
  },
});

Deno.test({
  name: "the code runs as the module __main__ and its definitions work together",
  ...opts,
  fn: async () => {
    const code = [
      "import sys, pickle",
      "class Point:",
      "    def __init__(self, x): self.x = x",
      "p = pickle.loads(pickle.dumps(Point(3)))",
      "[__name__, sys.modules['__main__'].Point is Point, p.x]",
    ].join("\n");
    const out = await runtime.run(job(code));
    assert.equal(out.status, "success", out.stderr);
    assert.equal(out.retVal, '["__main__", true, 3]');
  },
});

Deno.test({
  name: "evaluator template: marker block is the ret_val and is removed from stdout",
  ...opts,
  fn: async () => {
    const code = `
import json

def exec_evaluation(turn):
    print("evaluating turn", turn["id"])
    score = 0.5 if turn["output"] == "4" else 0.0
    print("score computed")
    return {"score": score, "reason": "output was " + turn["output"]}

result = exec_evaluation({"id": 7, "output": "4"})
print("__COZE_RETURN_VAL_START__")
print(json.dumps(result))
print("__COZE_RETURN_VAL_END__")
`;
    const out = await runtime.run(job(code));
    assert.equal(out.status, "success", out.stderr);
    assert.deepEqual(JSON.parse(out.retVal), { score: 0.5, reason: "output was 4" });
    assert.equal(out.stdout, "evaluating turn 7\nscore computed\n");
    assert.ok(!out.stdout.includes("__COZE_RETURN_VAL"));
  },
});

Deno.test({
  name: "without markers the last stdout line that is a JSON object is the ret_val",
  ...opts,
  fn: async () => {
    const code = 'print("log line")\nprint(\'{"score": 1, "reason": "ok"}\')\nprint("after")';
    const out = await runtime.run(job(code));
    assert.equal(out.retVal, '{"score": 1, "reason": "ok"}');
    assert.equal(out.stdout, "log line\nafter\n");
  },
});

Deno.test({
  name: "an uncaught exception is status error, exit 1, traceback with user line numbers only",
  ...opts,
  fn: async () => {
    const code = "x = 1\ndef f():\n    raise ValueError('boom')\nf()";
    const out = await runtime.run(job(code));
    assert.equal(out.status, "error");
    assert.equal(out.exitCode, 1);
    assert.equal(out.error, undefined);
    assert.match(out.stderr, /^Traceback \(most recent call last\):\n/);
    assert.match(out.stderr, /File "main\.py", line 4, in <module>/);
    assert.match(out.stderr, /File "main\.py", line 3, in f\n\s+raise ValueError\('boom'\)/);
    assert.match(out.stderr, /ValueError: boom\n$/);
    assert.ok(!out.stderr.includes("<string>"), out.stderr);
    assert.ok(!/faas_|zygote|executor/.test(out.stderr), out.stderr);
  },
});

Deno.test({
  name: "a syntax error is status error with the user's line in stderr",
  ...opts,
  fn: async () => {
    const out = await runtime.run(job("print(1)\nx = (\n"));
    assert.equal(out.status, "error");
    assert.equal(out.exitCode, 1);
    assert.match(out.stderr, /File "main\.py", line 2/);
    assert.match(out.stderr, /SyntaxError/);
  },
});

Deno.test({
  name: "source with a null byte is a clear error, not a crash",
  ...opts,
  fn: async () => {
    const out = await runtime.run(job("x = 1\0"));
    assert.equal(out.status, "error");
    assert.equal(out.exitCode, 1);
    assert.match(out.stderr, /null bytes/);
    const checked = await runtime.validate("x = 1\0", "python");
    assert.equal(checked.valid, false);
  },
});

Deno.test({
  name: "sys.exit(n) sets the exit code; 0 and no argument are success",
  ...opts,
  fn: async () => {
    const three = await runtime.run(job("import sys\nprint('before')\nsys.exit(3)"));
    assert.equal(three.status, "error");
    assert.equal(three.exitCode, 3);
    assert.equal(three.stdout, "before\n");
    assert.equal(three.error, undefined);
    const zero = await runtime.run(job("import sys\nsys.exit(0)"));
    assert.equal(zero.status, "success");
    assert.equal(zero.exitCode, 0);
    const none = await runtime.run(job("import sys\nsys.exit()"));
    assert.equal(none.status, "success");
    const message = await runtime.run(job("import sys\nsys.exit('bad input')"));
    assert.equal(message.status, "error");
    assert.equal(message.exitCode, 1);
    assert.equal(message.stderr, "bad input\n");
  },
});

Deno.test({
  name: "stdout and stderr are captured separately, including writes to the raw fds",
  ...opts,
  fn: async () => {
    const code = "import sys, os\nprint('out')\nprint('err', file=sys.stderr)\n" +
      "os.write(1, b'raw-out\\n')\nos.write(2, b'raw-err\\n')";
    const out = await runtime.run(job(code));
    assert.equal(out.status, "success");
    assert.deepEqual(out.stdout.split("\n").sort(), ["", "out", "raw-out"]);
    assert.deepEqual(out.stderr.split("\n").sort(), ["", "err", "raw-err"]);
  },
});

Deno.test({
  name: "a character written in two pieces, with a pause between them, arrives whole",
  ...opts,
  fn: async () => {
    const code = "import sys, time\nfor stream in (sys.stdout, sys.stderr):\n" +
      "    for i in range(5):\n" +
      "        stream.buffer.write(b'\\xc3')\n        stream.flush()\n        time.sleep(0.01)\n" +
      "        stream.buffer.write(b'\\xa9')\n        stream.flush()";
    const out = await runtime.run(job(code));
    assert.equal(out.status, "success", out.stderr);
    assert.equal(out.stdout, "ééééé");
    assert.equal(out.stderr, "ééééé");
  },
});

Deno.test({
  name: "non-daemon threads finish before the run ends",
  ...opts,
  fn: async () => {
    const code = "import threading, time\n" +
      "def late():\n    time.sleep(0.05)\n    print('from thread')\n" +
      "threading.Thread(target=late).start()";
    const out = await runtime.run(job(code));
    assert.equal(out.status, "success");
    assert.equal(out.stdout, "from thread\n");
  },
});

Deno.test({
  name: "stdlib modules and packages installed for the configured python are importable",
  ...opts,
  fn: async () => {
    const probe = await new Deno.Command(PYTHON, {
      args: ["-I", "-c", "import site; print(site.getsitepackages()[0])"],
      stdout: "piped",
    }).output();
    const sitePackages = new TextDecoder().decode(probe.stdout).trim();
    const name = `faas_probe_${crypto.randomUUID().replaceAll("-", "")}`;
    const file = `${sitePackages}/${name}.py`;
    await Deno.writeTextFile(file, "VALUE = 'from site-packages'\n");
    try {
      const code = `import csv, decimal, json, sqlite3, ${name}\n${name}.VALUE`;
      const out = await runtime.run(job(code));
      assert.equal(out.status, "success", out.stderr);
      assert.equal(out.retVal, '"from site-packages"');
    } finally {
      await Deno.remove(file);
    }
  },
});

Deno.test({
  name: "each run gets an empty environment and a private empty working directory",
  ...opts,
  fn: async () => {
    const code = "import os\nopen('f.txt', 'w').write('x')\n[dict(os.environ), os.listdir('.')]";
    const first = await runtime.run(job(code));
    const second = await runtime.run(job(code));
    assert.equal(first.retVal, '[{}, ["f.txt"]]');
    assert.equal(second.retVal, '[{}, ["f.txt"]]');
  },
});

Deno.test({
  name: "validate accepts valid code and locates syntax errors (1-based) without running",
  ...opts,
  fn: async () => {
    assert.deepEqual(await runtime.validate("x = 1\nprint(x)", "python"), {
      valid: true,
      error: null,
    });
    const bad = await runtime.validate("x = 1\nif x\n    pass", "python");
    assert.equal(bad.valid, false);
    assert.equal(bad.error?.line, 2);
    assert.equal(bad.error?.column, 5);
    assert.match(bad.error?.message ?? "", /SyntaxError/);
    const marker = await Deno.makeTempFile();
    await Deno.remove(marker);
    const ran = await runtime.validate(`open(${JSON.stringify(marker)}, 'w')`, "python");
    assert.equal(ran.valid, true);
    await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);
  },
});

Deno.test({
  name: "stdout over the cap keeps its head and tail, marks the run truncated and lets it finish",
  ...opts,
  fn: async () => {
    const code = "for i in range(200):\n    print(str(i).rjust(999, '.'))\nprint('last line')\n7";
    const out = await runtime.run(job(code));
    assert.equal(out.status, "success", out.stderr);
    assert.equal(out.truncated, true);
    assert.equal(out.retVal, "7");
    assert.ok(out.stdout.startsWith(".".repeat(998) + "0\n"), out.stdout.slice(0, 50));
    assert.ok(out.stdout.endsWith("199\nlast line\n"), out.stdout.slice(-50));
    const total = 200 * 1000 + "last line\n".length;
    assert.ok(
      out.stdout.includes(droppedLine(total - 64 * 1024)),
      "one line says what was dropped",
    );
    const err = await runtime.run(job("import sys\nsys.stderr.write('e' * 100000)"));
    assert.equal(err.status, "success");
    assert.equal(err.truncated, true);
    assert.ok(err.stderr.includes(droppedLine(100_000 - 64 * 1024)));
  },
});

Deno.test({
  name: "with the stop policy, stdout over the cap stops the run with output_limit",
  ...opts,
  fn: async () => {
    const stopping = createPythonRuntime(testSettings({ poolSize: 1, outputPolicy: "stop" }));
    await stopping.start();
    try {
      const out = await stopping.run(job("while True:\n    print('x' * 1000)"));
      assert.equal(out.status, "output_limit");
      assert.equal(out.truncated, true);
      assert.equal(out.error, "output limit of 65536 bytes exceeded");
      assert.ok(out.stdout.length < 70 * 1024);
      const err = await stopping.run(job("import sys\nsys.stderr.write('e' * 100000)"));
      assert.equal(err.status, "output_limit");
      const fits = await stopping.run(job("print('fits')"));
      assert.equal(fits.status, "success");
    } finally {
      await stopping.shutdown();
    }
  },
});

Deno.test({
  name: "concurrent runs each get their own output, input and return value",
  ...opts,
  fn: async () => {
    // Each run leaves a file in its /tmp and lists it: a run sees its own file only.
    const runs = Array.from({ length: 24 }, (_, i) =>
      runtime.run(job(
        "import os, time, sys\nprint('run', input)\nprint('err', input, file=sys.stderr)\n" +
          "open(f'/tmp/run-{input}', 'w').close()\ntime.sleep(0.01 * (input % 3))\n" +
          "[input * 2, os.listdir('/tmp')]",
        { input: i },
      )));
    const outs = await Promise.all(runs);
    outs.forEach((out, i) => {
      assert.equal(out.status, "success", out.stderr);
      assert.equal(out.stdout, `run ${i}\n`);
      assert.equal(out.stderr, `err ${i}\n`);
      assert.deepEqual(JSON.parse(out.retVal), [i * 2, [`run-${i}`]]);
    });
  },
});

Deno.test({
  name: "python runtime shuts down and kills its processes",
  ...opts,
  fn: async () => {
    await runtime.shutdown();
    assert.equal(runtime.info().available, false);
  },
});
