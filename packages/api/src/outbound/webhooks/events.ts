import {
  type BlobStore,
  isTerminal,
  type JobEvent,
  type JobEventSink,
  type JobEventType,
  type Queue,
  WEBHOOK_QUEUE,
} from "@kiln/shared";

import { jobView } from "../../renders/render-view.js";

/** What a job's webhook receives when it lists no events: everything but step progress. */
export const DEFAULT_WEBHOOK_EVENTS: readonly JobEventType[] = [
  "started",
  "succeeded",
  "failed",
  "canceled",
  "expired",
];

/** One webhook message on its way: the body is fixed at the event, so every attempt sends the same bytes. */
export interface WebhookDelivery {
  v: 1;
  /** `webhook-id`: the same on every attempt, so receivers can drop duplicates. */
  id: string;
  /** Whose secret signs it. */
  keyId: string;
  jobId: string;
  url: string;
  event: JobEventType;
  body: string;
  /** Epoch ms of the first attempt's schedule: retries stop a retry window after it. */
  firstAttemptAt: number;
  /** 1 for the first attempt. */
  attempt: number;
  /** Epoch ms before which the attempt must not be made (queue delays are capped at 900 s a hop). */
  notBefore?: number;
}

export interface WebhookSinkOptions {
  queue: Queue;
  blobs: BlobStore;
  /** Base of `links` in the payload. */
  publicUrl: string;
  /** Image URLs in the payload stay valid this long after the event. */
  downloadUrlSeconds: number;
  /** At most one `progress` delivery per job this often. */
  progressIntervalMs?: number;
  now?: () => number;
  log?: (level: "warn", obj: Record<string, unknown>, msg: string) => void;
}

const SEND_ATTEMPTS = 3;
/** Jobs whose last progress delivery is remembered; beyond this the oldest are forgotten. */
const MAX_TRACKED_JOBS = 10_000;

/**
 * A JobEventSink that enqueues a signed-later delivery for each event a job's webhook asked for.
 * Web-standard (Queue and BlobStore only), so workers and the API can both emit; delivery is the
 * dispatcher's job. The payload follows Standard Webhooks' `{type, timestamp, data}` shape with
 * the render as `GET /v1/renders/{id}` shows it.
 */
export function webhookEventSink(options: WebhookSinkOptions): JobEventSink {
  const now = options.now ?? Date.now;
  const lastProgress = new Map<string, number>();
  const progressEvery = options.progressIntervalMs ?? 2_000;

  function throttled(event: JobEvent): boolean {
    const id = event.job.id;
    if (event.type !== "progress") {
      if (isTerminal(event.job.status)) lastProgress.delete(id);
      return false;
    }
    const last = lastProgress.get(id);
    const at = now();
    if (last !== undefined && at - last < progressEvery) return true;
    lastProgress.delete(id);
    lastProgress.set(id, at);
    if (lastProgress.size > MAX_TRACKED_JOBS) lastProgress.delete(lastProgress.keys().next().value!);
    return false;
  }

  return async (event) => {
    const target = event.job.webhook;
    if (!target) return;
    if (!(target.events ?? DEFAULT_WEBHOOK_EVENTS).includes(event.type) || throttled(event)) return;
    const data = await jobView(event.job, {
      blobs: options.blobs,
      base: options.publicUrl.replace(/\/+$/, ""),
      urlSeconds: options.downloadUrlSeconds,
    });
    const delivery: WebhookDelivery = {
      v: 1,
      // Derived from the event, not random: the worker reports transitions at least once (again after a
      // crash between storing and acknowledging), and receivers drop repeats by webhook-id.
      id: webhookIdFor(event),
      keyId: event.job.ownerKeyId,
      jobId: event.job.id,
      url: target.url,
      event: event.type,
      body: JSON.stringify({ type: `render.${event.type}`, timestamp: event.at, data }),
      firstAttemptAt: now(),
      attempt: 1,
    };
    for (let attempt = 1; ; attempt++) {
      try {
        await options.queue.send(WEBHOOK_QUEUE, delivery);
        return;
      } catch (e) {
        // The event stays due on the job (event outbox) and is told again by the next delivery or the sweep.
        if (attempt >= SEND_ATTEMPTS) throw e;
        await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
      }
    }
  };
}

/** `msg_<job>_<event>`, plus `_<stage>_<step>` for progress: one id per event, stable across emissions and retries. */
export function webhookIdFor(event: JobEvent): string {
  const job = event.job.id.replace(/^job_/, "");
  const progress =
    event.type === "progress" && event.job.progress ? `_${event.job.progress.stage}_${event.job.progress.step}` : "";
  return `msg_${job}_${event.type}${progress}`;
}
