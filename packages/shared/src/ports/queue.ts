/**
 * The Queue port: at-least-once delivery with visibility timeouts, long polling and a
 * dead-letter queue after `maxReceives` receives. Local family: SQLite. AWS family: SQS.
 *
 * Kiln keeps one queue per stage kind (`base`, `refine`) so worker pools can specialise, and one
 * per outbound channel; each has a dead-letter queue named `<name>-dlq`. The names are listed in
 * queues/registry.ts.
 */
export type QueueName = string;

export interface QueueMessage<T = unknown> {
  /** Stable id of the message across redeliveries. */
  id: string;
  /** Handle for this delivery only; ack/extend/release need it. */
  receipt: string;
  body: T;
  /** How many times the message has been received, this delivery included (1 on first). */
  receiveCount: number;
  /** Epoch ms at which the message was first sent. */
  sentAt: number;
  /** String attributes carried beside the body (trace context). */
  attributes: Record<string, string>;
}

export interface ReceiveOptions {
  /** At most this many messages (1–10). */
  max?: number;
  /** Seconds the received messages stay invisible to other consumers. */
  visibilitySeconds: number;
  /** Long-poll: wait up to this many seconds for a message (0 = return at once). */
  waitSeconds?: number;
  /** Aborts a long poll early (drain on SIGTERM); the receive then resolves with no messages. */
  signal?: AbortSignal;
}

export interface SendOptions {
  delaySeconds?: number;
  attributes?: Record<string, string>;
}

export interface QueueDepth {
  /** Messages waiting to be received. */
  visible: number;
  /** Messages received and not yet acknowledged. */
  inFlight: number;
  /** Messages delayed. */
  delayed: number;
}

export interface Queue {
  send(queue: QueueName, body: unknown, options?: SendOptions): Promise<string>;
  receive<T = unknown>(queue: QueueName, options: ReceiveOptions): Promise<QueueMessage<T>[]>;
  /** Keep a received message invisible for `visibilitySeconds` more from now (heartbeat). */
  extend(queue: QueueName, receipt: string, visibilitySeconds: number): Promise<void>;
  /** Delete a received message: the work is done. */
  ack(queue: QueueName, receipt: string): Promise<void>;
  /** Make a received message visible again after `delaySeconds` (0 = at once). */
  release(queue: QueueName, receipt: string, delaySeconds?: number): Promise<void>;
  depth(queue: QueueName): Promise<QueueDepth>;
  /** Move every message of `<queue>-dlq` back to `queue` with a fresh receive count; returns how many. */
  redrive(queue: QueueName, options?: { max?: number }): Promise<number>;
  /** Peek at dead letters without consuming them (for `kiln dlq list`). */
  peekDeadLetters<T = unknown>(queue: QueueName, options?: { max?: number }): Promise<QueueMessage<T>[]>;
  close?(): Promise<void>;
}

export const deadLetterQueueOf = (queue: QueueName): QueueName => `${queue}-dlq`;
