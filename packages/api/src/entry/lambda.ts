import { KilnError, loadConfig } from "@kiln/shared";
import { awsPortsOptionsFromConfig, openAwsPorts } from "@kiln/shared/aws";
import { createLogger } from "@kiln/shared/node";
import { handle, type LambdaContext, type LambdaEvent } from "hono/aws-lambda";

import { createApp } from "../app.js";
import { chatStatus } from "../channels/core/chat-deps.js";
import type { ApiTiming } from "../deps.js";
import { resolveHostAddresses } from "../outbound/webhooks/dispatcher.js";
import { apiDepsFromConfig } from "./config-deps.js";

/**
 * API Gateway HTTP APIs end an integration after 30 s, so waits stop short of it; a Function URL
 * allows up to the function's timeout, but one setting for both keeps behaviour predictable.
 * Event streams end under it too, and clients resume with Last-Event-ID (responses are buffered:
 * `handle` does not stream, so on Lambda an event stream arrives as one batch per connection).
 */
export const LAMBDA_TIMING: Partial<ApiTiming> = {
  preferWaitCapSeconds: 25,
  syncWaitSeconds: 25,
  eventStreamSeconds: 20,
};

export type LambdaHandler = (event: LambdaEvent, context?: LambdaContext) => Promise<unknown>;

/**
 * Kiln's API as a Lambda handler for API Gateway (REST v1 and HTTP v2 payloads) and Function URLs,
 * on the AWS family built from `KILN_*` environment variables. Without KILN_PUBLIC_URL, links
 * use the domain each request arrived at.
 */
export function createLambdaHandler(
  env: Record<string, string | undefined> = process.env,
  timing: Partial<ApiTiming> = LAMBDA_TIMING,
): LambdaHandler {
  const config = loadConfig(env);
  if (config.backend !== "aws") {
    throw new KilnError(
      "config_invalid",
      "The Lambda handler runs on the AWS family: set KILN_BACKEND=aws with KILN_BUCKET and KILN_TABLE.",
    );
  }
  const logger = createLogger({ level: config.logLevel, name: "kiln-api" });
  // Built from the Web-standard part of the deps (not api-deps.ts): this function never finishes batch runs,
  // so it carries no contact-sheet maker and no native module (sharp) in its bundle.
  const deps = apiDepsFromConfig(config, openAwsPorts(awsPortsOptionsFromConfig(config)), {
    resolveHost: resolveHostAddresses,
    log: (level, obj, msg) => logger[level](obj, msg),
  });
  // Chat channels: say at start-up which bots answer, or which variables they miss.
  const chat = chatStatus(config.chat);
  logger.info({ bot: "discord" }, `Discord bot ${chat.discord}`);
  logger.info({ bot: "slack" }, `Slack bot ${chat.slack}`);
  const app = createApp({ ...deps, publicUrl: env.KILN_PUBLIC_URL ? config.publicUrl : "", timing });
  return handle(app);
}

let cached: LambdaHandler | undefined;

/** The function's handler: the app and its SDK clients are built once per Lambda instance. */
export const handler: LambdaHandler = (event, context) => {
  cached ??= createLambdaHandler();
  return cached(event, context);
};
