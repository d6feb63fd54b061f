/**
 * Every queue Kiln uses, in one list. Code sends and receives by logical name (`kiln-base`); the
 * AWS family finds a queue by that name in KILN_QUEUE_URLS, in its SST link, or by
 * GetQueueUrl(prefix + name); infra/ creates one SQS queue and one dead-letter queue per entry
 * and links both. Each queue's dead-letter queue is `<name>-dlq` (`deadLetterQueueOf`).
 *
 * Adding a lane (a second queue per stage kind, e.g. for batch work) is one line in `STAGE_LANES`;
 * adding an outbound queue (chat replies) is one line in `OUTBOUND_QUEUES`.
 */
import { deadLetterQueueOf } from "../ports/queue.js";
import type { StageKind } from "../schemas/job.js";

export const STAGE_KINDS = ["base", "refine"] as const satisfies readonly StageKind[];

/**
 * Lanes of the stage queues, in the order workers prefer them. `suffix` is added to the queue's
 * logical name (`kiln-base` + suffix) and `link` to its SST component name (`KilnBase` + link).
 */
export const STAGE_LANES = {
  interactive: { suffix: "", link: "" },
  // Batch lanes (`kiln-base-batch`, …): workers take batch work only when the interactive queues are empty.
  batch: { suffix: "-batch", link: "Batch" },
} as const satisfies Record<string, { suffix: string; link: string }>;
export type StageLane = keyof typeof STAGE_LANES;
export const DEFAULT_STAGE_LANE: StageLane = "interactive";
/** Every lane, most preferred first. */
export const LANES: readonly StageLane[] = Object.keys(STAGE_LANES) as StageLane[];
/** The lane names the batch code uses (`"interactive" | "batch"`). */
export type Lane = StageLane;

/**
 * Queues of work that leaves Kiln: webhooks and chat replies, both carried by the outbound dispatcher
 * (packages/api/src/outbound/dispatcher.ts) with their own delivery handler.
 */
export const OUTBOUND_QUEUES = {
  webhooks: { name: "kiln-webhooks", link: "KilnWebhook" },
  chat: { name: "kiln-chat", link: "KilnChat" },
} as const satisfies Record<string, { name: string; link: string }>;
export type OutboundQueue = keyof typeof OUTBOUND_QUEUES;

export const WEBHOOK_QUEUE = OUTBOUND_QUEUES.webhooks.name;
export const CHAT_QUEUE = OUTBOUND_QUEUES.chat.name;

/**
 * Batch warm-up: queues that no worker reads, whose visible messages the fleet's autoscaling
 * counts with the stage queues, so a scheduled run's warm-up starts workers before its burst
 * (packages/api/src/batches/warmup.ts; docs/batches.md).
 */
export const SIGNAL_QUEUES = {
  warmup: { name: "kiln-batch-warmup", link: "KilnBatchWarmup" },
} as const satisfies Record<string, { name: string; link: string }>;
export type SignalQueue = keyof typeof SIGNAL_QUEUES;
export const WARMUP_QUEUE = SIGNAL_QUEUES.warmup.name;

export interface QueueDefinition {
  /** Logical name: what code, KILN_QUEUE_URLS and GetQueueUrl (after KILN_QUEUE_PREFIX) use. */
  name: string;
  /** SST component stem: infra/ creates `${link}Queue` and `${link}Dlq`, which are also the link names. */
  link: string;
  /** What the queue carries. */
  carries: { stage: StageKind; lane: StageLane } | { outbound: OutboundQueue } | { signal: SignalQueue };
}

const capitalise = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);

/**
 * The logical name of the queue carrying stages of `kind` in `lane`; with `route` (a resolution
 * bucket id such as `1024x1024`, KILN_BUCKET_ROUTING=lanes), the bucket's own queue: `kiln-base-1024x1024`.
 */
export function queueForStage(kind: StageKind, lane: StageLane = DEFAULT_STAGE_LANE, route?: string): string {
  return `kiln-${kind}${STAGE_LANES[lane].suffix}${route ? `-${route}` : ""}`;
}

/**
 * Resolution buckets, `lanes` routing: the bucket queues of `routes` beside the shared ones (which
 * keep carrying unbucketed sizes). Not in QUEUES: which exist depends on KILN_BUCKETS, so infra/
 * and the AWS stand-in tests create them from this list.
 */
export function bucketQueueDefinitions(routes: readonly string[]): QueueDefinition[] {
  return (Object.entries(STAGE_LANES) as [StageLane, (typeof STAGE_LANES)[StageLane]][]).flatMap(([lane, l]) =>
    routes.flatMap((route) =>
      STAGE_KINDS.map((kind): QueueDefinition => ({
        name: queueForStage(kind, lane, route),
        link: `Kiln${capitalise(kind)}${l.link}B${route}`,
        carries: { stage: kind, lane },
      })),
    ),
  );
}

/** Every stage queue a worker serving `kinds` reads, most preferred lane first. */
export function stageQueues(kinds: readonly StageKind[] = STAGE_KINDS): string[] {
  return LANES.flatMap((lane) => kinds.map((kind) => queueForStage(kind, lane)));
}

/** Every queue, stage queues first (by lane, then kind), then the outbound ones. */
export const QUEUES: readonly QueueDefinition[] = [
  ...(Object.entries(STAGE_LANES) as [StageLane, (typeof STAGE_LANES)[StageLane]][]).flatMap(([lane, l]) =>
    STAGE_KINDS.map((kind): QueueDefinition => ({
      name: queueForStage(kind, lane),
      link: `Kiln${capitalise(kind)}${l.link}`,
      carries: { stage: kind, lane },
    })),
  ),
  ...(Object.entries(OUTBOUND_QUEUES) as [OutboundQueue, (typeof OUTBOUND_QUEUES)[OutboundQueue]][]).map(
    ([outbound, q]): QueueDefinition => ({ name: q.name, link: q.link, carries: { outbound } }),
  ),
  // Batch warm-up: signal queues come last, so earlier queues keep their places.
  ...(Object.entries(SIGNAL_QUEUES) as [SignalQueue, (typeof SIGNAL_QUEUES)[SignalQueue]][]).map(
    ([signal, q]): QueueDefinition => ({ name: q.name, link: q.link, carries: { signal } }),
  ),
];

/** Logical names of every queue and its dead-letter queue (`kiln-base`, `kiln-base-dlq`, …). */
export function allQueueNames(): string[] {
  return QUEUES.flatMap((q) => [q.name, deadLetterQueueOf(q.name)]);
}

/** SST link name of every queue and dead-letter queue, by logical name. */
export function queueLinkNames(): Record<string, string> {
  return Object.fromEntries(
    QUEUES.flatMap((q) => [
      [q.name, `${q.link}Queue`],
      [deadLetterQueueOf(q.name), `${q.link}Dlq`],
    ]),
  );
}
