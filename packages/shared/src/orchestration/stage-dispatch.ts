import type { RenderPlan } from "../plan/render-plan.js";
import type { Queue } from "../ports/queue.js";
import { queueForStage } from "../queues/registry.js";
import { blobKeys, type StageMessage } from "../schemas/stage-message.js";

/** The message that runs stage `index` of a job: deterministic, so a re-sent stage writes the same blobs. */
export function stageMessage(jobId: string, plan: RenderPlan, index: number, traceparent?: string): StageMessage {
  const stage = plan.stages[index];
  if (!stage) throw new RangeError(`plan has no stage ${index}`);
  return {
    v: 1,
    jobId,
    stage: index,
    kind: stage.kind,
    inputKey: index > 0 ? blobKeys.latents(jobId, index - 1) : undefined,
    outputKey: stage.output === "latents" ? blobKeys.latents(jobId, index) : blobKeys.imagesPrefix(jobId),
    traceparent,
    ...(plan.lane === "batch" ? { lane: "batch" as const } : {}),
    ...(plan.route ? { route: plan.route } : {}),
  };
}

export async function enqueueStage(queue: Queue, message: StageMessage): Promise<void> {
  await queue.send(queueForStage(message.kind, message.lane, message.route), message, {
    attributes: message.traceparent ? { traceparent: message.traceparent } : undefined,
  });
}
