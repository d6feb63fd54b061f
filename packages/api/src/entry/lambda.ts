import { handle, type LambdaContext, type LambdaEvent } from "hono/aws-lambda";
import { KilnError, loadConfig } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import { createApp } from "../app.js";
import type { ApiTiming } from "../deps.js";
import { apiDeps, openAwsPortsFromConfig } from "./api-deps.js";

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
  const deps = apiDeps(config, openAwsPortsFromConfig(config), (level, obj, msg) => logger[level](obj, msg));
  const app = createApp({ ...deps, publicUrl: config.explicitPublicUrl ?? "", timing });
  return handle(app);
}

let cached: LambdaHandler | undefined;

/** The function's handler: the app and its SDK clients are built once per Lambda instance. */
export const handler: LambdaHandler = (event, context) => {
  cached ??= createLambdaHandler();
  return cached(event, context);
};
