import { describeError, isTerminal, type JobRecord, type Ports, type QueueMessage } from "@kiln/shared";

import { CHAT_QUEUE, type ChatDelivery, isChatDelivery } from "./deliveries.js";
import { RetryLater } from "./platform-fetch.js";
import type { ChatImage, ChatPresenter } from "./presenter.js";

type Log = (level: "info" | "warn" | "error", obj: Record<string, unknown>, msg: string) => void;

export interface ChatDispatcherOptions {
  ports: Ports;
  presenters: Partial<Record<"discord" | "slack", ChatPresenter>>;
  /** Signed image URLs in messages stay valid this long. */
  downloadUrlSeconds: number;
  log: Log;
  /** Give up on one follow-up after this many attempts. */
  maxAttempts?: number;
  batch?: number;
  pollWaitSeconds?: number;
  now?: () => number;
}

/** The largest delay one queue hop carries (SQS's bound; the local queue keeps it too). */
const MAX_HOP_SECONDS = 900;

/**
 * Sends chat follow-ups from the chat queue: receive → re-read the job → present → ack, or on a
 * platform's "later" re-send the delivery delayed and ack the old one. Web-standard (Queue,
 * JobStore, fetch), so it runs in the Node process beside the webhook dispatcher, and its
 * `handle` can serve one SQS record in a Lambda. Deliveries of one job are handled in order
 * within a process, so a late progress edit cannot overwrite the result.
 */
export class ChatDispatcher {
  private readonly abort = new AbortController();
  private loop?: Promise<void>;
  private readonly perJob = new Map<string, Promise<void>>();
  private readonly now: () => number;

  constructor(private readonly options: ChatDispatcherOptions) {
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  private async run(): Promise<void> {
    const { ports, log } = this.options;
    while (!this.abort.signal.aborted) {
      let messages: QueueMessage<ChatDelivery>[];
      try {
        messages = await ports.queue.receive<ChatDelivery>(CHAT_QUEUE, {
          max: this.options.batch ?? 10,
          visibilitySeconds: 120,
          waitSeconds: this.options.pollWaitSeconds ?? 10,
          signal: this.abort.signal,
        });
      } catch (e) {
        if (this.abort.signal.aborted) break;
        log("warn", { err: describeError(e) }, "chat queue receive failed; backing off");
        await new Promise((resolve) => setTimeout(resolve, 1000));
        continue;
      }
      await Promise.all(messages.map((m) => this.inOrder(m)));
    }
  }

  private inOrder(message: QueueMessage<ChatDelivery>): Promise<void> {
    const jobId = isChatDelivery(message.body) ? message.body.jobId : message.id;
    const previous = this.perJob.get(jobId) ?? Promise.resolve();
    const next = previous
      .then(() => this.handle(message))
      .catch((e) =>
        this.options.log(
          "error",
          { err: describeError(e), messageId: message.id, jobId },
          "chat follow-up failed; the message will be redelivered",
        ),
      )
      .finally(() => {
        if (this.perJob.get(jobId) === next) this.perJob.delete(jobId);
      });
    this.perJob.set(jobId, next);
    return next;
  }

  /** Handles one received delivery and acknowledges it (or leaves it for redelivery by throwing). */
  async handle(message: QueueMessage<ChatDelivery>): Promise<void> {
    const { ports, log } = this.options;
    const ack = () => ports.queue.ack(CHAT_QUEUE, message.receipt);
    const delivery = message.body;
    if (!isChatDelivery(delivery)) {
      log("error", { messageId: message.id }, "chat follow-up message is unreadable; dropping it");
      return ack();
    }
    const now = this.now();
    if (delivery.notBefore !== undefined && delivery.notBefore > now)
      return this.resend(message, delivery, delivery.notBefore - now);
    const job = await ports.jobs.get(delivery.jobId);
    if (!job?.chat) return ack();
    const context = { jobId: job.id, platform: job.chat.platform, kind: delivery.kind, attempt: delivery.attempt };
    const presenter = this.options.presenters[job.chat.platform];
    if (!presenter) {
      log("warn", context, "the job's chat platform is not configured here; dropping its follow-up");
      return ack();
    }
    try {
      await this.present(presenter, delivery, job);
    } catch (e) {
      if (!(e instanceof RetryLater)) {
        log("warn", { ...context, err: describeError(e) }, "chat follow-up refused by the platform; dropping it");
        return ack();
      }
      if (delivery.attempt >= (this.options.maxAttempts ?? 8)) {
        log("error", { ...context, reason: e.message }, "chat follow-up failed on every attempt; giving up");
        return ack();
      }
      log("warn", { ...context, reason: e.message, retryInMs: e.delayMs }, "chat platform asked to retry later");
      return this.resend(
        message,
        { ...delivery, attempt: delivery.attempt + 1, notBefore: now + e.delayMs },
        e.delayMs,
      );
    }
    return ack();
  }

  private async present(presenter: ChatPresenter, delivery: ChatDelivery, job: JobRecord): Promise<void> {
    const ended = isTerminal(job.status);
    switch (delivery.kind) {
      case "queued":
        if (ended) return; // its own "ended" delivery shows the outcome
        return presenter.queued(
          job,
          job.status === "queued" ? (await this.options.ports.jobs.countQueuedBefore(job)) + 1 : 0,
        );
      case "progress":
        if (ended) return;
        return presenter.progress(job);
      case "expiring":
        if (ended) return;
        return presenter.expiring(job);
      case "ended":
        if (!ended) return;
        return this.deliverOnce(job, presenter);
    }
  }

  /**
   * The worker reports an end at least once; a counter set after a successful delivery keeps a
   * repeat from posting the images twice (a crash between the post and the counter can still).
   */
  private async deliverOnce(job: JobRecord, presenter: ChatPresenter): Promise<void> {
    const { keys } = this.options.ports;
    const name = `chat:ended:${job.id}`;
    const expiresAt = Math.floor(this.now() / 1000) + 3 * 86_400;
    if ((await keys.incrementCounter(name, 0, expiresAt)) > 0) return;
    const images = job.status === "succeeded" ? await this.loadImages(job) : [];
    await presenter.ended(job, images);
    await keys.incrementCounter(name, 1, expiresAt);
    this.options.log(
      "info",
      { jobId: job.id, platform: job.chat?.platform, status: job.status },
      "chat result delivered",
    );
  }

  private async loadImages(job: JobRecord): Promise<ChatImage[]> {
    const { blobs } = this.options.ports;
    return Promise.all(
      job.images.map(async (img) => {
        const bytes = await blobs.get(img.key);
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
          url: await blobs.downloadUrl(img.key, { expiresSeconds: this.options.downloadUrlSeconds, filename }),
        };
      }),
    );
  }

  /** Send first, then acknowledge: a crash in between repeats a follow-up rather than losing it. */
  private async resend(message: QueueMessage<ChatDelivery>, delivery: ChatDelivery, delayMs: number): Promise<void> {
    const delaySeconds = Math.min(MAX_HOP_SECONDS, Math.max(0, Math.ceil(delayMs / 1000)));
    await this.options.ports.queue.send(CHAT_QUEUE, delivery, { delaySeconds });
    await this.options.ports.queue.ack(CHAT_QUEUE, message.receipt);
  }
}
