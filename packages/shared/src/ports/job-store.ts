import type { JobProgress, JobRecord, JobStatus } from "../schemas/job.js";
import type { JobEventType } from "../schemas/job-event.js";

/**
 * The JobStore port. Every state transition is conditional on the current version (and,
 * optionally, status), so a redelivered stage message can neither move a job backwards nor
 * finish it twice. Local family: SQLite. AWS family: DynamoDB conditional writes.
 */
export interface JobCondition {
  /** The update applies only if the stored version equals this. */
  version?: number;
  /** The update applies only if the stored status is one of these. */
  status?: readonly JobStatus[];
}

export type JobPatch = Partial<Omit<JobRecord, "id" | "version" | "ownerKeyId" | "createdAt">>;

export interface ListJobsOptions {
  limit: number;
  /** Opaque cursor from a previous page. */
  cursor?: string;
  status?: JobStatus;
}

export interface JobPage {
  jobs: JobRecord[];
  nextCursor?: string;
}

/** A queue message that must be sent if and only if the write it goes with is stored (the outbox). */
export interface OutboxMessage {
  queue: string;
  body: unknown;
  attributes?: Record<string, string>;
}

export interface JobStore {
  /** Creates the job; returns false if a job with this id already exists. */
  create(job: JobRecord): Promise<boolean>;
  /**
   * Creates the job and sends `messages` in one transaction: both or neither are stored. Only
   * families whose job table and queue share one database have it (local: one SQLite
   * transaction); elsewhere the submit path marks the job `enqueuedAt` after sending and a
   * reconciling sweep re-sends for jobs left without the mark (see orchestration/submit-outbox.ts).
   * Returns false, sending nothing, if a job with this id already exists.
   */
  createWithMessages?(job: JobRecord, messages: readonly OutboxMessage[]): Promise<boolean>;
  get(id: string): Promise<JobRecord | null>;
  /**
   * Applies `patch` if `condition` holds, bumping `version` and `updatedAt`. Top-level fields of the
   * patch replace the stored ones; an optional field present with the value `undefined` is removed.
   * Except the event outbox: `eventsDue` in a patch is *added* to the events the record holds, in the
   * same conditional write (never replaced, never removed: only `clearEventsDue` removes). A writer
   * holding an old copy of the job can then neither drop an event another transition stored since
   * nor bring back one already told.
   * Returns the updated record, or null when the condition failed (or the job does not exist).
   */
  update(id: string, condition: JobCondition, patch: JobPatch): Promise<JobRecord | null>;
  /**
   * Records denoising progress without bumping the version (progress is frequent and must not
   * race with cancel or finish). Applies only while the job is `running`.
   */
  setProgress(id: string, progress: JobProgress): Promise<void>;
  /**
   * Event outbox: removes `told` from the job's `eventsDue` (the events a transition stored with
   * itself) once the event sink has them. Like progress, it does not bump the version, so it never
   * makes a worker's conditional transition fail.
   */
  clearEventsDue(id: string, told: readonly JobEventType[]): Promise<void>;
  /**
   * Event outbox: up to `limit` jobs with events due, last updated before `updatedBefore` (ISO),
   * for the sweep that re-tells events a crash left untold.
   */
  listEventsDue(updatedBefore: string, limit: number): Promise<JobRecord[]>;
  listByOwner(ownerKeyId: string, options: ListJobsOptions): Promise<JobPage>;
  /** Jobs in `queued` state created before the given job, for queue position. */
  countQueuedBefore(job: Pick<JobRecord, "id" | "createdAt">): Promise<number>;
  /** Up to `limit` jobs still `queued` that were created before `createdBefore` (ISO), oldest first. */
  listQueued(createdBefore: string, limit: number): Promise<JobRecord[]>;
  /**
   * Up to `limit` ended jobs (succeeded, failed, canceled, expired) whose `expiresAt` (epoch
   * seconds) is before `nowSeconds`, for the retention sweep. On DynamoDB, TTL deletes such records
   * by itself (within days); this finds the ones it has not reached yet so their blobs can go first.
   */
  listExpired(nowSeconds: number, limit: number): Promise<JobRecord[]>;
  /** Deletes the record; deleting a missing job is a no-op. */
  delete(id: string): Promise<void>;
  close?(): Promise<void>;
}
