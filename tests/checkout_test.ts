/**
 * The service started the way a newcomer starts it, from a checkout in a directory that only
 * root may enter (a home dir of mode 700, where a clone usually lands): every sandbox still
 * finds what it needs, since the service hands sandboxes copies of their files, never paths
 * into the checkout.
 */

import { assertEquals } from "./helpers/assert.ts";
import { Lines } from "./helpers/service_process.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** The repository's tracked files, as git lists them. */
async function trackedFiles(): Promise<string[]> {
  const { stdout, success } = await new Deno.Command("git", {
    args: ["ls-files", "-z"],
    cwd: ROOT,
    stdout: "piped",
  }).output();
  if (!success) throw new Error("expected git to list the repository's files");
  return new TextDecoder().decode(stdout).split("\0").filter(Boolean);
}

async function post(url: string, body: unknown): Promise<Record<string, Record<string, string>>> {
  const response = await fetch(`${url}/run_code`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  assertEquals(response.status, 200);
  return await response.json();
}

Deno.test({
  name: "checkout: the service runs every language from a dir only root may enter",
  ignore: Deno.uid() !== 0,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const home = await Deno.makeTempDir({ prefix: "faas-home-" });
    await Deno.chmod(home, 0o700);
    const checkout = `${home}/faas-sandbox`;
    try {
      for (const file of await trackedFiles()) {
        const target = `${checkout}/${file}`;
        await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
        await Deno.copyFile(`${ROOT}/${file}`, target);
      }
      const child = new Deno.Command(Deno.execPath(), {
        args: ["task", "start"],
        cwd: checkout,
        env: {
          FAAS_PORT: "0",
          FAAS_HOST: "127.0.0.1",
          FAAS_POOL_SIZE: "1",
          FAAS_PYTHON: Deno.env.get("FAAS_PYTHON") ?? "python3",
        },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const stdout = new Lines(child.stdout);
      const stderr = new Lines(child.stderr);
      try {
        const line = await stdout.waitFor(
          (text) => text.includes('"msg":"listening"'),
          "listening",
        );
        const url = JSON.parse(line).url;
        for (
          const [language, code] of [
            ["javascript", "console.log('Hello World'); return 42;"],
            ["typescript", "const n: number = 41;\nconsole.log('Hello World');\nreturn n + 1;"],
            ["python", "print('Hello World')\n42"],
          ]
        ) {
          // A new tenant and a returning one: a first run's worker and a kept one.
          for (let i = 0; i < 2; i++) {
            const answer = await post(url, { language, code, ext: { space_id: "home" } });
            assertEquals(
              [answer.metadata.status, answer.output.stdout, answer.output.ret_val],
              ["success", "Hello World\n", "42"],
              JSON.stringify(answer),
            );
          }
        }
        child.kill("SIGTERM");
        assertEquals((await child.status).code, 0);
      } finally {
        try {
          child.kill("SIGKILL");
        } catch {
          // already exited
        }
        await child.status;
        await Promise.all([stdout.done, stderr.done]);
      }
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  },
});
