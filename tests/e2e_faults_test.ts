/**
 * Faults around the real service: signals to its whole process group (Ctrl-C in a terminal,
 * `deno task` passing on a SIGTERM), its own sudden death, and the sandbox machinery (jailers,
 * runners, zygotes, the syntax process) killed or stopped in the middle of runs. Every accepted
 * run is answered, the service heals by itself, and no process is left behind.
 */

import { assert, assertEquals } from "./helpers/assert.ts";
import { until } from "./helpers/wait.ts";
import { descendants, health, type RealService, runCode, startRealService } from "./e2e_helpers.ts";
import { startTimeOf } from "../bench/proc_tree.ts";

/** Processes by pid and start time: a pid reused later is not mistaken for one of them. */
function snapshot(pids: number[]): Map<number, string | undefined> {
  return new Map(pids.map((pid) => [pid, startTimeOf(pid)]));
}

/** Those of `family` still alive. */
function alive(family: Map<number, string | undefined>): number[] {
  return [...family].filter(([pid, start]) => start !== undefined && startTimeOf(pid) === start)
    .map(([pid]) => pid);
}

/** Runs that take a moment and then print, in each language. */
const SLOW: [string, string][] = [
  ["javascript", "await new Promise((r) => setTimeout(r, 1500)); console.log('done');"],
  ["typescript", "await new Promise<void>((r) => setTimeout(r, 1500)); console.log('done');"],
  ["python", "import time\ntime.sleep(1.5)\nprint('done')"],
];

Deno.test({
  name: "e2e: SIGINT to the whole process group drains runs in flight, exits 0, leaves nothing",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using service = await startRealService({}, { ownGroup: true });
    const pid = service.process.child.pid;
    const answers = SLOW.map(([language, code]) => runCode(service.url, { language, code }));
    await until(async () => (await health(service.url)).body.scheduler.runningTasks === 3, {
      what: "three runs in flight",
    });
    const family = snapshot(descendants(pid));
    assert(family.size > 0, "the service has sandbox processes");
    // What a terminal's Ctrl-C does: every process of the foreground group gets SIGINT.
    Deno.kill(-pid, "SIGINT");
    for (const answer of await Promise.all(answers)) {
      assertEquals([answer.metadata.status, answer.output.stdout], ["success", "done\n"]);
    }
    assertEquals((await service.process.child.status).code, 0);
    await until(() => alive(family).length === 0, { what: "every sandbox process to end" });
  },
});

Deno.test({
  name: "e2e: a service killed outright takes every sandbox process with it",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using service = await startRealService();
    const pid = service.process.child.pid;
    // Warm every kind of process: kept runners, zygotes, the syntax process.
    for (const [language] of SLOW) {
      await runCode(service.url, { language, code: "1", ext: { space_id: "warm" } });
    }
    const family = snapshot(descendants(pid));
    assert(family.size >= 4, `sandbox processes: ${[...family.keys()]}`);
    service.process.child.kill("SIGKILL");
    await service.process.child.status;
    await until(() => alive(family).length === 0, {
      timeoutMs: 10_000,
      what: "every process the service started to end with it",
    });
  },
});

/** A process under the service, as `ps` would show it. */
interface Member {
  pid: number;
  ppid: number;
  cmdline: string;
  cwd: string;
}

function members(root: number): Member[] {
  const found: Member[] = [];
  for (const pid of descendants(root)) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ");
      const cwd = Deno.readLinkSync(`/proc/${pid}/cwd`);
      found.push({ pid, ppid, cmdline, cwd });
    } catch {
      // gone while we looked, or a cwd we may not read
    }
  }
  return found;
}

/** The jailer of the JS (`js`) or Python (`py`) runtime under `service`. */
function jailerOf(service: number, kind: "js" | "py"): Member {
  const jailer = members(service).find((m) =>
    m.ppid === service && m.cmdline.includes("faas_jail/__main__.py") &&
    m.cwd.includes(`/faas-${kind}-`)
  );
  assert(jailer, `a ${kind} jailer under ${service}`);
  return jailer;
}

function childrenOf(service: number, parent: number): number[] {
  return members(service).filter((m) => m.ppid === parent).map((m) => m.pid);
}

const LONG: Record<string, string> = {
  javascript: "console.log('started'); await new Promise((r) => setTimeout(r, 3000));",
  python: "print('started', flush=True)\nimport time\ntime.sleep(3)",
};

/**
 * Every language runs a plain program again (retrying while the service heals); when it does
 * not, the error carries the service's last log lines and stderr.
 */
async function untilServing(service: RealService, what: string): Promise<void> {
  const { url } = service;
  await until(async () => {
    for (const language of ["javascript", "typescript", "python"]) {
      const code = language === "python" ? "print('ok')" : "console.log('ok')";
      const answer = await runCode(url, { language, code });
      if (answer.metadata.status !== "success" || answer.output.stdout !== "ok\n") return false;
    }
    return (await health(url)).status === 200;
  }, { timeoutMs: 30_000, what }).catch((error) => {
    const { stdout, stderr } = service.process;
    const last = (lines: string[]) => lines.slice(-30).join("\n");
    throw new Error(
      `${error.message}\nservice log:\n${last(stdout.seen)}\nservice stderr:\n${last(stderr.seen)}`,
    );
  });
}

/**
 * Processes that left the service's tree since `before` was taken: a process of the service
 * is either still under it or gone, never adopted by init.
 */
function escaped(service: number, before: Map<number, string | undefined>): number[] {
  const under = new Set(descendants(service));
  return alive(before).filter((pid) => !under.has(pid));
}

Deno.test({
  name: "e2e: machinery killed or stopped mid-run: every run is answered, the service heals",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await using service = await startRealService({ FAAS_MAX_INSTANCES: "8" });
    const { url } = service;
    const pid = service.process.child.pid;
    await untilServing(service, "a warm service");

    for (const kind of ["js", "py"] as const) {
      const language = kind === "js" ? "javascript" : "python";

      await t.step(`${kind} jailer killed under a run: answered, replaced`, async () => {
        const before = snapshot(descendants(pid));
        const jailer = jailerOf(pid, kind);
        const answer = runCode(url, { language, code: LONG[language], timeout: 20_000 });
        await until(async () => (await health(url)).body.scheduler.runningTasks === 1, {
          what: "the run to start",
        });
        Deno.kill(jailer.pid, "SIGKILL");
        const ended = await answer;
        assert(["crashed", "success"].includes(ended.metadata.status), ended.metadata.status);
        await untilServing(service, `a new ${kind} jailer`);
        assert(jailerOf(pid, kind).pid !== jailer.pid, "a new jailer");
        assertEquals(escaped(pid, before), []);
      });

      await t.step(`${kind} jailer stopped: found hung, replaced`, async () => {
        const before = snapshot(descendants(pid));
        const jailer = jailerOf(pid, kind);
        Deno.kill(jailer.pid, "SIGSTOP");
        // Runs that need a new sandbox wait for the jailer; all are answered.
        const answers = await Promise.all(Array.from({ length: 6 }, (_, i) =>
          runCode(url, {
            language,
            code: language === "python" ? "print('ok')" : "console.log('ok')",
            ext: { space_id: `stopped-jailer-${kind}-${i}` },
          })));
        for (const answer of answers) {
          assert(
            ["success", "crashed"].includes(answer.metadata.status),
            JSON.stringify(answer),
          );
        }
        // Its pings go unanswered: within seconds it is ended and replaced.
        await until(() => members(pid).every((m) => m.pid !== jailer.pid), {
          timeoutMs: 15_000,
          what: "the stopped jailer to be ended",
        });
        await untilServing(service, `a ${kind} jailer that answers again`);
        assertEquals(escaped(pid, before), []);
      });

      await t.step(`${kind} sandboxes killed and stopped under runs: answered`, async () => {
        const before = snapshot(descendants(pid));
        const running = Array.from(
          { length: 3 },
          () => runCode(url, { language, code: LONG[language], timeout: 2_000 }),
        );
        await until(async () => (await health(url)).body.scheduler.runningTasks === 3, {
          what: "three runs to start",
        });
        const sandboxes = childrenOf(pid, jailerOf(pid, kind).pid);
        assert(sandboxes.length >= 3, `sandboxes: ${sandboxes}`);
        // Half killed, half stopped: idle ones and those running the three runs.
        for (const [i, sandbox] of sandboxes.entries()) {
          Deno.kill(sandbox, i % 2 ? "SIGSTOP" : "SIGKILL");
        }
        for (const answer of await Promise.all(running)) {
          assert(
            ["crashed", "timeout"].includes(answer.metadata.status),
            JSON.stringify(answer.metadata),
          );
        }
        await untilServing(service, `${kind} sandboxes replaced`);
        assertEquals(escaped(pid, before), []);
      });
    }

    await t.step("the syntax process killed, then stopped: checks are answered", async () => {
      const syntax = () =>
        members(pid).filter((m) => m.ppid === pid && m.cmdline.includes("syntax")).map((m) =>
          m.pid
        );
      const [first] = syntax();
      assert(first, "a syntax process");
      Deno.kill(first, "SIGKILL");
      await untilServing(service, "a new syntax process");
      const [second] = syntax();
      Deno.kill(second, "SIGSTOP");
      const checked = await runCode(url, { language: "typescript", code: "let x: number = 1;" });
      assert(["success", "error"].includes(checked.metadata.status), checked.metadata.status);
      await untilServing(service, "a syntax process that answers again");
    });
  },
});
