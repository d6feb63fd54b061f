import {
  ConflictException,
  CreateScheduleCommand,
  DeleteScheduleCommand,
  ResourceNotFoundException,
  SchedulerClient,
  UpdateScheduleCommand,
} from "@aws-sdk/client-scheduler";
import { type KilnConfig, KilnError } from "@kiln/shared";

import { toEventBridgeCron, warmupEventBridgeCron } from "../batches/eventbridge-cron.js";
import type { Manifest } from "../batches/manifest.js";
import {
  type ManifestSchedules,
  manifestScheduleSpecs,
  scheduleNames,
  type ScheduleSpec,
} from "../batches/manifest-schedules.js";

export interface EventBridgeSchedulesOptions {
  /** The schedule group Kiln's schedules live in (infra/schedules.ts; KILN_BATCH_SCHEDULE_GROUP). */
  group: string;
  /** The role EventBridge Scheduler assumes to invoke the trigger (KILN_BATCH_SCHEDULER_ROLE_ARN). */
  roleArn: string;
  /** The batch trigger function (KILN_BATCH_TRIGGER_ARN). */
  targetArn: string;
  region: string;
  /** A stand-in's URL in tests (KILN_SCHEDULER_ENDPOINT). */
  endpoint?: string;
  client?: SchedulerClient;
}

/**
 * Per-manifest schedules on EventBridge Scheduler through the AWS SDK: cron in the manifest's time
 * zone, invoking the batch trigger with `{"kind":"fire",…}` (and `{"kind":"warmup",…}` ahead of
 * it), retried by the scheduler for up to an hour. A create that finds the schedule replaces it, so
 * a repeated PUT converges; a delete of a missing schedule is done.
 */
export class EventBridgeManifestSchedules implements ManifestSchedules {
  private readonly client: SchedulerClient;

  constructor(private readonly options: EventBridgeSchedulesOptions) {
    this.client =
      options.client ??
      new SchedulerClient({
        region: options.region,
        ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      });
  }

  check(manifest: Manifest) {
    const schedule = manifest.schedule;
    if (!schedule) return undefined;
    const fire = toEventBridgeCron(schedule.cron);
    if ("error" in fire) return { field: "$.schedule.cron", message: `schedule.cron: ${fire.error}` };
    if (schedule.warmup_minutes) {
      const warm = warmupEventBridgeCron(schedule.cron, schedule.warmup_minutes);
      if ("error" in warm) return { field: "$.schedule.warmup_minutes", message: warm.error };
    }
    return undefined;
  }

  async sync(ownerKeyId: string, manifest: Manifest): Promise<void> {
    const planned = await manifestScheduleSpecs(ownerKeyId, manifest);
    if ("issue" in planned) throw new KilnError("manifest_invalid", planned.issue.message, { status: 400 });
    const names = await scheduleNames(ownerKeyId, manifest.id);
    for (const spec of planned.specs) await this.upsert(spec);
    const kept = new Set(planned.specs.map((s) => s.name));
    for (const name of [names.fire, names.warmup]) if (!kept.has(name)) await this.delete(name);
  }

  async remove(ownerKeyId: string, manifestId: string): Promise<void> {
    const names = await scheduleNames(ownerKeyId, manifestId);
    await this.delete(names.warmup);
    await this.delete(names.fire);
  }

  private request(spec: ScheduleSpec) {
    return {
      Name: spec.name,
      GroupName: this.options.group,
      ScheduleExpression: spec.expression,
      ScheduleExpressionTimezone: spec.timezone,
      Description: spec.description.slice(0, 512),
      State: "ENABLED" as const,
      FlexibleTimeWindow: { Mode: "OFF" as const },
      Target: {
        Arn: this.options.targetArn,
        RoleArn: this.options.roleArn,
        Input: JSON.stringify(spec.input),
        // A fire a little late beats no fire; after an hour the next one is nearer.
        RetryPolicy: { MaximumEventAgeInSeconds: 3600, MaximumRetryAttempts: 20 },
      },
    };
  }

  private async upsert(spec: ScheduleSpec): Promise<void> {
    try {
      await this.client.send(new CreateScheduleCommand(this.request(spec)));
    } catch (e) {
      if (!(e instanceof ConflictException)) throw unavailable(e);
      try {
        await this.client.send(new UpdateScheduleCommand(this.request(spec)));
      } catch (e2) {
        throw unavailable(e2);
      }
    }
  }

  private async delete(name: string): Promise<void> {
    try {
      await this.client.send(new DeleteScheduleCommand({ Name: name, GroupName: this.options.group }));
    } catch (e) {
      if (!(e instanceof ResourceNotFoundException)) throw unavailable(e);
    }
  }
}

/** The EventBridge schedules of the configuration, or undefined when they are not configured. */
export function eventBridgeSchedulesFromConfig(config: KilnConfig): EventBridgeManifestSchedules | undefined {
  const eb = config.batches.eventBridge;
  if (!eb) return undefined;
  return new EventBridgeManifestSchedules({
    group: eb.group,
    roleArn: eb.roleArn,
    targetArn: eb.triggerArn,
    region: config.aws.region,
    endpoint: eb.endpoint,
  });
}

function unavailable(e: unknown): KilnError {
  return new KilnError(
    "schedule_unavailable",
    `EventBridge Scheduler did not take the manifest's schedule (${(e as Error).name}: ${(e as Error).message}); nothing was changed — send the request again.`,
    { status: 503, retryable: true, cause: e },
  );
}
