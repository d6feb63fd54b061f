/**
 * Queue on SQS: one standard queue per logical name (`kiln-base`, …) and its dead-letter queue
 * (`kiln-base-dlq`). Dead-lettering after `maxReceives` is SQS's own RedrivePolicy, set where the
 * queues are created (SST in production, `ensureQueues` for tests and dev).
 */
import {
  ChangeMessageVisibilityCommand,
  CreateQueueCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  type Message,
  type MessageAttributeValue,
  ReceiveMessageCommand,
  SendMessageCommand,
  SetQueueAttributesCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";

import { KilnError } from "../../errors.js";
import {
  deadLetterQueueOf,
  type Queue,
  type QueueDepth,
  type QueueMessage,
  type QueueName,
  type ReceiveOptions,
  type SendOptions,
} from "../../ports/queue.js";
import {
  checkCount,
  checkSeconds,
  MAX_BATCH,
  MAX_DELAY_SECONDS,
  MAX_MESSAGE_BYTES,
  MAX_VISIBILITY_SECONDS,
  MAX_WAIT_SECONDS as MAX_POLL_SECONDS,
} from "../../ports/queue-limits.js";

/** Visibility while a redrive holds a dead letter between its send and its delete. */
const REDRIVE_VISIBILITY_SECONDS = 30;
/** Dead letters are kept for SQS's maximum, 14 days, so an operator has time to look. */
const DLQ_RETENTION_SECONDS = 14 * 24 * 3600;

/**
 * A redriven message is a new SQS message with a new MessageId and SentTimestamp. These attributes
 * carry the originals across, so the port's "stable id" and "first sent" hold through redrive.
 */
const ORIGIN_ID_ATTRIBUTE = "kiln.origin.id";
const ORIGIN_SENT_AT_ATTRIBUTE = "kiln.origin.sentAt";

/** Maps logical queue names to queue URLs: explicit URLs from config, else `GetQueueUrl(prefix + name)`, cached. */
export class QueueUrlResolver {
  private readonly cache = new Map<QueueName, Promise<string>>();

  constructor(
    private readonly sqs: SQSClient,
    private readonly options: { prefix?: string; urls?: Record<QueueName, string> } = {},
  ) {}

  physicalName(name: QueueName): string {
    return `${this.options.prefix ?? ""}${name}`;
  }

  urlOf(name: QueueName): Promise<string> {
    const explicit = this.options.urls?.[name];
    if (explicit) return Promise.resolve(explicit);
    let url = this.cache.get(name);
    if (!url) {
      const physical = this.physicalName(name);
      url = this.sqs.send(new GetQueueUrlCommand({ QueueName: physical })).then(
        ({ QueueUrl }) => QueueUrl ?? Promise.reject(new Error(`GetQueueUrl returned no URL for "${physical}"`)),
        (e: unknown) => {
          // Forget failures: the queue may be created in a moment (deploy, ensureQueues).
          this.cache.delete(name);
          if ((e as { name?: string }).name?.includes("QueueDoesNotExist")) {
            throw new KilnError(
              "queue_not_found",
              `SQS queue "${physical}" does not exist. Deploy the stack (SST creates the queues), or set the queue URLs in the config.`,
              { status: 503, retryable: true, cause: e },
            );
          }
          throw e;
        },
      );
      this.cache.set(name, url);
    }
    return url;
  }
}

export class SqsQueue implements Queue {
  constructor(
    private readonly sqs: SQSClient,
    private readonly urls: QueueUrlResolver,
  ) {}

  async send(queue: QueueName, body: unknown, options: SendOptions = {}): Promise<string> {
    const delaySeconds = options.delaySeconds ?? 0;
    checkSeconds("delaySeconds", delaySeconds, MAX_DELAY_SECONDS);
    const text = JSON.stringify(body) as string | undefined;
    if (text === undefined) {
      throw new KilnError(
        "queue_body_invalid",
        "A queue message body must be JSON-serialisable (got undefined or a function).",
      );
    }
    const attributes = options.attributes ?? {};
    if (utf8Bytes(text) + utf8Bytes(JSON.stringify(attributes)) > MAX_MESSAGE_BYTES) {
      throw new KilnError(
        "queue_message_too_large",
        `A queue message may hold at most ${MAX_MESSAGE_BYTES} bytes (the SQS limit); put large data in the blob store and send its key.`,
      );
    }
    return this.sendRaw(await this.urls.urlOf(queue), text, attributes, delaySeconds);
  }

  private async sendRaw(
    url: string,
    body: string,
    attributes: Record<string, string>,
    delaySeconds?: number,
  ): Promise<string> {
    const messageAttributes: Record<string, MessageAttributeValue> = {};
    for (const [name, value] of Object.entries(attributes)) {
      // SQS rejects empty attribute values; an empty trace header carries nothing anyway.
      if (value !== "") messageAttributes[name] = { DataType: "String", StringValue: value };
    }
    const { MessageId } = await this.sqs.send(
      new SendMessageCommand({
        QueueUrl: url,
        MessageBody: body,
        MessageAttributes: Object.keys(messageAttributes).length ? messageAttributes : undefined,
        DelaySeconds: delaySeconds ? Math.ceil(delaySeconds) : undefined,
      }),
    );
    if (!MessageId)
      throw new KilnError(
        "queue_send_failed",
        `SQS accepted a message for ${url} but returned no id. Retry the send.`,
        { retryable: true },
      );
    return MessageId;
  }

  /**
   * Waits longer than 20 s are a loop of long polls. SQS counts whole seconds, so fractional
   * visibility and wait times round up: a lease is never shorter than asked for.
   */
  async receive<T = unknown>(queue: QueueName, options: ReceiveOptions): Promise<QueueMessage<T>[]> {
    const max = options.max ?? 1;
    if (!Number.isInteger(max) || max < 1 || max > MAX_BATCH) {
      throw new KilnError(
        "queue_receive_invalid",
        `receive takes max between 1 and ${MAX_BATCH} (got ${max}), as SQS does.`,
      );
    }
    checkSeconds("visibilitySeconds", options.visibilitySeconds, MAX_VISIBILITY_SECONDS);
    const waitSeconds = options.waitSeconds ?? 0;
    if (!Number.isFinite(waitSeconds) || waitSeconds < 0) {
      throw new KilnError("queue_argument_invalid", `waitSeconds must be 0 or more seconds (got ${waitSeconds}).`);
    }
    const url = await this.urls.urlOf(queue);
    const deadline = Date.now() + waitSeconds * 1000;
    const { signal } = options;
    do {
      if (signal?.aborted) return [];
      const pollSeconds = Math.min(MAX_POLL_SECONDS, Math.max(0, Math.ceil((deadline - Date.now()) / 1000)));
      const poll = this.receiveBatch(url, max, Math.ceil(options.visibilitySeconds), pollSeconds);
      const messages = signal ? await this.abandonOnAbort(url, poll, signal) : await poll;
      if (messages.length) return messages.map((m) => toQueueMessage<T>(m));
    } while (Date.now() < deadline);
    return [];
  }

  /**
   * Resolves with nothing as soon as `signal` aborts, but lets the poll itself run on. Aborting
   * the HTTP request (the SDK's abortSignal) does not cancel a long poll on SQS's side: the next
   * message goes out on the dead connection and stays invisible for the whole visibility timeout
   * (aws/aws-sdk-js#2350; fauxqs behaves the same). Letting the poll finish and releasing what it
   * brings costs one extra receive on those messages' ApproximateReceiveCount instead.
   */
  private abandonOnAbort(url: string, poll: Promise<Message[]>, signal: AbortSignal): Promise<Message[]> {
    return new Promise<Message[]>((resolve, reject) => {
      const onAbort = () => resolve([]);
      signal.addEventListener("abort", onAbort, { once: true });
      poll.then(
        (messages) => {
          signal.removeEventListener("abort", onAbort);
          if (!signal.aborted) return resolve(messages);
          for (const message of messages) {
            this.sqs
              .send(
                new ChangeMessageVisibilityCommand({
                  QueueUrl: url,
                  ReceiptHandle: message.ReceiptHandle,
                  VisibilityTimeout: 0,
                }),
              )
              // Client closed meanwhile: the message reappears after its visibility timeout.
              .catch(() => undefined);
          }
        },
        (e: unknown) => {
          signal.removeEventListener("abort", onAbort);
          if (!signal.aborted) reject(e);
        },
      );
    });
  }

  private async receiveBatch(
    url: string,
    max: number,
    visibilitySeconds: number,
    waitSeconds: number,
  ): Promise<Message[]> {
    const { Messages } = await this.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: max,
        VisibilityTimeout: visibilitySeconds,
        WaitTimeSeconds: waitSeconds,
        MessageAttributeNames: ["All"],
        MessageSystemAttributeNames: ["ApproximateReceiveCount", "SentTimestamp"],
      }),
    );
    return Messages ?? [];
  }

  /*
   * A receipt names one delivery. SQS rejects a receipt whose delivery has ended (released,
   * received again, deleted) with MessageNotInflight or ReceiptHandleIsInvalid; like the local
   * family, that is a no-op: a worker that lost its lease neither prolongs nor deletes the
   * delivery another worker now holds.
   */

  async extend(queue: QueueName, receipt: string, visibilitySeconds: number): Promise<void> {
    checkSeconds("visibilitySeconds", visibilitySeconds, MAX_VISIBILITY_SECONDS);
    await this.changeVisibility(queue, receipt, Math.ceil(visibilitySeconds));
  }

  async ack(queue: QueueName, receipt: string): Promise<void> {
    await ignoreStaleReceipt(
      this.sqs.send(new DeleteMessageCommand({ QueueUrl: await this.urls.urlOf(queue), ReceiptHandle: receipt })),
    );
  }

  async release(queue: QueueName, receipt: string, delaySeconds = 0): Promise<void> {
    checkSeconds("delaySeconds", delaySeconds, MAX_VISIBILITY_SECONDS);
    await this.changeVisibility(queue, receipt, Math.ceil(delaySeconds));
  }

  private async changeVisibility(queue: QueueName, receipt: string, seconds: number): Promise<void> {
    await ignoreStaleReceipt(
      this.sqs.send(
        new ChangeMessageVisibilityCommand({
          QueueUrl: await this.urls.urlOf(queue),
          ReceiptHandle: receipt,
          VisibilityTimeout: seconds,
        }),
      ),
    );
  }

  async depth(queue: QueueName): Promise<QueueDepth> {
    const { Attributes = {} } = await this.sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: await this.urls.urlOf(queue),
        AttributeNames: [
          "ApproximateNumberOfMessages",
          "ApproximateNumberOfMessagesNotVisible",
          "ApproximateNumberOfMessagesDelayed",
        ],
      }),
    );
    return {
      visible: Number(Attributes.ApproximateNumberOfMessages ?? 0),
      inFlight: Number(Attributes.ApproximateNumberOfMessagesNotVisible ?? 0),
      delayed: Number(Attributes.ApproximateNumberOfMessagesDelayed ?? 0),
    };
  }

  /**
   * Receive from the DLQ, send to the source, delete from the DLQ — one message at a time, so a
   * crash duplicates at most one message (at-least-once) and never loses one. SQS's own
   * StartMessageMoveTask is asynchronous and absent from fauxqs.
   */
  async redrive(queue: QueueName, options: { max?: number } = {}): Promise<number> {
    const max = options.max === undefined ? Infinity : checkCount(options.max);
    const sourceUrl = await this.urls.urlOf(queue);
    const dlqUrl = await this.urls.urlOf(deadLetterQueueOf(queue));
    let moved = 0;
    while (moved < max) {
      // A 1 s long poll, not a short poll: short polls sample a subset of SQS's servers and can
      // come back empty while dead letters remain.
      const batch = await this.receiveBatch(dlqUrl, Math.min(MAX_BATCH, max - moved), REDRIVE_VISIBILITY_SECONDS, 1);
      if (!batch.length) break;
      for (const message of batch) {
        const original = toQueueMessage<unknown>(message);
        await this.sendRaw(sourceUrl, message.Body ?? "", {
          ...original.attributes,
          [ORIGIN_ID_ATTRIBUTE]: original.id,
          [ORIGIN_SENT_AT_ATTRIBUTE]: String(original.sentAt),
        });
        await this.sqs.send(new DeleteMessageCommand({ QueueUrl: dlqUrl, ReceiptHandle: original.receipt }));
        moved++;
      }
    }
    return moved;
  }

  /**
   * Receives with visibility 0 so the dead letters stay available; repeats until a batch brings
   * nothing new. SQS counts these receives in ApproximateReceiveCount, which only matters for
   * queues with a redrive policy, and DLQs have none. Peeks are not deliveries: `receipt` is empty.
   */
  async peekDeadLetters<T = unknown>(queue: QueueName, options: { max?: number } = {}): Promise<QueueMessage<T>[]> {
    const max = options.max === undefined ? MAX_BATCH : checkCount(options.max);
    const dlqUrl = await this.urls.urlOf(deadLetterQueueOf(queue));
    const seen = new Map<string, QueueMessage<T>>();
    while (seen.size < max) {
      const batch = await this.receiveBatch(dlqUrl, Math.min(MAX_BATCH, max - seen.size), 0, 0);
      let fresh = 0;
      for (const message of batch) {
        const peeked = toQueueMessage<T>(message);
        if (!seen.has(peeked.id)) {
          seen.set(peeked.id, { ...peeked, receipt: "" });
          fresh++;
        }
      }
      if (!fresh) break;
    }
    return [...seen.values()].slice(0, max);
  }
}

async function ignoreStaleReceipt(request: Promise<unknown>): Promise<void> {
  try {
    await request;
  } catch (e) {
    const name = (e as { name?: string }).name;
    if (name !== "MessageNotInflight" && name !== "ReceiptHandleIsInvalid") throw e;
  }
}

function toQueueMessage<T>(message: Message): QueueMessage<T> {
  const attributes: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.MessageAttributes ?? {})) {
    if (value.StringValue !== undefined) attributes[name] = value.StringValue;
  }
  const originId = attributes[ORIGIN_ID_ATTRIBUTE];
  const originSentAt = attributes[ORIGIN_SENT_AT_ATTRIBUTE];
  delete attributes[ORIGIN_ID_ATTRIBUTE];
  delete attributes[ORIGIN_SENT_AT_ATTRIBUTE];
  return {
    id: originId ?? message.MessageId ?? "",
    receipt: message.ReceiptHandle ?? "",
    body: parseBody(message.Body ?? "") as T,
    receiveCount: Number(message.Attributes?.ApproximateReceiveCount ?? 1),
    sentAt: Number(originSentAt ?? message.Attributes?.SentTimestamp ?? Date.now()),
    attributes,
  };
}

/**
 * Kiln sends JSON, but anyone with access can put text on a queue (the console, the CLI). Such a
 * body is delivered as the raw string so the consumer's validation rejects it — one bad message
 * must not make every receive of its batch throw.
 */
function parseBody(body: string): unknown {
  try {
    return JSON.parse(body);
  } catch {
    return body;
  }
}

/**
 * Creates each queue and its `<name>-dlq`, with SQS's RedrivePolicy moving a message to the DLQ
 * on the receive after its `maxReceives`-th. Idempotent: existing queues get the attributes set
 * again. For tests and dev setups; SST creates the queues in production.
 * Returns the URL of every queue created, source and DLQ, by logical name.
 */
export async function ensureQueues(
  sqs: SQSClient,
  names: readonly QueueName[],
  options: { maxReceives: number; visibilitySeconds: number; prefix?: string },
): Promise<Record<QueueName, string>> {
  const urls: Record<QueueName, string> = {};
  const create = async (name: QueueName, attributes: Record<string, string>): Promise<string> => {
    const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: `${options.prefix ?? ""}${name}` }));
    if (!QueueUrl)
      throw new KilnError("queue_create_failed", `SQS returned no URL for the new queue "${name}".`, {
        retryable: true,
      });
    // Attributes apart from CreateQueue: SQS refuses CreateQueue for an existing queue whose attributes differ.
    await sqs.send(new SetQueueAttributesCommand({ QueueUrl, Attributes: attributes }));
    urls[name] = QueueUrl;
    return QueueUrl;
  };
  for (const name of names) {
    const dlqName = deadLetterQueueOf(name);
    const dlqUrl = await create(dlqName, { MessageRetentionPeriod: String(DLQ_RETENTION_SECONDS) });
    const { Attributes } = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ["QueueArn"] }),
    );
    await create(name, {
      VisibilityTimeout: String(Math.ceil(options.visibilitySeconds)),
      RedrivePolicy: JSON.stringify({
        deadLetterTargetArn: Attributes?.QueueArn,
        maxReceiveCount: options.maxReceives,
      }),
    });
  }
  return urls;
}

const encoder = new TextEncoder();
/** UTF-8 length with Web-standard calls (no Buffer), so the family also runs on edge runtimes. */
const utf8Bytes = (text: string): number => encoder.encode(text).byteLength;
