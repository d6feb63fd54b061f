/**
 * Carries work that leaves Kiln (webhooks and chat follow-ups) through a queue: receive →
 * attempt → resend with backoff → ack. A delivery handler says what one attempt is; this loop owns
 * durability, so every outbound channel gets it the same way.
 *
 * Durability comes from the queue: an attempt that fails is re-sent as a new delayed message before
 * the old one is acknowledged, so a crash at any point at worst repeats an attempt, and any
 * dispatcher on the same queue carries on. Re-sending rather than releasing keeps the queue's
 * receive count (and its dead-letter threshold) for crashes, not for receivers that are down.
 * Web-standard only (the API core may import it); transports that need sockets live in entry/.
 */
import { describeError, type Queue, type QueueMessage } from "@kiln/shared";

/** What one attempt came to. */
export type AttemptOutcome<T> =
  /** Done: the message is acknowledged. */
  | { kind: "delivered" }
  /** Try again in `ms` with `next` (the same message, its attempt count moved on). */
  | { kind: "retry-after"; ms: number; next: T }
  /** Never deliverable (refused, expired, out of retries): the message is acknowledged and dropped. */
  | { kind: "give-up"; reason: string };

/** The structured logger the dispatcher and handlers write to (pino's shape). */
export interface OutboundLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  child(bindings: Record<string, unknown>): OutboundLogger;
}

/** One outbound channel: its queue, how to read a message, and what one attempt is. */
export interface DeliveryHandler<T> {
  /** The queue it reads, from the registry (`OUTBOUND_QUEUES`). */
  queue: string;
  /** Noun for logs ("webhook", "chat reply"). */
  name: string;
  /** The message, or undefined when the body is unreadable (it is dropped with an error log). */
  parse(body: unknown): T | undefined;
  /** Log fields naming the message (job id, attempt, …). */
  describe(message: T): Record<string, unknown>;
  /**
   * Epoch ms before which the message must not be attempted: a wait longer than one queue hop
   * (`MAX_HOP_SECONDS`) rides the queue again until then.
   */
  notBefore?(message: T): number | undefined;
  attempt(message: T, context: { log: OutboundLogger; now: number }): Promise<AttemptOutcome<T>>;
  /**
   * Messages with the same key are handled one after another within a process, in the order received (a
   * job's chat follow-ups, so a late progress edit cannot overwrite its result). Unkeyed messages run in parallel.
   */
  orderKey?(message: T): string | undefined;
}

export interface OutboundDispatcherOptions {
  queue: Queue;
  logger: OutboundLogger;
  /** How long one attempt may take at most; a message stays invisible for this plus a margin. */
  attemptTimeoutMs: number;
  /** Messages received per poll, attempted in parallel. */
  batch?: number;
  pollWaitSeconds?: number;
  now?: () => number;
}

/** The largest delay one queue hop can carry (SQS's limit; the local queue keeps the same bound). */
export const MAX_HOP_SECONDS = 900;
export const DEFAULT_BACKOFF_MAX_SECONDS = 3600;

/** Seconds to wait after `failures` failed attempts: base · 2^(failures−1), capped, whole seconds. */
export function backoffSeconds(
  failures: number,
  baseSeconds: number,
  maxSeconds = DEFAULT_BACKOFF_MAX_SECONDS,
): number {
  const delay = Math.min(maxSeconds, baseSeconds * 2 ** Math.max(0, failures - 1));
  // A tenth of jitter on the longer waits spreads receivers' recoveries; short waits stay exact.
  return Math.ceil(delay >= 10 ? delay + Math.random() * (delay / 10) : delay);
}

export class OutboundDispatcher<T> {
  private readonly abort = new AbortController();
  private loop?: Promise<void>;
  private readonly now: () => number;
  private readonly inOrder = new Map<string, Promise<void>>();

  constructor(
    private readonly handler: DeliveryHandler<T>,
    private readonly options: OutboundDispatcherOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops polling and waits for the attempts in progress (each bounded by the attempt timeout). */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  private async run(): Promise<void> {
    const { queue, logger } = this.options;
    const { name } = this.handler;
    const visibilitySeconds = Math.ceil(this.options.attemptTimeoutMs / 1000) + 30;
    while (!this.abort.signal.aborted) {
      let messages: QueueMessage[];
      try {
        messages = await queue.receive(this.handler.queue, {
          max: this.options.batch ?? 10,
          visibilitySeconds,
          waitSeconds: this.options.pollWaitSeconds ?? 10,
          signal: this.abort.signal,
        });
      } catch (e) {
        if (this.abort.signal.aborted) break;
        logger.warn({ err: describeError(e) }, `${name} queue receive failed; backing off`);
        await new Promise((resolve) => setTimeout(resolve, 1000));
        continue;
      }
      await Promise.all(
        messages.map((m) =>
          this.inTurn(m).catch((e) =>
            logger.error(
              { err: describeError(e), messageId: m.id },
              `${name} handling failed; the message will be redelivered`,
            ),
          ),
        ),
      );
    }
  }

  /** Runs `handle` after the messages received before with the same order key. */
  private inTurn(received: QueueMessage): Promise<void> {
    const message = this.handler.parse(received.body);
    const key = message === undefined ? undefined : this.handler.orderKey?.(message);
    if (key === undefined) return this.handle(received);
    const next = (this.inOrder.get(key) ?? Promise.resolve())
      .catch(() => undefined)
      .then(() => this.handle(received))
      .finally(() => {
        if (this.inOrder.get(key) === next) this.inOrder.delete(key);
      });
    this.inOrder.set(key, next);
    return next;
  }

  /**
   * Handles one received message to its end: acknowledged, or re-sent delayed and acknowledged. Throws when it
   * could do neither (the message comes back after its visibility timeout). Public so a queue-triggered function
   * (one SQS record in a Lambda) runs the same code as the polling loop.
   */
  async handle(received: QueueMessage): Promise<void> {
    const ack = () => this.options.queue.ack(this.handler.queue, received.receipt);
    const message = this.handler.parse(received.body);
    if (message === undefined) {
      this.options.logger.error({ messageId: received.id }, `${this.handler.name} message is unreadable; dropping it`);
      return ack();
    }
    const now = this.now();
    const notBefore = this.handler.notBefore?.(message);
    if (notBefore !== undefined && notBefore > now) {
      // A backoff longer than one hop: ride the queue again.
      return this.resend(received, message, notBefore - now);
    }
    const log = this.options.logger.child(this.handler.describe(message));
    const outcome = await this.handler.attempt(message, { log, now });
    if (outcome.kind === "retry-after") return this.resend(received, outcome.next, outcome.ms);
    return ack();
  }

  /** Send first, then acknowledge: a crash in between repeats an attempt rather than losing it. */
  private async resend(received: QueueMessage, message: T, delayMs: number): Promise<void> {
    const delaySeconds = Math.min(MAX_HOP_SECONDS, Math.max(0, Math.ceil(delayMs / 1000)));
    await this.options.queue.send(this.handler.queue, message, { delaySeconds });
    await this.options.queue.ack(this.handler.queue, received.receipt);
  }
}
