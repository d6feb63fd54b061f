import { sha256Hex } from "@kiln/shared";

import { toEventBridgeCron, warmupEventBridgeCron } from "./eventbridge-cron.js";
import type { Manifest, ManifestIssue } from "./manifest.js";
import type { BatchTriggerEvent } from "./trigger.js";

/**
 * Where a stored manifest's schedule lives when it is not the in-process tick: on AWS, one
 * EventBridge Scheduler schedule per manifest (and one for its warm-up), created, replaced and
 * deleted with the manifest (`PUT`/`DELETE /v1/manifests/{id}`).
 */
export interface ManifestSchedules {
  /** What keeps this manifest's schedule from being kept here (checked at PUT before anything is stored). */
  check(manifest: Manifest): ManifestIssue | undefined;
  /** Makes the manifest's schedules match it: creates or replaces them, or removes them when it has none. */
  sync(ownerKeyId: string, manifest: Manifest): Promise<void>;
  remove(ownerKeyId: string, manifestId: string): Promise<void>;
}

/** One schedule as Kiln asks EventBridge Scheduler for it. */
export interface ScheduleSpec {
  name: string;
  expression: string;
  timezone: string;
  description: string;
  /** The trigger's event (batches/trigger.ts), with EventBridge's fire time filled in by the scheduler. */
  input: BatchTriggerEvent;
}

/** EventBridge's context attribute for the time a schedule was due (ISO 8601, UTC). */
export const SCHEDULED_TIME = "<aws.scheduler.scheduled-time>";

/**
 * Schedule names are at most 64 of `[0-9a-zA-Z-_.]`: a key id and a 64-character manifest id do
 * not fit, so the name is a digest of both (and the description says which manifest it is).
 */
export async function scheduleNames(ownerKeyId: string, manifestId: string) {
  const digest = (await sha256Hex(`${ownerKeyId}\n${manifestId}`)).slice(0, 40);
  return { fire: `kiln-${digest}`, warmup: `kiln-${digest}-warmup` };
}

/** The schedules a manifest needs (none without a schedule), or the issue that prevents them. */
export async function manifestScheduleSpecs(
  ownerKeyId: string,
  manifest: Manifest,
): Promise<{ specs: ScheduleSpec[] } | { issue: ManifestIssue }> {
  const schedule = manifest.schedule;
  if (!schedule) return { specs: [] };
  const names = await scheduleNames(ownerKeyId, manifest.id);
  const fire = toEventBridgeCron(schedule.cron);
  if ("error" in fire) return { issue: { field: "$.schedule.cron", message: `schedule.cron: ${fire.error}` } };
  const base = { key_id: ownerKeyId, manifest_id: manifest.id, scheduled_time: SCHEDULED_TIME };
  const specs: ScheduleSpec[] = [
    {
      name: names.fire,
      expression: fire.expression,
      timezone: schedule.timezone,
      description: `Kiln batch manifest ${manifest.id} of key ${ownerKeyId}`,
      input: { kind: "fire", ...base },
    },
  ];
  if (schedule.warmup_minutes) {
    const warm = warmupEventBridgeCron(schedule.cron, schedule.warmup_minutes);
    if ("error" in warm) return { issue: { field: "$.schedule.warmup_minutes", message: warm.error } };
    specs.push({
      name: names.warmup,
      expression: warm.expression,
      timezone: schedule.timezone,
      description: `Kiln batch manifest ${manifest.id} of key ${ownerKeyId}: warm-up ${schedule.warmup_minutes} min ahead`,
      input: { kind: "warmup", ...base },
    });
  }
  return { specs };
}
