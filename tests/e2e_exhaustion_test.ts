/**
 * Runs that exhaust what they are given (their /tmp's bytes and inodes, file descriptors,
 * processes, timers and message ports) stay inside their run: the next run, of the same tenant
 * or another, gets everything back, the host's /tmp is untouched, and the service serves on.
 */

import { assert, assertEquals } from "./helpers/assert.ts";
import { runCode, startRealService } from "./e2e_helpers.ts";

/** What the host's /tmp holds: its entries and the bytes and inodes in use. */
async function hostTmp(): Promise<{ entries: Set<string>; usedBytes: number; usedInodes: number }> {
  const entries = new Set<string>();
  for await (const entry of Deno.readDir("/tmp")) entries.add(entry.name);
  const { stdout } = await new Deno.Command("df", {
    args: ["--output=used,iused", "-B1", "/tmp"],
  }).output();
  const [usedBytes, usedInodes] = new TextDecoder().decode(stdout).trim().split("\n")[1].trim()
    .split(/\s+/).map(Number);
  return { entries, usedBytes, usedInodes };
}

const PYTHON_EXHAUSTION: [string, string][] = [
  [
    "fills its /tmp with bytes",
    "import os\nn = 0\ntry:\n    with open('/tmp/fill', 'wb') as f:\n" +
    "        while True:\n            f.write(b'x' * (1 << 20))\n            n += 1\n" +
    "except OSError as e:\n    print(type(e).__name__, n > 0)",
  ],
  [
    "fills its /tmp with inodes",
    "import os\nn = 0\ntry:\n    while True:\n" +
    "        open(f'/tmp/f{n}', 'w').close()\n        n += 1\n" +
    "except OSError as e:\n    print(type(e).__name__, n > 100)",
  ],
  [
    "opens descriptors until refused",
    "import os\nfds = []\ntry:\n    while True:\n        fds.append(os.open('/dev/null', os.O_RDONLY))\n" +
    "except OSError as e:\n    print(type(e).__name__, len(fds) > 100)",
  ],
  [
    "forks until refused",
    "import os, time\nkids = 0\ntry:\n    while True:\n        if os.fork() == 0:\n" +
    "            time.sleep(60)\n            os._exit(0)\n        kids += 1\n" +
    "except OSError as e:\n    print(type(e).__name__, kids > 10)",
  ],
];

const PYTHON_CLEAN = "import os\n" +
  "fds = len(os.listdir('/proc/self/fd'))\n" +
  "print(sorted(os.listdir('/tmp')), fds < 10, len([p for p in os.listdir('/proc') if p.isdigit()]))\n" +
  "open('/tmp/ok', 'w').write('x' * 4096)";

Deno.test({
  name: "e2e: runs that exhaust their /tmp, descriptors, processes, timers or ports stay inside",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await using service = await startRealService();
    const { url } = service;
    const before = await hostTmp();

    for (const [what, code] of PYTHON_EXHAUSTION) {
      await t.step(`python: a run that ${what} stops there; the next runs get it all`, async () => {
        const tenant = `exhaust-${what.replaceAll(" ", "-")}`;
        const answer = await runCode(url, {
          language: "python",
          code,
          timeout: 20_000,
          ext: { space_id: tenant },
        });
        assertEquals(answer.metadata.status, "success", JSON.stringify(answer));
        assert(
          /^(OSError|BlockingIOError) True\n$/.test(answer.output.stdout),
          answer.output.stdout,
        );
        for (const next of [tenant, "another-tenant"]) {
          const clean = await runCode(url, {
            language: "python",
            code: PYTHON_CLEAN,
            ext: { space_id: next },
          });
          assertEquals(clean.metadata.status, "success", clean.output.stderr);
          assertEquals(clean.output.stdout, "[] True 1\n", `${what}, then ${next}`);
        }
      });
    }

    await t.step("javascript: timer and message-port floods end with their run", async () => {
      const floods = [
        "for (let i = 0; i < 1e6; i++) setTimeout(() => {}, 1e9);\nreturn 'timers';",
        "const ports = [];\nfor (let i = 0; i < 1e5; i++) ports.push(new MessageChannel());\n" +
        "return 'ports';",
        "let n = 0;\nconst tick = () => { n++; setTimeout(tick, 0); };\nfor (let i = 0; i < 1000; i++) tick();\n" +
        "await new Promise((r) => setTimeout(r, 300));\nreturn 'storm';",
      ];
      for (const code of floods) {
        const answer = await runCode(url, {
          language: "javascript",
          code,
          timeout: 20_000,
          ext: { space_id: "js-floods" },
        });
        assert(
          ["success", "memory_limit", "timeout"].includes(answer.metadata.status),
          JSON.stringify(answer.metadata),
        );
        // The tenant's next run starts clean and on time: no timer of the flood fires in it.
        const next = await runCode(url, {
          language: "javascript",
          code: "await new Promise((r) => setTimeout(r, 50)); return 'clean';",
          timeout: 5_000,
          ext: { space_id: "js-floods" },
        });
        assertEquals([next.metadata.status, next.output.ret_val], ["success", '"clean"']);
      }
    });

    await t.step("the host's /tmp is untouched", async () => {
      const after = await hostTmp();
      const added = [...after.entries].filter((name) => !before.entries.has(name));
      // Only work dirs of services (this one's existed before the runs) may come and go.
      assertEquals(added.filter((name) => !name.startsWith("faas-")), []);
      // No run's bytes or inodes landed on the host: allow what other processes do meanwhile.
      assert(after.usedBytes - before.usedBytes < 32 * 1024 * 1024, "bytes on the host's /tmp");
      assert(after.usedInodes - before.usedInodes < 1000, "inodes on the host's /tmp");
    });
  },
});
