import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";

import Database from "better-sqlite3";

import { SqliteWriteBatch } from "../src/adapters/local/sqlite-write-batch.js";

function withDb(fn: (db: Database.Database) => Promise<void>) {
  return async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-batch-"));
    const db = new Database(path.join(dir, "t.db"));
    db.pragma("journal_mode = WAL");
    db.exec("CREATE TABLE t (id TEXT PRIMARY KEY)");
    try {
      await fn(db);
    } finally {
      if (db.open) db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
}

describe("SQLite write batch (group commit)", () => {
  it(
    "runs the writes of one event-loop turn in one transaction and resolves each with its own result",
    withDb(async (db) => {
      const batch = new SqliteWriteBatch(db);
      const insert = db.prepare("INSERT INTO t VALUES (?)");
      const inTx: boolean[] = [];
      const results = await Promise.all(
        ["a", "b", "c"].map((id) =>
          batch.run(() => {
            inTx.push(db.inTransaction);
            return insert.run(id).changes;
          }),
        ),
      );
      assert.deepEqual(results, [1, 1, 1]);
      assert.deepEqual(inTx, [true, true, true]);
      assert.equal((db.prepare("SELECT COUNT(*) AS n FROM t").get() as { n: number }).n, 3);
      const later = await batch.run(() => insert.run("d").changes);
      assert.equal(later, 1, "a later turn gets its own transaction");
    }),
  );

  it(
    "fails a failing statement alone and keeps the others",
    withDb(async (db) => {
      const batch = new SqliteWriteBatch(db);
      const insert = db.prepare("INSERT INTO t VALUES (?)");
      const outcomes = await Promise.allSettled([
        batch.run(() => insert.run("x")),
        batch.run(() => insert.run("x")),
        batch.run(() => insert.run("y")),
      ]);
      assert.deepEqual(
        outcomes.map((o) => o.status),
        ["fulfilled", "rejected", "fulfilled"],
      );
      assert.match(String((outcomes[1] as PromiseRejectedResult).reason), /UNIQUE/);
      assert.deepEqual(
        (db.prepare("SELECT id FROM t ORDER BY id").all() as { id: string }[]).map((r) => r.id),
        ["x", "y"],
      );
    }),
  );

  it(
    "rejects every write when the transaction cannot run, and stores none",
    withDb(async (db) => {
      const batch = new SqliteWriteBatch(db);
      const insert = db.prepare("INSERT INTO t VALUES (?)");
      const pending = [batch.run(() => insert.run("p")), batch.run(() => insert.run("q"))];
      db.close();
      const outcomes = await Promise.allSettled(pending);
      assert.deepEqual(
        outcomes.map((o) => o.status),
        ["rejected", "rejected"],
      );
    }),
  );
});
