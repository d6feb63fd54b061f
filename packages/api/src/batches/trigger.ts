import { KilnError } from "@kiln/shared";

import { type BatchDeps, pumpAll } from "./batch-service.js";
import { manifestSchema } from "./manifest.js";
import { batchKeys, readJson } from "./run-record.js";
import { fireManifest, type FireResult, nextFires, schedulerTick, type StoredManifest } from "./schedule.js";
import { emitWarmup, type WarmupResult } from "./warmup.js";

/**
 * What a scheduler sends the trigger handler. EventBridge Scheduler (AWS) sends `fire` from one
 * schedule per stored manifest and `warmup` from its warm-up schedule (batches/manifest-schedules.ts),
 * with `scheduled_time` filled from `<aws.scheduler.scheduled-time>`, and `pump` every minute from
 * one rate schedule; `tick` fires and pumps from the stored manifests (the embedded scheduler's
 * own loop, or an operator's single rule where per-manifest schedules are not wanted).
 */
export type BatchTriggerEvent =
  | { kind: "fire"; key_id: string; manifest_id: string; scheduled_time: string }
  | { kind: "warmup"; key_id: string; manifest_id: string; scheduled_time: string }
  | { kind: "pump" }
  | { kind: "tick"; time?: string };

function scheduledEvent(event: { key_id?: string; manifest_id?: string; scheduled_time?: string }, kind: string): Date {
  const at = new Date(event.scheduled_time ?? "");
  if (Number.isNaN(at.getTime()) || !event.key_id || !event.manifest_id) {
    throw new KilnError(
      "trigger_invalid",
      `A ${kind} event needs key_id, manifest_id and scheduled_time (ISO 8601; EventBridge Scheduler's <aws.scheduler.scheduled-time>).`,
    );
  }
  return at;
}

export async function handleBatchTrigger(
  deps: BatchDeps,
  event: BatchTriggerEvent,
): Promise<{ fired: FireResult[]; warmups?: WarmupResult[] }> {
  switch (event?.kind) {
    case "fire": {
      const at = scheduledEvent(event, "fire");
      const fired = await fireManifest(deps, event.key_id, event.manifest_id, at);
      // A schedule outliving its manifest (a DELETE whose schedule removal failed) removes itself.
      if (fired.error === "the manifest was deleted") await deps.schedules?.remove(event.key_id, event.manifest_id);
      await pumpAll(deps);
      return { fired: [fired] };
    }
    case "warmup": {
      const at = scheduledEvent(event, "warmup");
      const stored = await readJson<StoredManifest>(
        deps.ports.blobs,
        batchKeys.manifest(event.key_id, event.manifest_id),
      );
      const schedule = stored ? manifestSchema.parse(stored.manifest).schedule : undefined;
      if (!schedule) {
        await deps.schedules?.remove(event.key_id, event.manifest_id);
        return { fired: [], warmups: [] };
      }
      // The fire this warm-up precedes: the schedule's next after the warm-up's own time.
      const [fireAt] = nextFires(schedule, at, 1);
      if (!fireAt) return { fired: [], warmups: [] };
      return { fired: [], warmups: [await emitWarmup(deps, event.key_id, event.manifest_id, fireAt)] };
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
