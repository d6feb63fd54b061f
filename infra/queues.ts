/**
 * One standard SQS queue per stage kind, each with its dead-letter queue (SQS's redrive policy
 * moves a message there on the receive after its `maxReceiveCount`-th), and the webhook queue.
 * Names in Kiln's code are logical (`kiln-base`, …); the links in sst-links.ts map them to these.
 */

/** Deliveries before a message is dead-lettered: KILN_MAX_RECEIVES of the workers. */
export const MAX_RECEIVES = 5;
/** The queue's default; workers pass KILN_VISIBILITY_SECONDS on every receive and extend it by heartbeat. */
const VISIBILITY = "60 seconds";
/** SQS's maximum, so an operator has two weeks to look at dead letters (`kiln dlq list`). */
const DLQ_RETENTION = "14 days";

function stageQueue(name: string) {
  const dlq = new sst.aws.Queue(`${name}Dlq`, { transform: { queue: { messageRetentionSeconds: 14 * 24 * 3600 } } });
  const queue = new sst.aws.Queue(`${name}Queue`, {
    visibilityTimeout: VISIBILITY,
    dlq: { queue: dlq.arn, retry: MAX_RECEIVES },
  });
  return { queue, dlq };
}

export const base = stageQueue("KilnBase");
export const refine = stageQueue("KilnRefine");
export const webhooks = stageQueue("KilnWebhook");
// Chat channels: Discord and Slack follow-ups (progress, results), sent beside the webhook dispatcher.
export const chat = stageQueue("KilnChat");
export const retention = DLQ_RETENTION;
