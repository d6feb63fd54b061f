import { KilnError, loadConfig } from "@kiln/shared";
import { awsPortsOptionsFromConfig, openAwsPorts } from "@kiln/shared/aws";
import { createLogger } from "@kiln/shared/node";
import { handle, type LambdaContext, type LambdaEvent, streamHandle } from "hono/aws-lambda";

import { createApp } from "../app.js";
import { chatStatus } from "../channels/core/chat-deps.js";
import type { ApiTiming } from "../deps.js";
import { apiDepsFromConfig } from "./config-deps.js";
import { eventBridgeSchedulesFromConfig } from "./eventbridge-schedules.js";
import { resolveHostAddresses } from "./webhook-dispatcher.js";

/**
 * API Gateway HTTP APIs end an integration after 30 s, so waits stop short of it; a Function URL
 * allows up to the function's timeout, but one setting for both keeps behaviour predictable.
 * Event streams end under it too, and clients resume with Last-Event-ID. Through `handler`
 * (buffered) an event stream arrives as one batch per connection; through `streamHandler` (a
 * Function URL with response streaming) each event arrives as it happens.
 */
export const LAMBDA_TIMING: Partial<ApiTiming> = {
  preferWaitCapSeconds: 25,
  syncWaitSeconds: 25,
  eventStreamSeconds: 20,
};

export type LambdaHandler = (event: LambdaEvent, context?: LambdaContext) => Promise<unknown>;

/**
 * Kiln's API as a buffered Lambda handler for API Gateway (REST v1 and HTTP v2 payloads) and
 * Function URLs, on the AWS family built from `KILN_*` environment variables. Without
 * KILN_PUBLIC_URL, links use the domain each request arrived at.
 */
export function createLambdaHandler(
  env: Record<string, string | undefined> = process.env,
  timing: Partial<ApiTiming> = LAMBDA_TIMING,
): LambdaHandler {
  return handle(createLambdaApp(env, timing));
}

/**
 * The same API for a Function URL in RESPONSE_STREAM mode (`hono/aws-lambda`'s `streamHandle`):
 * responses, event streams above all, are written as they are produced. Needs the Lambda Node
 * runtime's `awslambda` global (`streamifyResponse`, `HttpResponseStream`); API Gateway cannot
 * stream, so it keeps `handler`.
 */
export function createLambdaStreamHandler(
  env: Record<string, string | undefined> = process.env,
  timing: Partial<ApiTiming> = LAMBDA_TIMING,
): LambdaStreamHandler {
  // The runtime's streamifyResponse marks and returns the (event, responseStream, context) function;
  // hono types the result as a plain handler.
  return streamHandle(createLambdaApp(env, timing)) as unknown as LambdaStreamHandler;
}

/** What `awslambda.streamifyResponse` wraps: the runtime passes a writable response stream. */
export type LambdaStreamHandler = (
  event: LambdaEvent,
  responseStream: NodeJS.WritableStream,
  context?: LambdaContext,
) => Promise<void>;

function createLambdaApp(env: Record<string, string | undefined>, timing: Partial<ApiTiming>) {
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
    // Batch schedules: PUT/DELETE /v1/manifests keep each manifest's EventBridge schedule.
    manifestSchedules: eventBridgeSchedulesFromConfig(config),
  });
  // Chat channels: say at start-up which bots answer, or which variables they miss.
  const chat = chatStatus(config.chat);
  logger.info({ bot: "discord" }, `Discord bot ${chat.discord}`);
  logger.info({ bot: "slack" }, `Slack bot ${chat.slack}`);
  return createApp({ ...deps, publicUrl: config.explicitPublicUrl ?? "", timing });
}

let cached: LambdaHandler | undefined;

/** The function's handler: the app and its SDK clients are built once per Lambda instance. */
export const handler: LambdaHandler = (event, context) => {
  cached ??= createLambdaHandler();
  return cached(event, context);
};

/**
 * The streaming function's handler (`packages/api/src/entry/lambda.streamHandler`, SST
 * `streaming: true`). The runtime reads the streaming mark at load, so it is made when the module
 * loads — only where the runtime's `awslambda.streamifyResponse` exists (the AWS SDK itself leaves an
 * empty `awslambda` object on every host); elsewhere it is undefined.
 */
export const streamHandler: LambdaStreamHandler | undefined =
  typeof (globalThis as { awslambda?: { streamifyResponse?: unknown } }).awslambda?.streamifyResponse === "function"
    ? createLambdaStreamHandler()
    : undefined;
