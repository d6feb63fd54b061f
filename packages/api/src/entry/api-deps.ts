import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

import { DEFAULT_RENDER_LIMITS, type KilnConfig, type Ports } from "@kiln/shared";
import { awsPortsOptionsFromConfig, openAwsPorts } from "@kiln/shared/aws";
import { verifyDownloadSignature } from "@kiln/shared/signed-url";

import type { ApiDeps } from "../deps.js";
import { webhookEventSink } from "../outbound/webhooks/events.js";
import { resolveHostAddresses } from "./webhook-dispatcher.js";

/**
 * API settings and AWS ports from Kiln's configuration, for every Node-based host of the API
 * (`kiln api`/`kiln start`, the Lambda handler). Node-only (files, node:crypto), so it lives at
 * the edge, not in the API core; the local family's ports are in open-ports.ts, so a Lambda
 * bundle need not carry better-sqlite3.
 */

/** The local family signs download URLs with a per-data-dir secret unless one is configured. */
export function localUrlSecret(config: KilnConfig): string {
  if (config.urlSecret) return config.urlSecret;
  const file = path.join(config.dataDir, "url-secret");
  if (!fs.existsSync(file)) {
    fs.mkdirSync(config.dataDir, { recursive: true });
    try {
      fs.writeFileSync(file, randomBytes(32).toString("hex"), { mode: 0o600, flag: "wx" });
    } catch (e) {
      // Another process sharing the data dir wrote it first; use theirs.
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
  }
  return fs.readFileSync(file, "utf8").trim();
}

export function openAwsPortsFromConfig(config: KilnConfig): Ports {
  return openAwsPorts(awsPortsOptionsFromConfig(config));
}

export function apiDeps(config: KilnConfig, ports: Ports, log?: ApiDeps["log"]): ApiDeps {
  const secret = config.backend === "local" ? localUrlSecret(config) : undefined;
  return {
    ports,
    publicUrl: config.publicUrl,
    limits: {
      ...DEFAULT_RENDER_LIMITS,
      minSide: config.limits.minSide,
      maxSide: config.limits.maxSide,
      maxPixels: config.limits.maxPixels,
      maxRetentionHours: config.limits.maxRetentionHours,
    },
    maxBodyBytes: config.limits.maxBodyBytes,
    downloadUrlSeconds: config.downloadUrlSeconds,
    retentionHours: config.retentionHours,
    serveFiles: secret
      ? { verify: (key, expires, sig) => verifyDownloadSignature(key, expires, sig, secret, Date.now()) }
      : undefined,
    keyLimits: config.keyLimits,
    webhooks: {
      allowPrivate: config.webhooks.allowPrivate,
      allowedHosts: config.webhooks.allowedHosts,
      resolveHost: resolveHostAddresses,
    },
    events: webhookEventSinkFromConfig(config, ports, log),
    log,
  };
}

/** Enqueues webhook deliveries for job events (API-side moves, and the worker's via the CLI). */
export function webhookEventSinkFromConfig(config: KilnConfig, ports: Ports, log?: ApiDeps["log"]) {
  return webhookEventSink({
    queue: ports.queue,
    blobs: ports.blobs,
    publicUrl: config.publicUrl,
    downloadUrlSeconds: config.downloadUrlSeconds,
    log,
  });
}
