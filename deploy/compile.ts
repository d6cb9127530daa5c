/**
 * Builds the single binary (`deno task compile`): `deno compile` of main.ts with the
 * permissions and unstable features the service and its self-launched runners need, the
 * sandbox modules loaded at run time (worker, realm, the Python program) embedded, and only
 * the npm packages the service imports.
 *
 * Extra arguments go to `deno compile` (e.g. `--target aarch64-unknown-linux-gnu`,
 * `--output other/path`). Offline, point `DENORT_BIN` at a `denort` of the same Deno version.
 *
 * @module
 */

const ROOT = new URL("../", import.meta.url);

/**
 * Test data of `npm:bintrees` (reached through prom-client) that makes `deno compile` 2.9
 * overflow its stack (denoland/deno#36746); it is never loaded, so it is left out.
 */
const UNLOADABLE = ["bintrees/1.0.2/test"];

/** The `deno compile` arguments for `extra` user arguments and the npm cache at `npmCache`. */
export function compileArgs(npmCache: string, extra: readonly string[] = []): string[] {
  const args = [
    "compile",
    // Baked into the binary: the service needs them all; each runner narrows its own.
    "--allow-all",
    "--no-prompt",
    "--unstable-worker-options",
    "--exclude-unused-npm",
    // Loaded at run time, not imported: the worker entry, the realm, fork_server.py.
    "--include",
    "src/sandbox",
  ];
  for (const path of UNLOADABLE) {
    args.push("--exclude", `${npmCache}/registry.npmjs.org/${path}`);
  }
  if (!extra.some((arg) => arg === "--output" || arg.startsWith("--output=") || arg === "-o")) {
    args.push("--output", "dist/faas-sandbox");
  }
  args.push(...extra, "main.ts");
  return args;
}

async function npmCacheDir(): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(`expected "deno info --json" to work: ${new TextDecoder().decode(stderr)}`);
  }
  return JSON.parse(new TextDecoder().decode(stdout)).npmCache;
}

if (import.meta.main) {
  const args = compileArgs(await npmCacheDir(), Deno.args);
  const { code } = await new Deno.Command(Deno.execPath(), { args, cwd: ROOT }).spawn().status;
  Deno.exit(code);
}
