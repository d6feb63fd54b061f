import { enqueueStage, planRender, randomId, stageMessage, type JobRecord, type Ports, type RenderRequest } from "@kiln/shared";

/**
 * Submitting a render, whatever the channel (HTTP, Slack, Discord, batch): plan it, write the job
 * `queued`, then enqueue stage 0. The job is written first so a crash between the two leaves a
 * visible queued job rather than an orphan message; the enqueue is retried by the caller.
 */
export async function submitRender(
  ports: Ports,
  input: { ownerKeyId: string; request: RenderRequest; now: Date; retentionHours: number; traceparent?: string },
): Promise<JobRecord> {
  const seed = input.request.seed ?? crypto.getRandomValues(new Uint32Array(1))[0]!;
  const plan = planRender(input.request, seed);
  const created = input.now.toISOString();
  const retention = input.request.retention_hours ?? input.retentionHours;
  const job: JobRecord = {
    id: `job_${randomId(12)}`,
    ownerKeyId: input.ownerKeyId,
    status: "queued",
    version: 1,
    createdAt: created,
    updatedAt: created,
    plan,
    images: [],
    stageTimings: [],
    deadlineAt: input.request.deadline_seconds ? new Date(input.now.getTime() + input.request.deadline_seconds * 1000).toISOString() : undefined,
    expiresAt: Math.ceil(input.now.getTime() / 1000 + retention * 3600),
  };
  await ports.jobs.create(job);
  await enqueueStage(ports.queue, stageMessage(job.id, plan, 0, input.traceparent));
  return job;
}
