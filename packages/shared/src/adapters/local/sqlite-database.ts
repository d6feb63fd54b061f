import fs from "node:fs";
import path from "node:path";

import Database from "better-sqlite3";

import { KilnError } from "../../errors.js";

export type SqliteDatabase = Database.Database;

/** How long a connection waits for another process's write lock before failing. */
const BUSY_TIMEOUT_MS = 5_000;

/**
 * Schema migrations, applied in order; `PRAGMA user_version` records how many have run. Append
 * only: a shipped migration is never edited, because data dirs in the field already ran it.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE queue_messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT UNIQUE
  );
  CREATE INDEX queue_messages_by_visibility ON queue_messages (queue, visible_at);

  CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    owner_key_id TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    record TEXT NOT NULL
  );
  CREATE INDEX jobs_by_owner ON jobs (owner_key_id, created_ms DESC, id DESC);
  CREATE INDEX jobs_by_status ON jobs (status, created_ms, id);

  CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    prefix TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
  );

  CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value REAL NOT NULL,
    expires_at INTEGER
  );
  CREATE INDEX counters_by_expiry ON counters (expires_at) WHERE expires_at IS NOT NULL;
  `,
  `
  ALTER TABLE api_keys ADD COLUMN limits TEXT;
  ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT;

  -- Token buckets as GCRA: one theoretical arrival time (epoch µs) per bucket.
  CREATE TABLE rate_buckets (
    bucket TEXT PRIMARY KEY,
    tat INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  );
  CREATE INDEX rate_buckets_by_expiry ON rate_buckets (expires_at);

  CREATE TABLE idempotency (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    expires_at INTEGER NOT NULL
  );
  CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);
  `,
  `
  -- One row per worker, overwritten by its (coalesced) poll beats.
  CREATE TABLE worker_beats (
    worker_id TEXT PRIMARY KEY,
    stages TEXT NOT NULL,
    last_poll_at INTEGER NOT NULL,
    busy INTEGER NOT NULL
  );
  CREATE INDEX worker_beats_by_poll ON worker_beats (last_poll_at);
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * Opens `<dataDir>/kiln.db`, shared by the API and any number of worker processes on the same
 * machine: WAL lets readers proceed beside the one writer, and the busy timeout makes a writer
 * wait for another process's short transaction instead of failing.
 */
export function openSqliteDatabase(dataDir: string): SqliteDatabase {
  const file = path.join(dataDir, "kiln.db");
  let db: SqliteDatabase;
  try {
    // The database holds webhook secrets and key hashes: owner-only whatever the umask. SQLite
    // creates `-wal` and `-shm` with the main file's permissions, so setting it first covers them.
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    fs.closeSync(fs.openSync(file, "a", 0o600));
    fs.chmodSync(file, 0o600);
    db = new Database(file);
  } catch (cause) {
    throw new KilnError(
      "data_dir_unusable",
      `Cannot open the Kiln database at ${file}: ${(cause as Error).message}. Check that the data dir exists and is writable, or choose another with --data-dir.`,
      { cause },
    );
  }
  try {
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.pragma("journal_mode = WAL");
    // In WAL mode NORMAL only risks the last transactions on power loss, never corruption.
    db.pragma("synchronous = NORMAL");
    migrate(db, file);
    return db;
  } catch (e) {
    db.close();
    throw e;
  }
}

function migrate(db: SqliteDatabase, file: string): void {
  const version = (): number => db.pragma("user_version", { simple: true }) as number;
  if (version() === MIGRATIONS.length) return;
  if (version() > MIGRATIONS.length) {
    throw new KilnError(
      "data_dir_too_new",
      `The database ${file} has schema version ${version()}, but this Kiln knows only up to ${MIGRATIONS.length}. Upgrade Kiln, or point it at another data dir.`,
    );
  }
  for (let target = 1; target <= MIGRATIONS.length; target++) {
    // IMMEDIATE takes the write lock before re-reading the version, so two processes opening a
    // fresh data dir at once apply each migration exactly once.
    db.transaction(() => {
      if (version() >= target) return;
      db.exec(MIGRATIONS[target - 1]!);
      db.pragma(`user_version = ${target}`);
    }).immediate();
  }
}
