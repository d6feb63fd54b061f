import fs from "node:fs";

import Database from "better-sqlite3";

import type { StoreHealth } from "../../ports/index.js";
import type { SqliteDatabase } from "./sqlite-database.js";

/**
 * Whether the data dir's database still works as a database this process can rely on. A process
 * whose `kiln.db` or `-wal` was deleted under it goes on writing into unlinked files — every write
 * "succeeds" and is gone at the next restart — so the API's /healthz must fail and an orchestrator
 * restart it before it accepts work it will lose. Checks, cheapest first: the files are the ones
 * opened; a fresh connection can open the file; a write transaction commits (disk full, read-only).
 */
export function sqliteHealthCheck(db: SqliteDatabase, file: string): () => Promise<StoreHealth> {
  const opened = identity(file);
  // The write probe touches one row of the counters table; its value is the probe's time.
  const probe = db.prepare<[number]>(
    "INSERT INTO counters (name, value) VALUES ('health:write-probe', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
  );
  return async () => {
    const now = identity(file);
    if (!now || !opened || now !== opened)
      return { ok: false, reason: `the database file ${file} was deleted or replaced while open` };
    if (db.pragma("journal_mode", { simple: true }) === "wal" && !fs.existsSync(`${file}-wal`))
      return { ok: false, reason: `the write-ahead log ${file}-wal was deleted while open` };
    try {
      const fresh = new Database(file, { fileMustExist: true });
      try {
        fresh.pragma("user_version", { simple: true });
      } finally {
        fresh.close();
      }
    } catch (e) {
      return { ok: false, reason: `the database ${file} cannot be reopened: ${(e as Error).message}` };
    }
    try {
      probe.run(Date.now());
    } catch (e) {
      return { ok: false, reason: `the database ${file} cannot be written: ${(e as Error).message}` };
    }
    return { ok: true };
  };
}

function identity(file: string): string | undefined {
  try {
    const s = fs.statSync(file);
    return `${s.dev}:${s.ino}`;
  } catch {
    return undefined;
  }
}
