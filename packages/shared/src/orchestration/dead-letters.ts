import { applyTransition, jobTransitions } from "../jobs/job-transitions.js";
import type { Ports } from "../ports/index.js";
import { deadLetterQueueOf } from "../ports/queue.js";
import { LANES, queueForStage } from "../queues/registry.js";
import { isTerminal } from "../schemas/job.js";
import type { JobEventSink } from "../schemas/job-event.js";
import { stageMessageSchema } from "../schemas/stage-message.js";

export const DEAD_LETTER_CODES = ["stage_dead_lettered", "stage_failed_repeatedly"] as const;

/**
 * A message lands in a dead-letter queue after `maxReceives` failed deliveries — including when the
 * worker died on the last one and could not say so. This sweep marks such jobs `failed` with a clear
 * code, so no job waits forever in `running`. The dead letters stay for `kiln dlq list|replay`.
 */
export async function failDeadLetteredJobs(
  ports: Ports,
  kinds: readonly ("base" | "refine")[],
  now = new Date(),
  events?: JobEventSink,
  /** Resolution buckets (`lanes` routing): bucket queues whose dead letters are swept too. */
  routes: readonly string[] = [],
): Promise<string[]> {
  const failed: string[] = [];
  // Batch lanes: both lanes of each kind have dead letters; so has each bucket queue.
  const queues = kinds.flatMap((k) => LANES.flatMap((l) => [undefined, ...routes].map((r) => [k, l, r] as const)));
  for (const [kind, lane, route] of queues) {
    for (const message of await ports.queue.peekDeadLetters(queueForStage(kind, lane, route), { max: 10 })) {
      const parsed = stageMessageSchema.safeParse(message.body);
      if (!parsed.success) continue;
      const job = await ports.jobs.get(parsed.data.jobId);
      if (!job || isTerminal(job.status)) continue;
      // A duplicate of a stage the job has moved past says nothing about the job.
      if (job.progress && job.progress.stage > parsed.data.stage) continue;
      const error = {
        code: "stage_dead_lettered",
        message: `Stage ${parsed.data.stage} (${kind}) failed on each of its ${message.receiveCount} deliveries and was moved to the dead-letter queue ${deadLetterQueueOf(queueForStage(kind, lane, route))}. An operator can inspect it with \`kiln dlq list\` and re-run it with \`kiln dlq replay\`.`,
      };
      const updated = await applyTransition(
        ports.jobs,
        job.id,
        jobTransitions.fail(job, error, now, { version: job.version }),
        { events, at: now },
      );
      if (updated) failed.push(job.id);
    }
  }
  return failed;
}

/**
 * Re-drives dead letters of one stage kind: jobs they failed go back to `queued` (so the stage is
 * not skipped as finished), then the messages return to the queue with a fresh receive count.
 */
export async function replayDeadLetters(
  ports: Ports,
  kind: "base" | "refine",
  now = new Date(),
  routes: readonly string[] = [],
): Promise<{ requeuedJobs: string[]; messages: number }> {
  const requeuedJobs: string[] = [];
  let messages = 0;
  // Batch lanes: replay both lanes of the kind (and, with bucket routing, each bucket's queues).
  for (const [lane, route] of LANES.flatMap((l) => [undefined, ...routes].map((r) => [l, r] as const))) {
    for (const message of await ports.queue.peekDeadLetters(queueForStage(kind, lane, route), { max: 1000 })) {
      const parsed = stageMessageSchema.safeParse(message.body);
      if (!parsed.success) continue;
      const job = await ports.jobs.get(parsed.data.jobId);
      if (
        !job ||
        job.status !== "failed" ||
        !DEAD_LETTER_CODES.includes(job.error?.code as (typeof DEAD_LETTER_CODES)[number])
      )
        continue;
      const updated = await applyTransition(ports.jobs, job.id, jobTransitions.replay(job, now));
      if (updated) requeuedJobs.push(job.id);
    }
    messages += await ports.queue.redrive(queueForStage(kind, lane, route));
  }
  return { requeuedJobs, messages };
}
