import { type Ports, retentionEnd } from "@kiln/shared";

/** Retention counts from the end of a job; the one rule lives with the job state machine in shared. */
export { expiresAtOnEnd, retentionEnd } from "@kiln/shared";

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
