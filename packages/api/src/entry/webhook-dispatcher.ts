/**
 * Webhook delivery on Node: the generic outbound dispatcher (outbound/dispatcher.ts) with the
 * webhook handler (outbound/webhooks/delivery.ts) and a transport that resolves names and opens
 * sockets itself, so the address policy checks the very address it dials. Imported by entry points
 * and the CLI (`@kiln/api/webhook-dispatcher`), never by the API core.
 */
import type { LookupAddress } from "node:dns";
import dns from "node:dns";
import http from "node:http";
import https from "node:https";
import type { LookupFunction } from "node:net";

import { describeError, type Ports } from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";

import { addressRefusal, hostOf, parseIp, type WebhookPolicy } from "../outbound/address-policy.js";
import { OutboundDispatcher } from "../outbound/dispatcher.js";
import { webhookDeliveryHandler, type WebhookTransport } from "../outbound/webhooks/delivery.js";
import type { WebhookDelivery } from "../outbound/webhooks/events.js";

export { backoffSeconds } from "../outbound/dispatcher.js";

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

/** Delivers queued webhooks until stopped. */
export class WebhookDispatcher {
  private readonly dispatcher: OutboundDispatcher<WebhookDelivery>;

  constructor(options: WebhookDispatcherOptions) {
    const handler = webhookDeliveryHandler({
      keys: options.ports.keys,
      policy: options.policy,
      transport: nodeWebhookTransport(options.policy, options.lookup),
      retryWindowMs: options.retryWindowMs,
      backoffBaseSeconds: options.backoffBaseSeconds,
      backoffMaxSeconds: options.backoffMaxSeconds,
      timeoutMs: options.timeoutMs,
      now: options.now,
    });
    this.dispatcher = new OutboundDispatcher(handler, {
      queue: options.ports.queue,
      logger: options.logger,
      attemptTimeoutMs: options.timeoutMs,
      batch: options.batch,
      pollWaitSeconds: options.pollWaitSeconds,
      now: options.now,
    });
  }

  start(): void {
    this.dispatcher.start();
  }

  /** Stops polling and waits for the attempts in progress (each bounded by the timeout). */
  stop(): Promise<void> {
    return this.dispatcher.stop();
  }
}

/**
 * POSTs with Node's http/https. The address check runs inside the connection's own lookup, so the
 * address checked is the address dialled (a name that rebinds to loopback is refused).
 */
export function nodeWebhookTransport(policy: WebhookPolicy, resolve: typeof dns.lookup = dns.lookup): WebhookTransport {
  return async ({ url, headers, body, timeoutMs }) => {
    let refusal: string | undefined;
    const host = hostOf(url);
    const lookup: LookupFunction = (hostname, lookupOptions, callback) => {
      resolve(
        hostname,
        { ...lookupOptions, all: true },
        (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => {
          if (err) return callback(err, "", 0);
          refusal = addresses.map((a) => addressRefusal(host, a.address, policy)).find((r) => r !== null) ?? undefined;
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
      const status = await post(url, headers, body, parseIp(host) ? undefined : lookup, timeoutMs);
      return { kind: "answered", status };
    } catch (e) {
      if (refusal) return { kind: "refused", reason: refusal };
      return { kind: "failed", reason: describeError(e) };
    }
  };
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
