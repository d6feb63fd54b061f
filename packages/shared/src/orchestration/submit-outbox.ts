import type { Ports } from "../ports/index.js";
import type { JobRecord } from "../schemas/job.js";
import { queueForStage } from "../schemas/stage-message.js";
import { enqueueStage, stageMessage } from "./stage-dispatch.js";

/** How long a queued job may lack its `enqueuedAt` mark before the reconciler re-sends stage 0. */
export const UNENQUEUED_GRACE_MS = 30_000;

/**
 * Writes a new job `queued` with its stage-0 message so that a crash at any point leaves either
 * nothing or a job that will run:
 * - where the job table and the queue share a database (local), both commit in one transaction;
 * - elsewhere (AWS) the job is written first, stage 0 sent, then the job marked `enqueuedAt`; a
 *   crash before the mark leaves a queued job the reconciler (below) finds and re-sends.
 * Returns false when a job with this id already exists (an idempotent retry): nothing is sent.
 */
export async function createQueuedJob(
  ports: Ports,
  job: JobRecord,
  options: { traceparent?: string; now: Date; pause?: PausePoint },
): Promise<boolean> {
  const first = stageMessage(job.id, job.plan, 0, options.traceparent);
  const attributes = options.traceparent ? { traceparent: options.traceparent } : undefined;
  const marked = { ...job, enqueuedAt: options.now.toISOString() };
  if (ports.jobs.createWithMessages) {
    await options.pause?.("submit:before-commit", { jobId: job.id });
    return ports.jobs.createWithMessages(marked, [
      { queue: queueForStage(first.kind, first.lane, first.route), body: first, attributes },
    ]);
  }
  if (!(await ports.jobs.create(job))) return false;
  await options.pause?.("submit:after-create", { jobId: job.id });
  await enqueueStage(ports.queue, first);
  await options.pause?.("submit:after-enqueue", { jobId: job.id });
  // Conditional on the first version: a worker that already started the job has proved it enqueued.
  await ports.jobs.update(job.id, { version: job.version, status: ["queued"] }, { enqueuedAt: marked.enqueuedAt });
  return true;
}

/**
 * Re-sends stage 0 of a queued job that has no `enqueuedAt` mark (its submit died between writing
 * it and marking it), then marks it. Also what an idempotent retry of that submit does at once.
 * Harmless if stage 0 was in fact sent: every transition is conditional, so the second delivery
 * finds the job started (or ended) and is dropped as a duplicate.
 */
export async function ensureEnqueued(ports: Ports, job: JobRecord, now: Date): Promise<JobRecord> {
  if (job.status !== "queued" || job.enqueuedAt) return job;
  await enqueueStage(ports.queue, stageMessage(job.id, job.plan, 0));
  return (
    (await ports.jobs.update(job.id, { status: ["queued"] }, { enqueuedAt: now.toISOString() })) ??
    (await ports.jobs.get(job.id)) ??
    job
  );
}

/**
 * The reconciling sweep of the submit outbox: queued jobs older than `graceMs` without the mark
 * get stage 0 re-sent. Runs beside the dead-letter sweep (workers, and the AWS cron Lambda).
 */
export async function reconcileQueuedJobs(
  ports: Ports,
  options: { now?: Date; graceMs?: number; limit?: number } = {},
): Promise<string[]> {
  const now = options.now ?? new Date();
  const before = new Date(now.getTime() - (options.graceMs ?? UNENQUEUED_GRACE_MS)).toISOString();
  const resent: string[] = [];
  for (const job of await ports.jobs.listQueued(before, options.limit ?? 100)) {
    if (job.enqueuedAt) continue;
    await ensureEnqueued(ports, job, now);
    resent.push(job.id);
  }
  return resent;
}

/**
 * A named point in a flow where a fault test may hold the process (see the Node implementation,
 * `pausePointsFromEnv`); resolves at once in production, where none is installed.
 */
export type PausePoint = (
  point: string,
  info?: Record<string, unknown>,
  /** Runs once the point is claimed, before the test is told the process is paused there. */
  prepare?: () => Promise<unknown>,
) => Promise<void>;
