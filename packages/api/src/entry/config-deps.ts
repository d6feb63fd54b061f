import { DEFAULT_RENDER_LIMITS, type JobEventSink, type KilnConfig, type Ports } from "@kiln/shared";
import { verifyDownloadSignature } from "@kiln/shared/signed-url";

import { batchChatPlatforms } from "../batches/chat-notifier.js";
import type { BatchOptions } from "../batches/routes.js";
import { chatEventSink } from "../channels/core/deliveries.js";
import type { ApiDeps } from "../deps.js";
import { webhookEventSink } from "../outbound/webhooks/events.js";

/**
 * The API's dependencies from Kiln's configuration, in Web-standard code so every host shares it:
 * Node and Lambda (api-deps.ts adds the data-dir URL secret and DNS checks) and the edge
 * (edge.ts, where neither files nor `node:dns` exist).
 */
export interface HostServices {
  /** Signs `/v1/files/*` download URLs; absent when the blob store hands out its own (S3 presigned). */
  urlSecret?: string;
  /** Resolves a webhook host at submit time, so private addresses are refused early; absent on the edge. */
  resolveHost?: (host: string) => Promise<string[]>;
  log?: ApiDeps["log"];
  /** Batches: draws a run's contact sheet (sharp on Node hosts); absent: runs end without one. */
  contactSheet?: BatchOptions["contactSheet"];
  /** Batches: posts a run's end to Slack/Discord (Node hosts that finish runs); absent: runs end untold in chat. */
  batchChat?: BatchOptions["chat"];
  /** Batches: per-manifest schedules outside the process (EventBridge Scheduler on AWS). */
  manifestSchedules?: BatchOptions["schedules"];
}

export function apiDepsFromConfig(config: KilnConfig, ports: Ports, host: HostServices = {}): ApiDeps {
  const secret = host.urlSecret;
  return {
    ports,
    publicUrl: config.publicUrl,
    limits: {
      ...DEFAULT_RENDER_LIMITS,
      minSide: config.limits.minSide,
      maxSide: config.limits.maxSide,
      maxPixels: config.limits.maxPixels,
      maxRetentionHours: config.limits.maxRetentionHours,
      buckets: {
        buckets: config.buckets.list,
        strict: config.buckets.strict,
        routeByBucket: config.buckets.routing === "lanes",
      },
      allowUnwatermarked: config.limits.allowUnwatermarked,
    },
    maxBodyBytes: config.limits.maxBodyBytes,
    imageInputs: config.imageInputs,
    downloadUrlSeconds: config.downloadUrlSeconds,
    retentionHours: config.retentionHours,
    serveFiles: secret
      ? { verify: (key, expires, sig) => verifyDownloadSignature(key, expires, sig, secret, Date.now()) }
      : undefined,
    keyLimits: config.keyLimits,
    webhooks: {
      allowPrivate: config.webhooks.allowPrivate,
      allowedHosts: config.webhooks.allowedHosts,
      resolveHost: host.resolveHost,
    },
    events: webhookEventSinkFromConfig(config, ports, host.log),
    chat: { config: config.chat },
    batches: {
      stepSeconds: config.batches.stepSeconds,
      window: config.batches.window,
      contactSheet: host.contactSheet,
      // Batch notifications: a manifest may name the chat platforms whose bot token is set.
      chat: host.batchChat,
      notifyPlatforms: batchChatPlatforms(config.chat),
      schedules: host.manifestSchedules,
    },
    log: host.log,
  };
}

/** Enqueues webhook deliveries and chat follow-ups for job events (API-side moves, and the worker's via the CLI). */
export function webhookEventSinkFromConfig(config: KilnConfig, ports: Ports, log?: ApiDeps["log"]): JobEventSink {
  // Chat channels: the same events also queue Discord/Slack follow-ups for chat-submitted jobs.
  const chat = chatEventSink({ queue: ports.queue, log });
  const webhooks = webhookEventSink({
    queue: ports.queue,
    blobs: ports.blobs,
    publicUrl: config.publicUrl,
    downloadUrlSeconds: config.downloadUrlSeconds,
    log,
  });
  return async (event) => {
    await Promise.all([webhooks(event), chat(event)]);
  };
}
