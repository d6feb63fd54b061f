import type { SqliteDatabase } from "./sqlite-database.js";

interface PendingWrite {
  write: () => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/**
 * Group commit: writes issued in the same turn of the event loop share one transaction, so many
 * concurrent submits pay for one WAL commit (and its share of checkpointing) instead of one each.
 * Every caller learns its own statement's result or error only once the transaction committed.
 * A statement that fails (a constraint) fails alone; a transaction that cannot begin or commit
 * (busy past the timeout, disk full) fails every write in it, and none is stored.
 */
export class SqliteWriteBatch {
  private pending: PendingWrite[] = [];

  constructor(private readonly db: SqliteDatabase) {}

  run<T>(write: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.pending.length === 0) setImmediate(() => this.flush());
      this.pending.push({ write, resolve: resolve as (value: unknown) => void, reject });
    });
  }

  /**
   * Several writes that commit together or not at all: they run in a savepoint inside the batch's
   * transaction, so one failing rolls the others back without touching the rest of the batch.
   */
  runAtomic<T>(writes: () => T): Promise<T> {
    return this.run(() => this.db.transaction(writes)());
  }

  private flush(): void {
    const writes = this.pending;
    this.pending = [];
    const results: { ok: boolean; value: unknown }[] = [];
    try {
      this.db
        .transaction(() => {
          for (const w of writes) {
            try {
              results.push({ ok: true, value: w.write() });
            } catch (error) {
              results.push({ ok: false, value: error });
            }
          }
        })
        .immediate();
    } catch (error) {
      for (const w of writes) w.reject(error);
      return;
    }
    writes.forEach((w, i) => (results[i]!.ok ? w.resolve(results[i]!.value) : w.reject(results[i]!.value)));
  }
}

const batches = new WeakMap<SqliteDatabase, SqliteWriteBatch>();

/** The one batch of a database connection, shared by every store on it. */
export function writeBatchOf(db: SqliteDatabase): SqliteWriteBatch {
  let batch = batches.get(db);
  if (!batch) {
    batch = new SqliteWriteBatch(db);
    batches.set(db, batch);
  }
  return batch;
}
