import type { Statement } from "better-sqlite3";

import { KilnError } from "../../errors.js";
import type {
  JobCondition,
  JobPage,
  JobPatch,
  JobStore,
  ListJobsOptions,
  OutboxMessage,
} from "../../ports/job-store.js";
import type { JobProgress, JobRecord } from "../../schemas/job.js";
import type { JobEventType } from "../../schemas/job-event.js";
import type { SqliteDatabase } from "./sqlite-database.js";
import type { SqliteQueue } from "./sqlite-queue.js";
import { writeBatchOf } from "./sqlite-write-batch.js";

export interface SqliteJobStoreOptions {
  /** Epoch ms; stamps `updatedAt`. */
  now?: () => number;
  /** The queue on the same database: with it, `createWithMessages` commits a job and its messages together. */
  queue?: SqliteQueue;
}

/** Fields a patch may never change: they identify the job or are managed by the store. */
const IMMUTABLE_FIELDS = new Set<string>(["id", "version", "ownerKeyId", "createdAt", "updatedAt"]);
/** Fields every record has; `undefined` for one of these in a patch means "leave as is". */
const REQUIRED_FIELDS = new Set<string>(["status", "plan", "images", "stageTimings"]);
const MAX_PAGE = 1000;

interface JobRow {
  record: string;
}

/**
 * The JobStore port on one SQLite table. The record is stored as JSON beside the columns that are
 * queried (owner, status, version, creation time), and every conditional update is a single
 * UPDATE … WHERE version = ? AND status IN (…) RETURNING, so it is atomic across processes.
 */
export class SqliteJobStore implements JobStore {
  private readonly now: () => number;
  private readonly insertStmt;
  private readonly getStmt;
  private readonly progressStmt;
  private readonly countQueuedStmt;
  private readonly listQueuedStmt;
  /** Present when the store was given the queue on its database. */
  readonly createWithMessages?: (job: JobRecord, messages: readonly OutboxMessage[]) => Promise<boolean>;
  private readonly expiredStmt;
  private readonly deleteStmt;
  private readonly eventsDueStmt;
  private readonly clearEventsDueTx: (id: string, told: readonly JobEventType[]) => void;
  /** update and listByOwner build their SQL from the patch and filters; each shape is prepared once. */
  private readonly statements = new Map<string, Statement<unknown[], unknown>>();

  constructor(
    private readonly db: SqliteDatabase,
    options: SqliteJobStoreOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    const queue = options.queue;
    if (queue) this.createWithMessages = (job, messages) => this.createAtomically(job, messages, queue);
    this.insertStmt = db.prepare<[string, string, string, number, number, string]>(
      `INSERT INTO jobs (id, owner_key_id, status, version, created_ms, record) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO NOTHING`,
    );
    this.getStmt = db.prepare<[string], JobRow>("SELECT record FROM jobs WHERE id = ?");
    this.progressStmt = db.prepare<[string, string]>(
      "UPDATE jobs SET record = json_set(record, '$.progress', json(?)) WHERE id = ? AND status = 'running'",
    );
    this.countQueuedStmt = db
      .prepare<{ ms: number; id: string }, number>(
        `SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND (created_ms < @ms OR (created_ms = @ms AND id < @id))`,
      )
      .pluck();
    this.listQueuedStmt = db.prepare<[number, number], JobRow>(
      "SELECT record FROM jobs WHERE status = 'queued' AND created_ms < ? ORDER BY created_ms, id LIMIT ?",
    );
    // A sweep every few minutes reads the table once; no index on expiresAt is worth its writes.
    this.expiredStmt = db.prepare<[number, number], JobRow>(
      "SELECT record FROM jobs WHERE status IN ('succeeded', 'failed', 'canceled', 'expired') AND json_extract(record, '$.expiresAt') < ? ORDER BY created_ms LIMIT ?",
    );
    this.deleteStmt = db.prepare<[string]>("DELETE FROM jobs WHERE id = ?");
    this.eventsDueStmt = db.prepare<[string, number], JobRow>(
      "SELECT record FROM jobs WHERE json_extract(record, '$.eventsDue') IS NOT NULL AND json_extract(record, '$.updatedAt') < ? ORDER BY created_ms LIMIT ?",
    );
    const setDue = db.prepare<[string, string]>(
      "UPDATE jobs SET record = json_set(record, '$.eventsDue', json(?)) WHERE id = ?",
    );
    const removeDue = db.prepare<[string]>("UPDATE jobs SET record = json_remove(record, '$.eventsDue') WHERE id = ?");
    this.clearEventsDueTx = db.transaction((id: string, told: readonly JobEventType[]) => {
      const row = this.getStmt.get(id);
      if (!row) return;
      const due = (JSON.parse(row.record) as JobRecord).eventsDue;
      if (!due) return;
      const rest = due.filter((e) => !told.includes(e));
      if (rest.length === due.length) return;
      if (rest.length) setDue.run(JSON.stringify(rest), id);
      else removeDue.run(id);
    });
  }

  async create(job: JobRecord): Promise<boolean> {
    const ms = createdMs(job.createdAt);
    const record = JSON.stringify(job);
    // Submits are the API's hot path: concurrent ones share a commit (see sqlite-write-batch.ts).
    const info = await writeBatchOf(this.db).run(() =>
      this.insertStmt.run(job.id, job.ownerKeyId, job.status, job.version, ms, record),
    );
    return info.changes === 1;
  }

  /** The job row and its messages in one savepoint: a crash or a failed insert leaves neither. */
  private async createAtomically(
    job: JobRecord,
    messages: readonly OutboxMessage[],
    queue: SqliteQueue,
  ): Promise<boolean> {
    const ms = createdMs(job.createdAt);
    const record = JSON.stringify(job);
    const sends = messages.map((m) => queue.prepareSend(m.queue, m.body, { attributes: m.attributes }));
    const created = await writeBatchOf(this.db).runAtomic(() => {
      if (this.insertStmt.run(job.id, job.ownerKeyId, job.status, job.version, ms, record).changes !== 1) return false;
      for (const send of sends) send.write();
      return true;
    });
    if (created) for (const send of sends) send.sent();
    return created;
  }

  async listQueued(createdBefore: string, limit: number): Promise<JobRecord[]> {
    return this.listQueuedStmt.all(createdMs(createdBefore), limit).map((r) => JSON.parse(r.record) as JobRecord);
  }

  async get(id: string): Promise<JobRecord | null> {
    const row = this.getStmt.get(id);
    return row ? (JSON.parse(row.record) as JobRecord) : null;
  }

  /**
   * Top-level fields of `patch` replace the stored ones; an optional field present with the value
   * `undefined` is removed from the record (`{ error: undefined }` clears the error).
   */
  async update(id: string, condition: JobCondition, patch: JobPatch): Promise<JobRecord | null> {
    if (condition.status !== undefined && condition.status.length === 0) return null;
    const updatedAt = new Date(this.now()).toISOString();
    const params: unknown[] = [];
    let record = "json_set(record, '$.version', version + 1, '$.updatedAt', ?)";
    params.push(updatedAt);
    const removed: string[] = [];
    let statusChange = "";
    for (const [field, value] of Object.entries(patch)) {
      if (IMMUTABLE_FIELDS.has(field)) continue;
      if (field === "eventsDue") {
        // The event outbox is added to, from the row as this very statement finds it (see JobStore.update).
        if (!Array.isArray(value) || value.length === 0) continue;
        record = `json_set(${record}, '$.eventsDue', json((SELECT json_group_array(value) FROM (SELECT value FROM json_each(jobs.record, '$.eventsDue') WHERE value NOT IN (SELECT value FROM json_each(?)) UNION ALL SELECT DISTINCT value FROM json_each(?)))))`;
        params.push(JSON.stringify(value), JSON.stringify(value));
        continue;
      }
      if (value === undefined) {
        if (!REQUIRED_FIELDS.has(field)) removed.push(field);
        continue;
      }
      // Field names travel as bound JSON paths, never spliced into the SQL.
      record = `json_set(${record}, ?, json(?))`;
      params.push(jsonPath(field), JSON.stringify(value));
      if (field === "status") statusChange = ", status = ?";
    }
    if (removed.length > 0) {
      record = `json_remove(${record}${", ?".repeat(removed.length)})`;
      params.push(...removed.map(jsonPath));
    }
    if (statusChange) params.push(patch.status);

    let where = "id = ?";
    params.push(id);
    if (condition.version !== undefined) {
      where += " AND version = ?";
      params.push(condition.version);
    }
    if (condition.status !== undefined) {
      where += ` AND status IN (${condition.status.map(() => "?").join(", ")})`;
      params.push(...condition.status);
    }
    const row = this.prepared<JobRow>(
      `UPDATE jobs SET record = ${record}, version = version + 1${statusChange} WHERE ${where} RETURNING record`,
    ).get(...params);
    return row ? (JSON.parse(row.record) as JobRecord) : null;
  }

  async setProgress(id: string, progress: JobProgress): Promise<void> {
    this.progressStmt.run(JSON.stringify(progress), id);
  }

  // Event outbox: the events a transition stored in its own row write.
  async clearEventsDue(id: string, told: readonly JobEventType[]): Promise<void> {
    // Read and write in one transaction, so an event a concurrent transition adds is never dropped.
    this.clearEventsDueTx(id, told);
  }

  async listEventsDue(updatedBefore: string, limit: number): Promise<JobRecord[]> {
    // A sweep every few seconds over the jobs in retention; no index is worth its writes on one box.
    return this.eventsDueStmt.all(updatedBefore, limit).map((r) => JSON.parse(r.record) as JobRecord);
  }

  /** Newest first; ties on creation time are broken by id, so pages never skip or repeat a job. */
  async listByOwner(ownerKeyId: string, options: ListJobsOptions): Promise<JobPage> {
    const { limit } = options;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
      throw new KilnError("list_limit_invalid", `limit must be a whole number from 1 to ${MAX_PAGE} (got ${limit}).`, {
        status: 400,
      });
    }
    let where = "owner_key_id = ?";
    const params: unknown[] = [ownerKeyId];
    if (options.status !== undefined) {
      where += " AND status = ?";
      params.push(options.status);
    }
    if (options.cursor !== undefined) {
      const [ms, id] = decodeCursor(options.cursor);
      where += " AND (created_ms < ? OR (created_ms = ? AND id < ?))";
      params.push(ms, ms, id);
    }
    params.push(limit + 1);
    const rows = this.prepared<JobRow & { created_ms: number; id: string }>(
      `SELECT record, created_ms, id FROM jobs WHERE ${where} ORDER BY created_ms DESC, id DESC LIMIT ?`,
    ).all(...params);
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    const jobs = page.map((row) => JSON.parse(row.record) as JobRecord);
    return rows.length > limit && last ? { jobs, nextCursor: encodeCursor(last.created_ms, last.id) } : { jobs };
  }

  /** Across all owners: the job's place in the one shared queue. */
  private prepared<Row>(sql: string): Statement<unknown[], Row> {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = this.db.prepare<unknown[], unknown>(sql);
      this.statements.set(sql, statement);
    }
    return statement as Statement<unknown[], Row>;
  }

  async countQueuedBefore(job: Pick<JobRecord, "id" | "createdAt">): Promise<number> {
    return this.countQueuedStmt.get({ ms: createdMs(job.createdAt), id: job.id }) ?? 0;
  }

  async listExpired(nowSeconds: number, limit: number): Promise<JobRecord[]> {
    return this.expiredStmt.all(nowSeconds, limit).map((row) => JSON.parse(row.record) as JobRecord);
  }

  async delete(id: string): Promise<void> {
    this.deleteStmt.run(id);
  }
}

const jsonPath = (field: string): string => `$.${JSON.stringify(field)}`;

function createdMs(createdAt: string): number {
  const ms = Date.parse(createdAt);
  if (Number.isNaN(ms)) {
    throw new KilnError("job_invalid", `Job createdAt must be an ISO 8601 time (got ${JSON.stringify(createdAt)}).`);
  }
  return ms;
}

const encodeCursor = (ms: number, id: string): string => Buffer.from(JSON.stringify([ms, id])).toString("base64url");

function decodeCursor(cursor: string): [number, string] {
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
    if (Array.isArray(value) && value.length === 2 && Number.isInteger(value[0]) && typeof value[1] === "string") {
      return [value[0] as number, value[1]];
    }
  } catch {
    // falls through to the error below
  }
  throw new KilnError(
    "cursor_invalid",
    "The page cursor is not one this server issued; start again without a cursor.",
    { status: 400 },
  );
}
