import { isTerminal, type JobRecord, type Ports } from "@kiln/shared";

/**
 * Retention counts from the end of a job: a job that waited or ran long keeps its outputs as long
 * as a quick one. The record stores `expiresAt` from submission (created + retention), so the
 * retention period is `expiresAt − createdAt` and the outputs go at `finishedAt` plus that.
 * A job that has not ended has no end of retention yet.
 */
export function retentionEnd(job: JobRecord): number | undefined {
  if (!isTerminal(job.status) || job.expiresAt === undefined) return undefined;
  const retentionSeconds = job.expiresAt - Date.parse(job.createdAt) / 1000;
  const finished = Date.parse(job.finishedAt ?? job.updatedAt) / 1000;
  return Math.ceil(finished + Math.max(0, retentionSeconds));
}

/** `expiresAt` for a job that ends now, so DynamoDB's TTL (which reads the attribute) agrees with `retentionEnd`. */
export function expiresAtOnEnd(job: JobRecord, now: Date): number | undefined {
  if (job.expiresAt === undefined) return undefined;
  return Math.ceil(now.getTime() / 1000 + Math.max(0, job.expiresAt - Date.parse(job.createdAt) / 1000));
}

export interface SweepResult {
  deletedJobs: string[];
  deletedBlobs: number;
}

/**
 * Deletes ended jobs whose retention has run out: their blobs (images and hand-over latents under
 * `jobs/<id>/`) first, then the record, so a crash mid-way leaves a record that the next sweep
 * finds again rather than orphaned files. Jobs still queued or running are never touched.
 */
export async function sweepExpiredJobs(ports: Ports, options: { now: Date; batch?: number }): Promise<SweepResult> {
  const nowSeconds = Math.floor(options.now.getTime() / 1000);
  const candidates = await ports.jobs.listExpired(nowSeconds, options.batch ?? 100);
  const result: SweepResult = { deletedJobs: [], deletedBlobs: 0 };
  for (const job of candidates) {
    const end = retentionEnd(job);
    if (end === undefined || end > nowSeconds) continue;
    const keys = await ports.blobs.list(`jobs/${job.id}/`);
    for (const key of keys) await ports.blobs.delete(key);
    await ports.jobs.delete(job.id);
    result.deletedBlobs += keys.length;
    result.deletedJobs.push(job.id);
  }
  return result;
}
