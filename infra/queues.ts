/**
 * Every queue Kiln's code uses, each with its dead-letter queue (SQS's redrive policy moves a
 * message there on the receive after its `maxReceiveCount`-th). Which queues exist and their
 * settings come from infra/plan/queues.ts (tested offline); SST resource names are the link names
 * the code reads (`SST_RESOURCE_<Name>`, packages/shared/src/sst-links.ts).
 */
import { kilnQueueSpecs, planQueues, type QueuePlan } from "./plan/queues";

export interface KilnQueue {
  plan: QueuePlan;
  queue: sst.aws.Queue;
  dlq: sst.aws.Queue;
}

export const queues: KilnQueue[] = planQueues(kilnQueueSpecs()).map((plan) => {
  const dlq = new sst.aws.Queue(plan.dlqLink, {
    transform: { queue: { messageRetentionSeconds: plan.dlqRetentionSeconds } },
  });
  const queue = new sst.aws.Queue(plan.link, {
    visibilityTimeout: `${plan.visibilitySeconds} seconds`,
    dlq: { queue: dlq.arn, retry: plan.maxReceives },
    transform: { queue: { messageRetentionSeconds: plan.retentionSeconds } },
  });
  return { plan, queue, dlq };
});

/** Every queue and DLQ ARN, for IAM statements. */
export const queueArns = queues.flatMap((q) => [q.queue.arn, q.dlq.arn]);

/** `kiln-base=<url>,kiln-base-dlq=<url>,…` for KILN_QUEUE_URLS. */
export const queueUrls = $resolve(
  queues.flatMap((q) => [$interpolate`${q.plan.name}=${q.queue.url}`, $interpolate`${q.plan.name}-dlq=${q.dlq.url}`]),
).apply((pairs) => pairs.join(","));
