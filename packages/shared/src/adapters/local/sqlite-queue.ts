import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";

import { KilnError } from "../../errors.js";
import type { Queue, QueueDepth, QueueMessage, QueueName, ReceiveOptions, SendOptions } from "../../ports/queue.js";
import { deadLetterQueueOf } from "../../ports/queue.js";
import {
  checkCount,
  checkSeconds,
  MAX_DELAY_SECONDS,
  MAX_MESSAGE_BYTES,
  MAX_VISIBILITY_SECONDS,
  MAX_WAIT_SECONDS,
} from "../../ports/queue-limits.js";
import type { SqliteDatabase } from "./sqlite-database.js";
import { type SqliteWriteBatch, writeBatchOf } from "./sqlite-write-batch.js";

export interface SqliteQueueOptions {
  /** A message already received this many times goes to `<queue>-dlq` instead of being delivered again. */
  maxReceives: number;
  /** Epoch ms; decides visibility and delays. Long polls still wait in real time. */
  now?: () => number;
  /** How often a long poll looks at the table. */
  pollIntervalMs?: number;
}

interface MessageRow {
  id: string;
  body: string;
  attributes: string;
  sent_at: number;
  receive_count: number;
  receipt: string | null;
}

const DEFAULT_PEEK = 10;

/**
 * The Queue port on a SQLite table shared by every process that opens the same data dir.
 *
 * A delivery is claimed inside one IMMEDIATE transaction (dead-letter the exhausted, then
 * UPDATE … RETURNING the claimed rows with a fresh receipt each), so two processes never
 * receive the same message within one visibility window.
 *
 * Receipts are strict: a receipt names one delivery. Once the message has been released or
 * received again, ack/extend/release with the old receipt is a silent no-op, so a worker that lost
 * its lease cannot delete or prolong the delivery another worker now holds. SQS promises less (an
 * old receipt handle "might" still delete the message), so the contract suite does not test this
 * and Kiln's correctness rests on the JobStore's conditional transitions, not on receipts.
 */
export class SqliteQueue implements Queue {
  private readonly now: () => number;
  private readonly maxReceives: number;
  private readonly pollIntervalMs: number;
  /** Long polls waiting in this process, per queue: a send here wakes them at once instead of at the next poll. */
  private readonly waiters = new Map<QueueName, Set<() => void>>();
  private readonly closing = new AbortController();

  private readonly insertStmt;
  private readonly anyVisibleStmt;
  private readonly deadLetterStmt;
  private readonly claimStmt;
  private readonly extendStmt;
  private readonly ackStmt;
  private readonly releaseStmt;
  private readonly depthStmt;
  private readonly redriveStmt;
  private readonly peekStmt;
  private readonly claimTx;

  private readonly writes: SqliteWriteBatch;

  constructor(db: SqliteDatabase, options: SqliteQueueOptions) {
    if (!Number.isInteger(options.maxReceives) || options.maxReceives < 1) {
      throw new KilnError(
        "config_invalid",
        `maxReceives must be a whole number of at least 1 (got ${options.maxReceives}); it is how many deliveries a message gets before it is dead-lettered.`,
      );
    }
    this.maxReceives = options.maxReceives;
    this.now = options.now ?? Date.now;
    this.pollIntervalMs = options.pollIntervalMs ?? 100;
    // Every concurrent long poll listens on `closing`; that many listeners is expected, not a leak.
    setMaxListeners(0, this.closing.signal);

    this.writes = writeBatchOf(db);
    this.insertStmt = db.prepare<[string, string, string, string, number, number]>(
      "INSERT INTO queue_messages (id, queue, body, attributes, sent_at, visible_at) VALUES (?, ?, ?, ?, ?, ?)",
    );
    this.anyVisibleStmt = db
      .prepare<[string, number], number>("SELECT 1 FROM queue_messages WHERE queue = ? AND visible_at <= ? LIMIT 1")
      .pluck();
    this.deadLetterStmt = db.prepare<{ queue: string; dlq: string; now: number; maxReceives: number }>(
      `UPDATE queue_messages SET queue = @dlq, receipt = NULL, visible_at = @now
       WHERE queue = @queue AND visible_at <= @now AND receive_count >= @maxReceives`,
    );
    this.claimStmt = db.prepare<
      { queue: string; now: number; max: number; until: number },
      MessageRow & { seq: number }
    >(
      `UPDATE queue_messages
       SET receive_count = receive_count + 1, visible_at = @until, receipt = lower(hex(randomblob(16)))
       WHERE seq IN (SELECT seq FROM queue_messages WHERE queue = @queue AND visible_at <= @now ORDER BY seq LIMIT @max)
       RETURNING seq, id, body, attributes, sent_at, receive_count, receipt`,
    );
    this.extendStmt = db.prepare<[number, string, string]>(
      "UPDATE queue_messages SET visible_at = ? WHERE queue = ? AND receipt = ?",
    );
    this.ackStmt = db.prepare<[string, string]>("DELETE FROM queue_messages WHERE queue = ? AND receipt = ?");
    this.releaseStmt = db.prepare<[number, string, string]>(
      "UPDATE queue_messages SET receipt = NULL, visible_at = ? WHERE queue = ? AND receipt = ?",
    );
    this.depthStmt = db.prepare<
      { queue: string; now: number },
      { visible: number | null; in_flight: number | null; delayed: number | null }
    >(
      `SELECT
         SUM(visible_at <= @now) AS visible,
         SUM(visible_at > @now AND receipt IS NOT NULL) AS in_flight,
         SUM(visible_at > @now AND receipt IS NULL) AS delayed
       FROM queue_messages WHERE queue = @queue`,
    );
    this.redriveStmt = db.prepare<{ queue: string; dlq: string; now: number; limit: number }>(
      `UPDATE queue_messages SET queue = @queue, receive_count = 0, receipt = NULL, visible_at = @now
       WHERE seq IN (SELECT seq FROM queue_messages WHERE queue = @dlq ORDER BY seq LIMIT @limit)`,
    );
    this.peekStmt = db.prepare<[string, number], MessageRow>(
      "SELECT id, body, attributes, sent_at, receive_count, receipt FROM queue_messages WHERE queue = ? ORDER BY seq LIMIT ?",
    );
    this.claimTx = db.transaction((queue: string, max: number, visibilitySeconds: number) => {
      const now = this.now();
      // A dead-letter queue has no dead-letter queue of its own.
      if (!isDeadLetterQueue(queue)) {
        this.deadLetterStmt.run({ queue, dlq: deadLetterQueueOf(queue), now, maxReceives: this.maxReceives });
      }
      return this.claimStmt.all({ queue, now, max, until: now + visibilitySeconds * 1000 });
    });
  }

  async send(queue: QueueName, body: unknown, options: SendOptions = {}): Promise<string> {
    const { id, write, sent } = this.prepareSend(queue, body, options);
    // Concurrent sends share a commit (see sqlite-write-batch.ts).
    await this.writes.run(write);
    sent();
    return id;
  }

  /**
   * A send split in two, for writes that must commit with it (the job store's outbox): `write`
   * inserts the row (synchronously, inside the caller's transaction), `sent` runs after the commit.
   */
  prepareSend(
    queue: QueueName,
    body: unknown,
    options: SendOptions = {},
  ): { id: string; write: () => void; sent: () => void } {
    const delaySeconds = options.delaySeconds ?? 0;
    checkSeconds("delaySeconds", delaySeconds, MAX_DELAY_SECONDS);
    const text = JSON.stringify(body);
    if (text === undefined) {
      throw new KilnError(
        "queue_body_invalid",
        "A queue message body must be JSON-serialisable (got undefined or a function).",
      );
    }
    const attributes = JSON.stringify(options.attributes ?? {});
    if (Buffer.byteLength(text) + Buffer.byteLength(attributes) > MAX_MESSAGE_BYTES) {
      throw new KilnError(
        "queue_message_too_large",
        `A queue message may hold at most ${MAX_MESSAGE_BYTES} bytes (the SQS limit); put large data in the blob store and send its key.`,
      );
    }
    const id = randomUUID();
    const now = this.now();
    return {
      id,
      write: () => void this.insertStmt.run(id, queue, text, attributes, now, now + delaySeconds * 1000),
      sent: () => {
        if (delaySeconds === 0) this.wake(queue);
      },
    };
  }

  /**
   * Claims up to `max` visible messages. With `waitSeconds`, polls until one arrives or the wait
   * ends; an aborted `signal` (or `close()`) ends the wait early and resolves with no messages.
   */
  async receive<T = unknown>(queue: QueueName, options: ReceiveOptions): Promise<QueueMessage<T>[]> {
    const max = options.max ?? 1;
    if (!Number.isInteger(max) || max < 1 || max > 10) {
      throw new KilnError("queue_receive_invalid", `receive takes max between 1 and 10 (got ${max}), as SQS does.`);
    }
    checkSeconds("visibilitySeconds", options.visibilitySeconds, MAX_VISIBILITY_SECONDS);
    const waitSeconds = options.waitSeconds ?? 0;
    checkSeconds("waitSeconds", waitSeconds, MAX_WAIT_SECONDS);

    if (options.signal?.aborted || this.closing.signal.aborted) return [];
    // One controller per call, unhooked when the call ends (AbortSignal.any leaks on Node 20 when
    // one source, like `closing`, lives as long as the process).
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    this.closing.signal.addEventListener("abort", onAbort, { once: true });
    try {
      // Real time, not the injected clock: a test clock that stands still must not make the wait endless.
      const deadline = Date.now() + waitSeconds * 1000;
      for (;;) {
        if (stop.signal.aborted) return [];
        if (this.anyVisibleStmt.get(queue, this.now()) !== undefined) {
          const rows = this.claimTx.immediate(queue, max, options.visibilitySeconds);
          if (rows.length > 0) return rows.sort((a, b) => a.seq - b.seq).map((row) => toMessage<T>(row));
        }
        const left = deadline - Date.now();
        if (left <= 0) return [];
        await this.waitForWork(queue, Math.min(this.pollIntervalMs, left), stop.signal);
      }
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
      this.closing.signal.removeEventListener("abort", onAbort);
    }
  }

  private wake(queue: QueueName): void {
    for (const resolve of this.waiters.get(queue) ?? []) resolve();
  }

  /** Sleeps until the poll interval passes, a send in this process wakes the queue, or the call is aborted. */
  private waitForWork(queue: QueueName, ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let set = this.waiters.get(queue);
      if (!set) this.waiters.set(queue, (set = new Set()));
      const done = () => {
        clearTimeout(timer);
        set!.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      set.add(done);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  async extend(queue: QueueName, receipt: string, visibilitySeconds: number): Promise<void> {
    checkSeconds("visibilitySeconds", visibilitySeconds, MAX_VISIBILITY_SECONDS);
    this.extendStmt.run(this.now() + visibilitySeconds * 1000, queue, receipt);
  }

  async ack(queue: QueueName, receipt: string): Promise<void> {
    this.ackStmt.run(queue, receipt);
  }

  async release(queue: QueueName, receipt: string, delaySeconds = 0): Promise<void> {
    checkSeconds("delaySeconds", delaySeconds, MAX_VISIBILITY_SECONDS);
    this.releaseStmt.run(this.now() + delaySeconds * 1000, queue, receipt);
    if (delaySeconds === 0) this.wake(queue);
  }

  /** A released message waiting out its delay counts as delayed, not in flight: nobody holds it. */
  async depth(queue: QueueName): Promise<QueueDepth> {
    const row = this.depthStmt.get({ queue, now: this.now() });
    return { visible: row?.visible ?? 0, inFlight: row?.in_flight ?? 0, delayed: row?.delayed ?? 0 };
  }

  async redrive(queue: QueueName, options: { max?: number } = {}): Promise<number> {
    const limit = options.max === undefined ? -1 : checkCount(options.max);
    return this.redriveStmt.run({ queue, dlq: deadLetterQueueOf(queue), now: this.now(), limit }).changes;
  }

  /** Dead letters in arrival order; they are not deliveries, so their `receipt` is empty. */
  async peekDeadLetters<T = unknown>(queue: QueueName, options: { max?: number } = {}): Promise<QueueMessage<T>[]> {
    const max = options.max === undefined ? DEFAULT_PEEK : checkCount(options.max);
    return this.peekStmt.all(deadLetterQueueOf(queue), max).map((row) => toMessage<T>({ ...row, receipt: null }));
  }

  /** Ends pending long polls (they resolve with no messages); the database is closed by its owner. */
  async close(): Promise<void> {
    this.closing.abort();
  }
}

const isDeadLetterQueue = (queue: QueueName): boolean => queue.endsWith(deadLetterQueueOf(""));

function toMessage<T>(row: MessageRow): QueueMessage<T> {
  return {
    id: row.id,
    receipt: row.receipt ?? "",
    body: JSON.parse(row.body) as T,
    receiveCount: row.receive_count,
    sentAt: row.sent_at,
    attributes: JSON.parse(row.attributes) as Record<string, string>,
  };
}
