import { KilnError } from "@kiln/shared";

import { type BatchDeps, pumpAll } from "./batch-service.js";
import { fireManifest, type FireResult, schedulerTick } from "./schedule.js";

/**
 * What a scheduler sends the trigger handler. EventBridge Scheduler (AWS) sends `fire` from one
 * schedule per stored manifest, with `scheduled_time` filled from `<aws.scheduler.scheduled-time>`,
 * and `pump` every minute from one rate schedule; `tick` does both from the stored manifests (a
 * single cron rule, or the embedded scheduler's own loop).
 */
export type BatchTriggerEvent =
  | { kind: "fire"; key_id: string; manifest_id: string; scheduled_time: string }
  | { kind: "pump" }
  | { kind: "tick"; time?: string };

export async function handleBatchTrigger(deps: BatchDeps, event: BatchTriggerEvent): Promise<{ fired: FireResult[] }> {
  switch (event?.kind) {
    case "fire": {
      const at = new Date(event.scheduled_time);
      if (Number.isNaN(at.getTime()) || !event.key_id || !event.manifest_id) {
        throw new KilnError(
          "trigger_invalid",
          "A fire event needs key_id, manifest_id and scheduled_time (ISO 8601; EventBridge Scheduler's <aws.scheduler.scheduled-time>).",
        );
      }
      const fired = await fireManifest(deps, event.key_id, event.manifest_id, at);
      await pumpAll(deps);
      return { fired: [fired] };
    }
    case "pump":
      await pumpAll(deps);
      return { fired: [] };
    case "tick":
      return { fired: await schedulerTick(deps, event.time ? new Date(event.time) : undefined) };
    default:
      throw new KilnError("trigger_invalid", `Unknown batch trigger event ${JSON.stringify(event)?.slice(0, 200)}.`);
  }
}
