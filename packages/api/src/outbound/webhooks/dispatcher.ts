/**
 * Delivers queued webhooks (Node only: it resolves names and opens sockets itself). Imported by
 * entry points and the CLI, never by the API core.
 *
 * Durability comes from the queue: an attempt that fails is re-sent as a new delayed message
 * (same `webhook-id`, next attempt number) before the old one is acknowledged, so a crash at any
 * point at worst repeats an attempt, and any dispatcher on the same queue carries on. Re-sending
 * rather than releasing keeps the queue's receive count (and its dead-letter threshold) for
 * crashes, not for receivers that are down.
 */
import dns from "node:dns";
import http from "node:http";
import https from "node:https";
import type { LookupAddress } from "node:dns";
import type { LookupFunction } from "node:net";
import { describeError, WEBHOOK_QUEUE, type Ports, type QueueMessage } from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";
import { addressRefusal, hostOf, parseIp, webhookUrlRefusal, type WebhookPolicy } from "../address-policy.js";
import type { WebhookDelivery } from "./events.js";
import { webhookHeaders } from "./signature.js";

export interface WebhookDispatcherOptions {
  ports: Ports;
  logger: Logger;
  policy: WebhookPolicy;
  /** Stop retrying a delivery this long after its first attempt. */
  retryWindowMs: number;
  /** Wait after the first failure; doubles per failure up to `backoffMaxSeconds`. */
  backoffBaseSeconds: number;
  backoffMaxSeconds?: number;
  /** One attempt's whole HTTP exchange. */
  timeoutMs: number;
  /** Deliveries received per poll, attempted in parallel. */
  batch?: number;
  pollWaitSeconds?: number;
  /** Name resolution; replaceable so tests can play a rebinding DNS. */
  lookup?: typeof dns.lookup;
  now?: () => number;
}

/** The largest delay one queue hop can carry (SQS's limit; the local queue keeps the same bound). */
const MAX_HOP_SECONDS = 900;
const DEFAULT_BACKOFF_MAX_SECONDS = 3600;

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

type AttemptOutcome =
  { kind: "delivered"; status: number } | { kind: "refused"; reason: string } | { kind: "failed"; reason: string };

export class WebhookDispatcher {
  private readonly abort = new AbortController();
  private loop?: Promise<void>;
  private readonly now: () => number;

  constructor(private readonly options: WebhookDispatcherOptions) {
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops polling and waits for the attempts in progress (each bounded by the timeout). */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  private async run(): Promise<void> {
    const { ports, logger } = this.options;
    const visibilitySeconds = Math.ceil(this.options.timeoutMs / 1000) + 30;
    while (!this.abort.signal.aborted) {
      let messages: QueueMessage<WebhookDelivery>[];
      try {
        messages = await ports.queue.receive<WebhookDelivery>(WEBHOOK_QUEUE, {
          max: this.options.batch ?? 10,
          visibilitySeconds,
          waitSeconds: this.options.pollWaitSeconds ?? 10,
          signal: this.abort.signal,
        });
      } catch (e) {
        if (this.abort.signal.aborted) break;
        logger.warn({ err: describeError(e) }, "webhook queue receive failed; backing off");
        await new Promise((resolve) => setTimeout(resolve, 1000));
        continue;
      }
      await Promise.all(
        messages.map((m) =>
          this.handle(m).catch((e) =>
            logger.error(
              { err: describeError(e), messageId: m.id },
              "webhook handling failed; the message will be redelivered",
            ),
          ),
        ),
      );
    }
  }

  private async handle(message: QueueMessage<WebhookDelivery>): Promise<void> {
    const { ports, logger } = this.options;
    const ack = () => ports.queue.ack(WEBHOOK_QUEUE, message.receipt);
    const delivery = message.body;
    if (!isDelivery(delivery)) {
      logger.error({ messageId: message.id }, "webhook message is unreadable; dropping it");
      return ack();
    }
    const log = logger.child({
      webhookId: delivery.id,
      jobId: delivery.jobId,
      event: delivery.event,
      attempt: delivery.attempt,
    });
    const now = this.now();
    if (delivery.notBefore !== undefined && delivery.notBefore > now) {
      // A backoff longer than one hop: ride the queue again.
      return this.resend(message, delivery, delivery.notBefore - now);
    }
    const key = await ports.keys.get(delivery.keyId);
    if (!key?.webhookSecret) {
      log.warn(
        { keyId: delivery.keyId },
        "the key that owns this webhook is gone or has no secret; dropping the delivery",
      );
      return ack();
    }
    const outcome = await this.attempt(delivery, key.webhookSecret);
    if (outcome.kind === "delivered") {
      log.info({ status: outcome.status }, "webhook delivered");
      return ack();
    }
    if (outcome.kind === "refused") {
      log.warn({ reason: outcome.reason }, "webhook refused by the address policy; dropping it");
      return ack();
    }
    const wait = backoffSeconds(delivery.attempt, this.options.backoffBaseSeconds, this.options.backoffMaxSeconds);
    if (now + wait * 1000 - delivery.firstAttemptAt > this.options.retryWindowMs) {
      log.error(
        { reason: outcome.reason, attempts: delivery.attempt },
        "webhook failed on every attempt within the retry window; giving up",
      );
      return ack();
    }
    log.warn({ reason: outcome.reason, retryInSeconds: wait }, "webhook attempt failed; it will be retried");
    return this.resend(
      message,
      { ...delivery, attempt: delivery.attempt + 1, notBefore: now + wait * 1000 },
      wait * 1000,
    );
  }

  /** Send first, then acknowledge: a crash in between repeats an attempt rather than losing it. */
  private async resend(
    message: QueueMessage<WebhookDelivery>,
    delivery: WebhookDelivery,
    delayMs: number,
  ): Promise<void> {
    const delaySeconds = Math.min(MAX_HOP_SECONDS, Math.max(0, Math.ceil(delayMs / 1000)));
    await this.options.ports.queue.send(WEBHOOK_QUEUE, delivery, { delaySeconds });
    await this.options.ports.queue.ack(WEBHOOK_QUEUE, message.receipt);
  }

  private async attempt(delivery: WebhookDelivery, secret: string): Promise<AttemptOutcome> {
    let url: URL;
    try {
      url = new URL(delivery.url);
    } catch {
      return { kind: "refused", reason: `not a URL: ${delivery.url}` };
    }
    const staticRefusal = webhookUrlRefusal(url, this.options.policy);
    if (staticRefusal) return { kind: "refused", reason: staticRefusal };
    const headers = {
      "content-type": "application/json",
      "user-agent": "Kiln-Webhooks/0.1",
      ...(await webhookHeaders(secret, delivery.id, Math.floor(this.now() / 1000), delivery.body)),
    };
    let refusal: string | undefined;
    const resolve = this.options.lookup ?? dns.lookup;
    const host = hostOf(url);
    // The check runs inside the connection's own lookup, so the address checked is the address dialled.
    const lookup: LookupFunction = (hostname, lookupOptions, callback) => {
      resolve(
        hostname,
        { ...lookupOptions, all: true },
        (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => {
          if (err) return callback(err, "", 0);
          refusal =
            addresses.map((a) => addressRefusal(host, a.address, this.options.policy)).find((r) => r !== null) ??
            undefined;
          if (refusal || addresses.length === 0) {
            return callback(
              Object.assign(new Error(refusal ?? `${hostname} has no addresses`), { code: "EKILNREFUSED" }),
              "",
              0,
            );
          }
          if (lookupOptions.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
          callback(null, addresses[0]!.address, addresses[0]!.family);
        },
      );
    };
    try {
      const status = await post(
        url,
        headers,
        delivery.body,
        parseIp(host) ? undefined : lookup,
        this.options.timeoutMs,
      );
      if (status >= 200 && status < 300) return { kind: "delivered", status };
      return { kind: "failed", reason: `the receiver answered ${status}` };
    } catch (e) {
      if (refusal) return { kind: "refused", reason: refusal };
      return { kind: "failed", reason: describeError(e) };
    }
  }
}

/** One POST; redirects are not followed (a redirect could lead anywhere, past the address policy). */
function post(
  url: URL,
  headers: Record<string, string>,
  body: string,
  lookup: LookupFunction | undefined,
  timeoutMs: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = (url.protocol === "https:" ? https : http).request(
      url,
      {
        method: "POST",
        headers: { ...headers, "content-length": String(Buffer.byteLength(body)) },
        agent: false,
        ...(lookup ? { lookup } : {}),
      },
      (response) => {
        response.resume();
        response.on("end", () => resolve(response.statusCode ?? 0));
        response.on("error", reject);
      },
    );
    const timer = setTimeout(() => request.destroy(new Error(`no complete answer within ${timeoutMs} ms`)), timeoutMs);
    request.on("close", () => clearTimeout(timer));
    request.on("error", reject);
    request.end(body);
  });
}

function isDelivery(value: unknown): value is WebhookDelivery {
  const d = value as Partial<WebhookDelivery> | null;
  return (
    typeof d === "object" &&
    d !== null &&
    d.v === 1 &&
    typeof d.id === "string" &&
    typeof d.keyId === "string" &&
    typeof d.jobId === "string" &&
    typeof d.url === "string" &&
    typeof d.body === "string" &&
    typeof d.firstAttemptAt === "number" &&
    typeof d.attempt === "number"
  );
}

/** A host's addresses for the submit-time check; `[]` when the name does not exist. */
export async function resolveHostAddresses(host: string): Promise<string[]> {
  try {
    return (await dns.promises.lookup(host, { all: true })).map((a) => a.address);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOTFOUND" || code === "ENODATA") return [];
    throw e;
  }
}
