/**
 * The Deno cache runners start from. A trusted runner fills it once (compiled modules, V8's
 * code cache); every other runner gets its own copy of its databases (the jail's `ownDir`):
 * Deno opens a cache database only where it may write it, and one written by a runner would
 * reach the next tenant's. Its compiled modules are plain files, shared read-only.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";

/** Where a runner's own copy of the cache lives, in its private /tmp. */
export const OWN_DENO_DIR = "/tmp/deno";

const SQLITE_MAGIC = "SQLite format 3\0";

/**
 * Folds each database of the cache in `dir` into a single file (its write-ahead log merged,
 * rollback journaling), so that a copy of the file is the whole database.
 */
export async function settleCache(dir: string): Promise<void> {
  const files = [];
  for await (const entry of Deno.readDir(dir)) if (entry.isFile) files.push(entry.name);
  // Logs and indexes go as their database is folded: never read one as a database.
  for (const name of files.filter((name) => !/-(wal|shm|journal)$/.test(name))) {
    if (!await isDatabase(`${dir}/${name}`)) continue;
    const db = new DatabaseSync(`${dir}/${name}`);
    try {
      db.exec("PRAGMA journal_mode=DELETE");
    } finally {
      db.close();
    }
  }
}

async function isDatabase(path: string): Promise<boolean> {
  using file = await Deno.open(path);
  const head = new Uint8Array(SQLITE_MAGIC.length);
  const read = await file.read(head);
  return read === head.length && new TextDecoder().decode(head) === SQLITE_MAGIC;
}
