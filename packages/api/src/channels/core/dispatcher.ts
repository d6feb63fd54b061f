import { describeError, isTerminal, type JobRecord, type Ports } from "@kiln/shared";

import { type DeliveryHandler, OutboundDispatcher, type OutboundLogger } from "../../outbound/dispatcher.js";
import { CHAT_QUEUE, type ChatDelivery, isChatDelivery } from "./deliveries.js";
import { RetryLater } from "./platform-fetch.js";
import type { ChatImage, ChatPresenter } from "./presenter.js";

export interface ChatDeliveryOptions {
  ports: Ports;
  presenters: Partial<Record<"discord" | "slack", ChatPresenter>>;
  /** Signed image URLs in messages stay valid this long. */
  downloadUrlSeconds: number;
  /** Give up on one follow-up after this many attempts. */
  maxAttempts?: number;
  now?: () => number;
}

export interface ChatDispatcherOptions extends ChatDeliveryOptions {
  logger: OutboundLogger;
  batch?: number;
  pollWaitSeconds?: number;
}

/** One follow-up's whole exchange with a platform (an upload of up to 4 images included) stays under this. */
const CHAT_ATTEMPT_TIMEOUT_MS = 90_000;

/**
 * Sends chat follow-ups from the chat queue on the outbound dispatcher (the same receive → attempt → re-send
 * delayed → ack loop as webhooks): re-read the job, present it, and on a platform's "later" (429, 5xx past the
 * client's quick retries) ride the queue again. A job's deliveries are handled in order within a process, so a
 * late progress edit cannot overwrite the result. Web-standard (Queue, JobStore, fetch): it runs in the Node
 * process beside the webhook dispatcher, and its `handle` serves one SQS record in a Lambda.
 */
export function chatDispatcher(options: ChatDispatcherOptions): OutboundDispatcher<ChatDelivery> {
  return new OutboundDispatcher(chatDeliveryHandler(options), {
    queue: options.ports.queue,
    logger: options.logger,
    attemptTimeoutMs: CHAT_ATTEMPT_TIMEOUT_MS,
    batch: options.batch,
    pollWaitSeconds: options.pollWaitSeconds,
    now: options.now,
  });
}

/** What one chat follow-up attempt is, for the outbound dispatcher. */
export function chatDeliveryHandler(options: ChatDeliveryOptions): DeliveryHandler<ChatDelivery> {
  const now = options.now ?? Date.now;
  const { ports } = options;
  return {
    queue: CHAT_QUEUE,
    name: "chat follow-up",
    parse: (body) => (isChatDelivery(body) ? body : undefined),
    describe: (d) => ({ jobId: d.jobId, kind: d.kind, attempt: d.attempt }),
    notBefore: (d) => d.notBefore,
    orderKey: (d) => d.jobId,
    async attempt(delivery, { log, now: at }) {
      const job = await ports.jobs.get(delivery.jobId);
      if (!job?.chat) return { kind: "give-up", reason: "job_gone" };
      const presenter = options.presenters[job.chat.platform];
      if (!presenter) {
        log.warn(
          { platform: job.chat.platform },
          "the job's chat platform is not configured here; dropping its follow-up",
        );
        return { kind: "give-up", reason: "platform_not_configured" };
      }
      try {
        if (await present(presenter, delivery, job))
          log.info({ platform: job.chat.platform, status: job.status }, "chat result delivered");
        return { kind: "delivered" };
      } catch (e) {
        if (!(e instanceof RetryLater)) {
          log.warn({ err: describeError(e) }, "chat follow-up refused by the platform; dropping it");
          return { kind: "give-up", reason: "refused" };
        }
        if (delivery.attempt >= (options.maxAttempts ?? 8)) {
          log.error({ reason: e.message }, "chat follow-up failed on every attempt; giving up");
          return { kind: "give-up", reason: "out_of_attempts" };
        }
        log.warn({ reason: e.message, retryInMs: e.delayMs }, "chat platform asked to retry later");
        return {
          kind: "retry-after",
          ms: e.delayMs,
          next: { ...delivery, attempt: delivery.attempt + 1, notBefore: at + e.delayMs },
        };
      }
    },
  };

  /** Shows the delivery on the platform; true when it posted a job's result. */
  async function present(presenter: ChatPresenter, delivery: ChatDelivery, job: JobRecord): Promise<boolean> {
    const ended = isTerminal(job.status);
    switch (delivery.kind) {
      case "queued":
        // Once ended, its own "ended" delivery shows the outcome.
        if (!ended)
          await presenter.queued(job, job.status === "queued" ? (await ports.jobs.countQueuedBefore(job)) + 1 : 0);
        return false;
      case "progress":
        if (!ended) await presenter.progress(job);
        return false;
      case "expiring":
        if (!ended) await presenter.expiring(job);
        return false;
      case "ended":
        return ended && deliverOnce(job, presenter);
    }
  }

  /**
   * The worker reports an end at least once; a counter set after a successful delivery keeps a
   * repeat from posting the images twice (a crash between the post and the counter can still).
   */
  async function deliverOnce(job: JobRecord, presenter: ChatPresenter): Promise<boolean> {
    const name = `chat:ended:${job.id}`;
    const expiresAt = Math.floor(now() / 1000) + 3 * 86_400;
    if ((await ports.keys.incrementCounter(name, 0, expiresAt)) > 0) return false;
    const images = job.status === "succeeded" ? await loadImages(job) : [];
    await presenter.ended(job, images);
    await ports.keys.incrementCounter(name, 1, expiresAt);
    return true;
  }

  async function loadImages(job: JobRecord): Promise<ChatImage[]> {
    return Promise.all(
      job.images.map(async (img) => {
        const bytes = await ports.blobs.get(img.key);
        if (!bytes) throw new Error(`output ${img.key} of ${job.id} is missing from the blob store`);
        const ext = img.format === "jpeg" ? "jpg" : img.format;
        const filename = `${job.id}-${img.index}.${ext}`;
        return {
          index: img.index,
          filename,
          contentType: `image/${img.format}`,
          width: img.width,
          height: img.height,
          bytes,
          url: await ports.blobs.downloadUrl(img.key, { expiresSeconds: options.downloadUrlSeconds, filename }),
        };
      }),
    );
  }
}
