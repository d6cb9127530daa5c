/**
 * The real service under mixed load, hostile tenants and abuse, through HTTP: answers stay
 * right and private, and the service recovers with nothing left spinning.
 */

import { assert, assertEquals } from "./helpers/assert.ts";
import { until } from "./helpers/wait.ts";
import {
  health,
  runCode,
  spinningDescendants,
  startRealService,
  untilRecovered,
} from "./e2e_helpers.ts";

const LANGUAGES = ["javascript", "typescript", "python"] as const;

/** Code that prints `token` and returns `n * 2`. */
function echoCode(language: typeof LANGUAGES[number], token: string): string {
  switch (language) {
    case "javascript":
      return `console.log(${JSON.stringify(token)}); return input.n * 2;`;
    case "typescript":
      return `const t: string = ${JSON.stringify(token)};\nconsole.log(t);\n` +
        "return (input as { n: number }).n * 2;";
    case "python":
      return `print(${JSON.stringify(token)})\ninput["n"] * 2`;
  }
}

Deno.test({
  name: "e2e: mixed load, tenant isolation and survival of abuse",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await using service = await startRealService({
      FAAS_MEMORY_LIMIT_MB: "128",
      FAAS_MAX_OUTPUT_BYTES: "65536",
    });
    const { url } = service;
    const pid = service.process.child.pid;

    await t.step(
      "200 mixed runs at concurrency 32 from 5 tenants: each gets its own answer",
      async () => {
        const total = 200;
        let next = 0;
        const failures: string[] = [];
        const worker = async () => {
          while (next < total) {
            const n = next++;
            const language = LANGUAGES[n % LANGUAGES.length];
            const token = `token-${n}-${crypto.randomUUID()}`;
            const answer = await runCode(url, {
              language,
              code: echoCode(language, token),
              input: { n },
              timeout: 20_000,
              ext: { space_id: `tenant-${n % 5}` },
            });
            const got = `${answer.metadata.status} ${JSON.stringify(answer.output)}`;
            if (
              answer.metadata.status !== "success" || answer.output.stdout !== token + "\n" ||
              answer.output.ret_val !== String(n * 2) || answer.output.stderr !== ""
            ) {
              failures.push(`run ${n} (${language}): ${got}`);
            }
          }
        };
        await Promise.all(Array.from({ length: 32 }, worker));
        assertEquals(failures, []);
      },
    );

    await t.step(
      "JavaScript: a tenant's globals, prototypes and timers reach no later run",
      async () => {
        const pollute = [
          "globalThis.leak = 'secret-A';",
          "Object.prototype.polluted = 'yes';",
          "Array.prototype.includes = () => true;",
          "JSON.stringify = () => '\"forged\"';",
          "setTimeout(() => console.log('late timer of A'), 0);",
          "setInterval(() => console.log('interval of A'), 1);",
          "return 1;",
        ].join("\n");
        const probe = "return [typeof globalThis.leak, typeof ({}).polluted, [1].includes(2)];";
        const clean = '["undefined","undefined",false]';
        for (const language of ["javascript", "typescript"]) {
          await runCode(url, { language, code: pollute, ext: { space_id: "iso-A" } });
          const b = await runCode(url, { language, code: probe, ext: { space_id: "iso-B" } });
          assertEquals(b.output, { stdout: "", stderr: "", ret_val: clean }, `${language}: B`);
          const a = await runCode(url, { language, code: probe, ext: { space_id: "iso-A" } });
          assertEquals(
            a.output,
            { stdout: "", stderr: "", ret_val: clean },
            `${language}: A later`,
          );
          const anonymous = await runCode(url, { language, code: probe });
          assertEquals(anonymous.output.ret_val, clean, `${language}: no tenant`);
        }
      },
    );

    await t.step("Python: a tenant's files, builtins and modules reach no later run", async () => {
      const pollute = [
        "import builtins, json, os, tempfile",
        "builtins.leak = 'secret-A'",
        "json.dumps = lambda *a, **k: 'forged'",
        "open('here.txt', 'w').write('secret-A')",
        "open(os.path.join(tempfile.gettempdir(), 'tmp.txt'), 'w').write('secret-A')",
        "os.getcwd()",
      ].join("\n");
      const written = await runCode(url, {
        language: "python",
        code: pollute,
        ext: { space_id: "iso-A" },
      });
      assertEquals(written.metadata.status, "success", written.output.stderr);
      const probe = [
        "import builtins, json, os, tempfile",
        "found = [p for d in {os.getcwd(), tempfile.gettempdir()} for p in os.listdir(d)",
        "         if p in ('here.txt', 'tmp.txt')]",
        "[hasattr(builtins, 'leak'), json.dumps([1]), found]",
      ].join("\n");
      const clean = '[false, "[1]", []]';
      for (const tenant of ["iso-B", "iso-A", undefined]) {
        const ext = tenant ? { space_id: tenant } : undefined;
        const answer = await runCode(url, { language: "python", code: probe, ext });
        assertEquals(answer.output.ret_val, clean, `tenant ${tenant}: ${answer.output.stderr}`);
      }
    });

    await t.step("the spinning probe sees a run that is still looping", async () => {
      const looping = runCode(url, { language: "python", code: "while True: pass", timeout: 2500 });
      await until(async () => (await health(url)).body.scheduler.runningTasks === 1, {
        what: "the loop to run",
      });
      const spinning = await spinningDescendants(pid, 500);
      assert(spinning.length > 0, "a looping run is seen as spinning");
      assertEquals((await looping).metadata.status, "timeout");
    });

    await t.step(
      "after bombs, floods, kills and 50 parallel timeouts the service recovers",
      async () => {
        const abuse: [string, string][] = [
          ["javascript", "const a = []; while (true) a.push(new Array(1e6).fill(1));"],
          ["javascript", "const a = []; while (true) a.push(new ArrayBuffer(1e8));"],
          ["python", "a = []\nwhile True: a.append(bytearray(10**8))"],
          ["javascript", "while (true) console.log('flood');"],
          ["python", "while True: print('flood')"],
          ["javascript", "Deno.kill(Deno.pid, 'SIGKILL');"],
          ["javascript", "process.kill(process.pid, 'SIGKILL');"],
          ["javascript", "process.kill(process.ppid, 'SIGKILL');"],
          ["javascript", "Deno.kill(-1, 'SIGKILL');"],
          ["python", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"],
          ["python", "import os, signal\nos.killpg(0, signal.SIGKILL)"],
          ["python", "import os\nos.kill(-1, 9)"],
          [
            "python",
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
          ],
          [
            "python",
            "import threading, time\nfor _ in range(10000):\n    threading.Thread(target=time.sleep, args=(60,)).start()",
          ],
          ["python", "import ctypes\nctypes.string_at(0)"],
        ];
        const answers = await Promise.all(
          abuse.map(([language, code], i) =>
            // The runs whose status is asserted below get time to reach their limit even
            // while the others hog the cores.
            runCode(url, { language, code, timeout: i === 0 ? 20_000 : 3000 })
          ),
        );
        for (const [i, answer] of answers.entries()) {
          assert(
            ["error", "timeout", "memory_limit", "output_limit", "crashed", "success"].includes(
              answer.metadata.status,
            ),
            abuse[i][1],
          );
        }
        assertEquals(answers[0].metadata.status, "memory_limit");
        // A flood runs to its timeout; its output keeps its head and tail.
        for (const flood of [answers[3], answers[4]]) {
          assertEquals([flood.metadata.status, flood.metadata.truncated], ["timeout", true]);
        }

        const loops: Record<string, string> = {
          javascript: "while (true) {}",
          typescript: "let n: number = 0; while (true) { n++; }",
          python: "while True: pass",
        };
        const timeouts = await Promise.all(Array.from({ length: 50 }, (_, i) => {
          const language = LANGUAGES[i % LANGUAGES.length];
          return runCode(url, {
            language,
            code: loops[language],
            timeout: 500,
            ext: { space_id: `loop-${i}` },
          });
        }));
        const statuses = timeouts.map((answer) =>
          `${answer.metadata.language} ${answer.metadata.status}`
        );
        assertEquals(statuses.filter((s) => !s.endsWith(" timeout")), []);
        for (const answer of timeouts) {
          assert(answer.metadata.instance_id, "the code ran somewhere");
        }

        await untilRecovered(url);
        assertEquals((await health(url)).body.status, "healthy");
        for (const language of LANGUAGES) {
          const answer = await runCode(url, {
            language,
            code: echoCode(language, "ok"),
            input: { n: 1 },
          });
          assertEquals([answer.metadata.status, answer.output.stdout, answer.output.ret_val], [
            "success",
            "ok\n",
            "2",
          ], language);
        }
        assertEquals(await spinningDescendants(pid), []);
      },
    );
  },
});
