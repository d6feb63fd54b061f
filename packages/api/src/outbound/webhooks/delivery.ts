/**
 * One webhook attempt, as a handler of the outbound dispatcher: look up the owner's secret, check
 * the URL against the address policy, sign, POST through the host's transport, and decide —
 * delivered, retry after a backoff, or give up (refused, key gone, retry window spent).
 * Web-standard: the transport that opens sockets (and checks the addresses it dials) is the host's.
 */
import { type KeyStore, WEBHOOK_QUEUE } from "@kiln/shared";

import { type WebhookPolicy, webhookUrlRefusal } from "../address-policy.js";
import { backoffSeconds, type DeliveryHandler } from "../dispatcher.js";
import type { WebhookDelivery } from "./events.js";
import { webhookHeaders } from "./signature.js";

/** One POST as the transport sees it; redirects must not be followed. */
export interface WebhookPost {
  url: URL;
  headers: Record<string, string>;
  body: string;
  timeoutMs: number;
}

/** `refused`: the address policy stopped it at connection time (e.g. a name resolving to a private address). */
export type WebhookPostResult =
  { kind: "answered"; status: number } | { kind: "refused"; reason: string } | { kind: "failed"; reason: string };

export type WebhookTransport = (post: WebhookPost) => Promise<WebhookPostResult>;

export interface WebhookHandlerOptions {
  keys: KeyStore;
  policy: WebhookPolicy;
  transport: WebhookTransport;
  /** Stop retrying a delivery this long after its first attempt. */
  retryWindowMs: number;
  /** Wait after the first failure; doubles per failure up to `backoffMaxSeconds`. */
  backoffBaseSeconds: number;
  backoffMaxSeconds?: number;
  /** One attempt's whole HTTP exchange. */
  timeoutMs: number;
  now?: () => number;
}

type Attempt =
  { kind: "delivered"; status: number } | { kind: "refused"; reason: string } | { kind: "failed"; reason: string };

export function webhookDeliveryHandler(options: WebhookHandlerOptions): DeliveryHandler<WebhookDelivery> {
  const now = options.now ?? Date.now;

  async function post(delivery: WebhookDelivery, secret: string): Promise<Attempt> {
    let url: URL;
    try {
      url = new URL(delivery.url);
    } catch {
      return { kind: "refused", reason: `not a URL: ${delivery.url}` };
    }
    const staticRefusal = webhookUrlRefusal(url, options.policy);
    if (staticRefusal) return { kind: "refused", reason: staticRefusal };
    const headers = {
      "content-type": "application/json",
      "user-agent": "Kiln-Webhooks/0.1",
      ...(await webhookHeaders(secret, delivery.id, Math.floor(now() / 1000), delivery.body)),
    };
    const result = await options.transport({ url, headers, body: delivery.body, timeoutMs: options.timeoutMs });
    if (result.kind !== "answered") return result;
    if (result.status >= 200 && result.status < 300) return { kind: "delivered", status: result.status };
    return { kind: "failed", reason: `the receiver answered ${result.status}` };
  }

  return {
    queue: WEBHOOK_QUEUE,
    name: "webhook",
    parse: (body) => (isDelivery(body) ? body : undefined),
    describe: (d) => ({ webhookId: d.id, jobId: d.jobId, event: d.event, attempt: d.attempt }),
    notBefore: (d) => d.notBefore,
    async attempt(delivery, { log, now: at }) {
      const key = await options.keys.get(delivery.keyId);
      if (!key?.webhookSecret) {
        log.warn(
          { keyId: delivery.keyId },
          "the key that owns this webhook is gone or has no secret; dropping the delivery",
        );
        return { kind: "give-up", reason: "key_gone" };
      }
      const outcome = await post(delivery, key.webhookSecret);
      if (outcome.kind === "delivered") {
        log.info({ status: outcome.status }, "webhook delivered");
        return { kind: "delivered" };
      }
      if (outcome.kind === "refused") {
        log.warn({ reason: outcome.reason }, "webhook refused by the address policy; dropping it");
        return { kind: "give-up", reason: outcome.reason };
      }
      const wait = backoffSeconds(delivery.attempt, options.backoffBaseSeconds, options.backoffMaxSeconds);
      if (at + wait * 1000 - delivery.firstAttemptAt > options.retryWindowMs) {
        log.error(
          { reason: outcome.reason, attempts: delivery.attempt },
          "webhook failed on every attempt within the retry window; giving up",
        );
        return { kind: "give-up", reason: outcome.reason };
      }
      log.warn({ reason: outcome.reason, retryInSeconds: wait }, "webhook attempt failed; it will be retried");
      return {
        kind: "retry-after",
        ms: wait * 1000,
        next: { ...delivery, attempt: delivery.attempt + 1, notBefore: at + wait * 1000 },
      };
    },
  };
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
