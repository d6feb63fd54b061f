import { KilnError } from "../../errors.js";
import type { KeyRecord, KeyScope, KeyStore } from "../../ports/key-store.js";
import type { SqliteDatabase } from "./sqlite-database.js";

export interface SqliteKeyStoreOptions {
  /** Epoch ms; decides when counters have expired. */
  now?: () => number;
}

interface KeyRow {
  id: string;
  prefix: string;
  name: string;
  scopes: string;
  hash: string;
  created_at: string;
  revoked_at: string | null;
}

/** Expired counters are swept at most this often, so the table does not grow with every past window. */
const SWEEP_INTERVAL_MS = 60 * 60 * 1000;

/**
 * API keys and usage counters on SQLite. A counter past its `expiresAt` (epoch seconds, as for
 * DynamoDB TTL) counts as absent: the next increment starts it again from zero.
 */
export class SqliteKeyStore implements KeyStore {
  private readonly now: () => number;
  private lastSweep = Number.NEGATIVE_INFINITY;
  private readonly insertStmt;
  private readonly byPrefixStmt;
  private readonly byIdStmt;
  private readonly listStmt;
  private readonly revokeStmt;
  private readonly incrementStmt;
  private readonly sweepStmt;

  constructor(db: SqliteDatabase, options: SqliteKeyStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    this.insertStmt = db.prepare<[string, string, string, string, string, string, string | null]>(
      "INSERT INTO api_keys (id, prefix, name, scopes, hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    );
    this.byPrefixStmt = db.prepare<[string], KeyRow>("SELECT * FROM api_keys WHERE prefix = ?");
    this.byIdStmt = db.prepare<[string], KeyRow>("SELECT * FROM api_keys WHERE id = ?");
    this.listStmt = db.prepare<[], KeyRow>("SELECT * FROM api_keys ORDER BY created_at, id");
    this.revokeStmt = db.prepare<[string, string]>("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL");
    this.incrementStmt = db
      .prepare<{ name: string; by: number; expiresAt: number | null; now: number }, number>(
        `INSERT INTO counters (name, value, expires_at) VALUES (@name, @by, @expiresAt)
         ON CONFLICT (name) DO UPDATE SET
           value = CASE WHEN counters.expires_at <= @now THEN excluded.value ELSE counters.value + excluded.value END,
           expires_at = CASE WHEN counters.expires_at <= @now THEN excluded.expires_at
                             ELSE coalesce(counters.expires_at, excluded.expires_at) END
         RETURNING value`,
      )
      .pluck();
    this.sweepStmt = db.prepare<[number]>("DELETE FROM counters WHERE expires_at <= ?");
  }

  async insert(record: KeyRecord): Promise<void> {
    try {
      this.insertStmt.run(
        record.id,
        record.prefix,
        record.name,
        JSON.stringify(record.scopes),
        record.hash,
        record.createdAt,
        record.revokedAt ?? null,
      );
    } catch (e) {
      if ((e as { code?: string }).code === "SQLITE_CONSTRAINT_UNIQUE" || (e as { code?: string }).code === "SQLITE_CONSTRAINT_PRIMARYKEY") {
        throw new KilnError("key_exists", `An API key with id ${record.id} or prefix ${record.prefix} already exists; generate a new key.`, {
          status: 409,
          cause: e,
        });
      }
      throw e;
    }
  }

  async getByPrefix(prefix: string): Promise<KeyRecord | null> {
    const row = this.byPrefixStmt.get(prefix);
    return row ? toRecord(row) : null;
  }

  async get(id: string): Promise<KeyRecord | null> {
    const row = this.byIdStmt.get(id);
    return row ? toRecord(row) : null;
  }

  /** Oldest first. */
  async list(): Promise<KeyRecord[]> {
    return this.listStmt.all().map(toRecord);
  }

  /** True if this call revoked the key; false if there is no such key or it was already revoked. */
  async revoke(id: string, at: string): Promise<boolean> {
    return this.revokeStmt.run(at, id).changes === 1;
  }

  /** `expiresAt` is in epoch seconds; a counter keeps the expiry it was created with until it lapses. */
  async incrementCounter(name: string, by: number, expiresAt?: number): Promise<number> {
    if (!Number.isFinite(by)) {
      throw new KilnError("counter_invalid", `A counter can only be increased by a finite number (got ${by}).`);
    }
    const now = this.now();
    if (now - this.lastSweep >= SWEEP_INTERVAL_MS) {
      this.lastSweep = now;
      this.sweepStmt.run(Math.floor(now / 1000));
    }
    return this.incrementStmt.get({ name, by, expiresAt: expiresAt ?? null, now: Math.floor(now / 1000) })!;
  }
}

function toRecord(row: KeyRow): KeyRecord {
  const record: KeyRecord = {
    id: row.id,
    prefix: row.prefix,
    name: row.name,
    scopes: JSON.parse(row.scopes) as KeyScope[],
    hash: row.hash,
    createdAt: row.created_at,
  };
  if (row.revoked_at !== null) record.revokedAt = row.revoked_at;
  return record;
}
