import {
  type QueueDefinition,
  queueLinkNames,
  QUEUES,
  WEBHOOK_QUEUE,
} from "../../packages/shared/src/queues/registry.js";

/**
 * The queues Kiln's code uses and the SQS settings derived for each. Pure: the SST files
 * (infra/queues.ts) and the offline tests read the same answers.
 */

/** `webhook`: any outbound queue (webhook deliveries, chat follow-ups): short HTTP attempts, retried by re-send. */
export type QueueRole = "stage" | "webhook" | "batch" | "warmup";

export interface QueueSpec {
  /** Logical name in Kiln's code (`kiln-base`); its dead-letter queue is `<name>-dlq`. */
  name: string;
  role: QueueRole;
  /** SST resource names, which are also the `SST_RESOURCE_<Name>` link names the code reads. */
  link: string;
  dlqLink: string;
}

/**
 * Where infra learns which queues exist: Kiln's queue registry (packages/shared/src/queues/registry.ts:
 * every stage kind in every lane, the outbound queues), by way of its link table. Everything below
 * derives from this answer. `links` is for tests of names the registry does not hold.
 */
export function kilnQueueSpecs(links: Record<string, string> = queueLinkNames()): QueueSpec[] {
  const byName = new Map(QUEUES.map((q) => [q.name, q]));
  const specs: QueueSpec[] = [];
  for (const [name, link] of Object.entries(links)) {
    if (name.endsWith("-dlq")) continue;
    const dlqLink = links[`${name}-dlq`];
    if (!dlqLink)
      throw new Error(`queue ${name} has no ${name}-dlq link: every queue Kiln uses needs a dead-letter queue`);
    specs.push({ name, role: roleOf(name, byName.get(name)), link, dlqLink });
  }
  return specs;
}

function roleOf(name: string, definition: QueueDefinition | undefined): QueueRole {
  if (!definition) return name === WEBHOOK_QUEUE ? "webhook" : name.includes("batch") ? "batch" : "stage";
  const carries = definition.carries;
  // Outbound queues (webhooks, chat follow-ups) hold short HTTP attempts, not GPU work: the GPU fleet
  // neither scales on them nor waits a stage's visibility for them.
  if ("outbound" in carries) return "webhook";
  // Batch warm-up: read by no worker; the fleet's scaling counts its messages (see WARMUP_RETENTION_SECONDS).
  if ("signal" in carries) return "warmup";
  return carries.lane === "batch" ? "batch" : "stage";
}

export interface QueueTimings {
  /** Longest a single stage may run on the slowest GPU we deploy (largest size, most steps, batch). */
  longestStageSeconds: number;
  /** Receives before SQS dead-letters a message (KILN_MAX_RECEIVES). */
  maxReceives: number;
  /** One webhook attempt's timeout (KILN_WEBHOOK_TIMEOUT_SECONDS) and the retry horizon (KILN_WEBHOOK_RETRY_HOURS). */
  webhookTimeoutSeconds: number;
  webhookRetryHours: number;
  /** Time for a fleet at zero to start an instance, pull the image and load models. */
  coldStartSeconds: number;
}

export const DEFAULT_QUEUE_TIMINGS: QueueTimings = {
  // SDXL base, 150 steps at 2048² batch 4 on an A10G is minutes, not seconds; refuse to guess low.
  longestStageSeconds: 600,
  maxReceives: 5,
  webhookTimeoutSeconds: 10,
  webhookRetryHours: 24,
  coldStartSeconds: 600,
};

export interface QueuePlan extends QueueSpec {
  visibilitySeconds: number;
  retentionSeconds: number;
  dlqRetentionSeconds: number;
  maxReceives: number;
  /** Alarm when the oldest waiting message is older than this. */
  oldestAgeAlarmSeconds: number;
  /** Alarm when the DLQ holds at least this many messages. */
  dlqDepthAlarm: number;
}

const SQS_MAX_VISIBILITY = 43_200;
/** SQS's largest maxReceiveCount: warm-up messages are received and released by every run's fire. */
const SQS_MAX_RECEIVE_COUNT = 1000;
/** The longest warm-up a manifest may ask for (`schedule.warmup_minutes`, packages/api/src/batches/manifest.ts). */
export const MAX_WARMUP_MINUTES = 60;
/**
 * Warm-up messages are deleted when their run fires; the retention bounds one that was missed:
 * it keeps the fleet up at most this long after it was sent.
 */
export const WARMUP_RETENTION_SECONDS = (MAX_WARMUP_MINUTES + 15) * 60;
const SQS_MAX_RETENTION = 14 * 86_400;

/**
 * Visibility: workers pass their own on each receive and extend it by heartbeat every third of it,
 * but a consumer that never heartbeats (or the queue default used by `kiln dlq replay`) must not
 * see the message reappear while the longest stage still runs: 1.5 × the longest stage, bounded by
 * SQS. Webhooks: one attempt's timeout with the same margin, at least 30 s.
 * Retention: stages 4 days (SQS default: any job older has expired); webhooks must outlive their
 * retry horizon. DLQs keep letters the 14-day maximum for an operator to look at.
 * Oldest-message alarm: stage queues after a cold start plus two longest stages (the fleet should
 * have picked the message up by then); webhooks after an hour of retries.
 */
export function planQueues(specs: QueueSpec[], t: QueueTimings = DEFAULT_QUEUE_TIMINGS): QueuePlan[] {
  return specs.map((spec) => {
    const work = spec.role === "webhook" ? t.webhookTimeoutSeconds : t.longestStageSeconds;
    const visibilitySeconds = Math.min(SQS_MAX_VISIBILITY, Math.max(30, Math.ceil(work * 1.5)));
    const retentionSeconds =
      spec.role === "webhook"
        ? Math.min(SQS_MAX_RETENTION, Math.max(4 * 86_400, Math.ceil(t.webhookRetryHours * 3600 * 2)))
        : spec.role === "warmup"
          ? WARMUP_RETENTION_SECONDS
          : 4 * 86_400;
    const oldestAgeAlarmSeconds =
      spec.role === "webhook"
        ? 3600
        : spec.role === "batch" || spec.role === "warmup"
          ? 6 * 3600
          : t.coldStartSeconds + 2 * t.longestStageSeconds;
    return {
      ...spec,
      visibilitySeconds,
      retentionSeconds,
      dlqRetentionSeconds: SQS_MAX_RETENTION,
      maxReceives: spec.role === "warmup" ? SQS_MAX_RECEIVE_COUNT : t.maxReceives,
      oldestAgeAlarmSeconds,
      dlqDepthAlarm: 1,
    };
  });
}
