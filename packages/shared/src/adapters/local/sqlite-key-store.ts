import { KilnError } from "../../errors.js";
import { isLiveIdempotency } from "../../idempotency-record.js";
import type {
  IdempotencyRecord,
  KeyLimits,
  KeyRecord,
  KeyScope,
  KeyStore,
  TokenResult,
} from "../../ports/key-store.js";
import { allowedResult, bucketWindow, deniedResult } from "../../token-bucket.js";
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
  limits: string | null;
  webhook_secret: string | null;
}

/** A bucket row outlives its last refill by this long, then it is swept (a full bucket is no row). */
const BUCKET_GRACE_SECONDS = 60;

/** Expired counters, buckets and idempotency records are swept at most this often, so the tables do not grow with every past window. */
const SWEEP_INTERVAL_MS = 60 * 60 * 1000;

/**
 * API keys, usage counters, rate buckets and idempotency records on SQLite. A counter past its
 * `expiresAt` (epoch seconds, as for DynamoDB TTL) counts as absent: the next increment starts it
 * again from zero. Every conditional write is one statement, so it is atomic across the processes
 * sharing the database.
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
  private readonly sweepStmts;
  private readonly takeTokenStmt;
  private readonly bucketStmt;
  private readonly claimIdempotencyStmt;
  private readonly getIdempotencyStmt;
  private readonly completeIdempotencyStmt;
  private readonly releaseIdempotencyStmt;
  private readonly renewIdempotencyStmt;

  constructor(db: SqliteDatabase, options: SqliteKeyStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    this.insertStmt = db.prepare<
      [string, string, string, string, string, string, string | null, string | null, string | null]
    >(
      "INSERT INTO api_keys (id, prefix, name, scopes, hash, created_at, revoked_at, limits, webhook_secret) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    );
    this.byPrefixStmt = db.prepare<[string], KeyRow>("SELECT * FROM api_keys WHERE prefix = ?");
    this.byIdStmt = db.prepare<[string], KeyRow>("SELECT * FROM api_keys WHERE id = ?");
    this.listStmt = db.prepare<[], KeyRow>("SELECT * FROM api_keys ORDER BY created_at, id");
    this.revokeStmt = db.prepare<[string, string]>(
      "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
    );
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
    this.sweepStmts = [
      db.prepare<[number]>("DELETE FROM counters WHERE expires_at <= ?"),
      db.prepare<[number]>("DELETE FROM rate_buckets WHERE expires_at <= ?"),
      db.prepare<[number]>("DELETE FROM idempotency WHERE expires_at <= ?"),
    ];
    // The decision and the write are one statement: a denied take changes nothing and returns no row.
    this.takeTokenStmt = db
      .prepare<{ bucket: string; now: number; interval: number; ceiling: number; expiresAt: number }, number>(
        `INSERT INTO rate_buckets (bucket, tat, expires_at) VALUES (@bucket, @now + @interval, @expiresAt)
         ON CONFLICT (bucket) DO UPDATE SET tat = max(rate_buckets.tat, @now) + @interval, expires_at = @expiresAt
           WHERE max(rate_buckets.tat, @now) + @interval <= @ceiling
         RETURNING tat`,
      )
      .pluck();
    this.bucketStmt = db.prepare<[string], number>("SELECT tat FROM rate_buckets WHERE bucket = ?").pluck();
    this.claimIdempotencyStmt = db
      .prepare<{ id: string; record: string; expiresAt: number; nowS: number; nowMs: number }, string>(
        `INSERT INTO idempotency (id, record, expires_at) VALUES (@id, @record, @expiresAt)
         ON CONFLICT (id) DO UPDATE SET record = excluded.record, expires_at = excluded.expires_at
           WHERE idempotency.expires_at <= @nowS
              OR (json_extract(idempotency.record, '$.state') = 'pending' AND json_extract(idempotency.record, '$.lockedUntil') <= @nowMs)
         RETURNING id`,
      )
      .pluck();
    this.getIdempotencyStmt = db.prepare<[string], string>("SELECT record FROM idempotency WHERE id = ?").pluck();
    this.completeIdempotencyStmt = db.prepare<{ id: string; token: string; record: string }>(
      `UPDATE idempotency SET record = @record
       WHERE id = @id AND json_extract(record, '$.token') = @token AND json_extract(record, '$.state') = 'pending'`,
    );
    this.renewIdempotencyStmt = db.prepare<{ id: string; token: string; until: number }>(
      `UPDATE idempotency SET record = json_set(record, '$.lockedUntil', @until)
       WHERE id = @id AND json_extract(record, '$.token') = @token AND json_extract(record, '$.state') = 'pending'`,
    );
    this.releaseIdempotencyStmt = db.prepare<{ id: string; token: string }>(
      `DELETE FROM idempotency WHERE id = @id AND json_extract(record, '$.token') = @token AND json_extract(record, '$.state') = 'pending'`,
    );
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
        record.limits ? JSON.stringify(record.limits) : null,
        record.webhookSecret ?? null,
      );
    } catch (e) {
      if (
        (e as { code?: string }).code === "SQLITE_CONSTRAINT_UNIQUE" ||
        (e as { code?: string }).code === "SQLITE_CONSTRAINT_PRIMARYKEY"
      ) {
        throw new KilnError(
          "key_exists",
          `An API key with id ${record.id} or prefix ${record.prefix} already exists; generate a new key.`,
          {
            status: 409,
            cause: e,
          },
        );
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
    this.sweep(now);
    return this.incrementStmt.get({ name, by, expiresAt: expiresAt ?? null, now: Math.floor(now / 1000) })!;
  }

  async takeToken(bucket: string, ratePerSecond: number, burst: number, nowMs: number): Promise<TokenResult> {
    const w = bucketWindow(ratePerSecond, burst, nowMs);
    this.sweep(this.now());
    const expiresAt = Math.ceil(w.ceilingUs / 1e6) + BUCKET_GRACE_SECONDS;
    const tat = this.takeTokenStmt.get({
      bucket,
      now: w.nowUs,
      interval: w.intervalUs,
      ceiling: w.ceilingUs,
      expiresAt,
    });
    if (tat !== undefined) return allowedResult(w, tat);
    return deniedResult(w, this.bucketStmt.get(bucket) ?? w.nowUs);
  }

  async putIdempotency(record: IdempotencyRecord, nowMs: number): Promise<IdempotencyRecord | null> {
    this.sweep(this.now());
    // A record can be released or expire between the claim and the read; then claim again.
    for (let attempt = 0; attempt < 5; attempt++) {
      const claimed = this.claimIdempotencyStmt.get({
        id: record.id,
        record: JSON.stringify(record),
        expiresAt: record.expiresAt,
        nowS: Math.floor(nowMs / 1000),
        nowMs,
      });
      if (claimed !== undefined) return null;
      const existing = await this.getIdempotency(record.id, nowMs);
      if (existing) return existing;
    }
    throw new KilnError(
      "idempotency_contended",
      "The Idempotency-Key record kept changing under this request; retry it.",
      { status: 409, retryable: true },
    );
  }

  async getIdempotency(id: string, nowMs: number): Promise<IdempotencyRecord | null> {
    const row = this.getIdempotencyStmt.get(id);
    if (row === undefined) return null;
    const record = JSON.parse(row) as IdempotencyRecord;
    return isLiveIdempotency(record, nowMs) ? record : null;
  }

  async completeIdempotency(
    id: string,
    token: string,
    result: Pick<IdempotencyRecord, "response" | "jobId">,
  ): Promise<boolean> {
    const row = this.getIdempotencyStmt.get(id);
    if (row === undefined) return false;
    const completed: IdempotencyRecord = { ...(JSON.parse(row) as IdempotencyRecord), ...result, state: "completed" };
    return this.completeIdempotencyStmt.run({ id, token, record: JSON.stringify(completed) }).changes === 1;
  }

  async renewIdempotency(id: string, token: string, lockedUntil: number): Promise<boolean> {
    return this.renewIdempotencyStmt.run({ id, token, until: lockedUntil }).changes === 1;
  }

  async releaseIdempotency(id: string, token: string): Promise<boolean> {
    return this.releaseIdempotencyStmt.run({ id, token }).changes === 1;
  }

  private sweep(nowMs: number): void {
    if (nowMs - this.lastSweep < SWEEP_INTERVAL_MS) return;
    this.lastSweep = nowMs;
    for (const statement of this.sweepStmts) statement.run(Math.floor(nowMs / 1000));
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
  if (row.limits !== null) record.limits = JSON.parse(row.limits) as KeyLimits;
  if (row.webhook_secret !== null) record.webhookSecret = row.webhook_secret;
  return record;
}
