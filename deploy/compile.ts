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

/**
 * Files of `swagger-ui-dist` that /docs never serves (source maps, the other bundles): 11 MB
 * the binary need not carry. /docs serves `swagger-ui-bundle.js`, `swagger-ui.css` and
 * `favicon-32x32.png` (src/http/docs.ts).
 */
const UNSERVED_DOCS_FILE = /\.map$|^swagger-ui\.js$|^swagger-ui-es-bundle|^swagger-ui-standalone/;

/**
 * The `deno compile` arguments for `extra` user arguments and the npm cache at `npmCache`;
 * `options.exclude` lists further paths to leave out.
 */
export function compileArgs(
  npmCache: string,
  extra: readonly string[] = [],
  options: { exclude?: readonly string[] } = {},
): string[] {
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
  for (const path of options.exclude ?? []) args.push("--exclude", path);
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

/**
 * The files of the pinned `swagger-ui-dist` (deno.json) in the npm cache that /docs does not
 * serve; none when the package is not cached there.
 */
export async function unservedDocsFiles(npmCache: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const target = String(config.imports?.["swagger-ui-dist/"] ?? "");
  const version = /^npm:\/?swagger-ui-dist@([^/]+)\/$/.exec(target)?.[1];
  if (!version) throw new Error(`expected deno.json to import swagger-ui-dist/, got "${target}"`);
  const dir = `${npmCache}/registry.npmjs.org/swagger-ui-dist/${version}`;
  const files: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile && UNSERVED_DOCS_FILE.test(entry.name)) files.push(`${dir}/${entry.name}`);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return files.sort();
}

if (import.meta.main) {
  const npmCache = await npmCacheDir();
  const args = compileArgs(npmCache, Deno.args, { exclude: await unservedDocsFiles(npmCache) });
  const { code } = await new Deno.Command(Deno.execPath(), { args, cwd: ROOT }).spawn().status;
  Deno.exit(code);
}
