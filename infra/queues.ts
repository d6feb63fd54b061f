/**
 * One standard SQS queue per entry of Kiln's queue registry (packages/shared/src/queues/registry.ts:
 * each stage kind and lane, the webhook queue), each with its dead-letter queue (SQS's redrive policy
 * moves a message there on the receive after its `maxReceiveCount`-th). Names in Kiln's code are
 * logical (`kiln-base`, …); the component names here are the registry's links (`KilnBaseQueue`, …).
 */
import { queueForStage, QUEUES } from "../packages/shared/src/queues/registry";

/** Deliveries before a message is dead-lettered: KILN_MAX_RECEIVES of the workers. */
export const MAX_RECEIVES = 5;
/** The queue's default; workers pass KILN_VISIBILITY_SECONDS on every receive and extend it by heartbeat. */
const VISIBILITY = "60 seconds";
/** SQS's maximum, so an operator has two weeks to look at dead letters (`kiln dlq list`). */
const DLQ_RETENTION = "14 days";

function queuePair(link: string) {
  const dlq = new sst.aws.Queue(`${link}Dlq`, { transform: { queue: { messageRetentionSeconds: 14 * 24 * 3600 } } });
  const queue = new sst.aws.Queue(`${link}Queue`, {
    visibilityTimeout: VISIBILITY,
    dlq: { queue: dlq.arn, retry: MAX_RECEIVES },
  });
  return { queue, dlq };
}

/** Every queue of the registry with its dead-letter queue, by logical name. */
export const queues = Object.fromEntries(QUEUES.map((q) => [q.name, { ...queuePair(q.link), definition: q }]));

/** Every SQS queue and dead-letter queue, for links and IAM policies. */
export const allQueues = Object.values(queues).flatMap((q) => [q.queue, q.dlq]);

/** The stage queues (every kind and lane), which the worker fleet scales on. */
export const stageQueuePairs = QUEUES.filter((q) => "stage" in q.carries).map((q) => queues[q.name]!);

/** `kiln-base=URL,kiln-base-dlq=URL,…` for KILN_QUEUE_URLS. */
export const queueUrls = $util
  .all(
    Object.values(queues).flatMap((q) => [
      $interpolate`${q.definition.name}=${q.queue.url}`,
      $interpolate`${q.definition.name}-dlq=${q.dlq.url}`,
    ]),
  )
  .apply((pairs) => pairs.join(","));

/** The interactive stage queues, reported as outputs of `sst deploy`. */
export const base = queues[queueForStage("base")]!;
export const refine = queues[queueForStage("refine")]!;
export const retention = DLQ_RETENTION;
