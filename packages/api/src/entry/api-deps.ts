import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

import type { KilnConfig, Ports } from "@kiln/shared";
import { awsPortsOptionsFromConfig, openAwsPorts } from "@kiln/shared/aws";
import { filePausePoints } from "@kiln/shared/node";

import type { ApiDeps } from "../deps.js";
import { batchChatNotifierFromConfig } from "./chat.js";
import { apiDepsFromConfig, webhookEventSinkFromConfig } from "./config-deps.js";
import { sharpContactSheet } from "./contact-sheet.js";
import { eventBridgeSchedulesFromConfig } from "./eventbridge-schedules.js";
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
  return {
    ...apiDepsFromConfig(config, ports, {
      urlSecret: config.backend === "local" ? localUrlSecret(config) : undefined,
      resolveHost: resolveHostAddresses,
      log,
      contactSheet: sharpContactSheet,
      batchChat: batchChatNotifierFromConfig(config),
      manifestSchedules: eventBridgeSchedulesFromConfig(config),
    }),
    // Crash-safe submit: fault tests hold a submit between its writes (KILN_TEST_HOOKS only).
    ...(config.testHooksDir ? { pause: filePausePoints(config.testHooksDir, "api") } : {}),
  };
}

export { webhookEventSinkFromConfig };
