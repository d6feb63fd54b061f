import { KilnError, loadConfig } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";

import { batchDepsFrom } from "../batches/routes.js";
import { type BatchTriggerEvent, handleBatchTrigger } from "../batches/trigger.js";
import { apiDeps, openAwsPortsFromConfig } from "./api-deps.js";

/**
 * The batch trigger as a Lambda handler for EventBridge Scheduler: the event is the schedule's
 * input (`{"kind":"fire",…}`, `{"kind":"pump"}` or `{"kind":"tick"}`; see batches/trigger.ts). A retried
 * or doubled invocation is harmless: a fire's run id derives from the manifest and scheduled time.
 */
let cached: ((event: BatchTriggerEvent) => Promise<unknown>) | undefined;

export function createBatchTriggerHandler(env: Record<string, string | undefined> = process.env) {
  const config = loadConfig(env);
  if (config.backend !== "aws") {
    throw new KilnError("config_invalid", "The batch trigger handler runs on the AWS family: set KILN_BACKEND=aws.");
  }
  const logger = createLogger({ level: config.logLevel, name: "kiln-batch-trigger" });
  const deps = apiDeps(config, openAwsPortsFromConfig(config), (level, obj, msg) => logger[level](obj, msg));
  const batch = batchDepsFrom(deps, deps.batches);
  return async (event: BatchTriggerEvent) => {
    const result = await handleBatchTrigger(batch, event);
    logger.info({ event, fired: result.fired }, "batch trigger handled");
    return result;
  };
}

export const handler = (event: BatchTriggerEvent) => {
  cached ??= createBatchTriggerHandler();
  return cached(event);
};
