/**
 * Batch schedules on EventBridge Scheduler: one schedule group for Kiln's per-manifest schedules
 * (created, replaced and deleted by the API on PUT/DELETE /v1/manifests), the batch trigger
 * function they invoke (`{"kind":"fire"|"warmup",…}`), a role the scheduler assumes to invoke it
 * and nothing else, a one-minute `{"kind":"pump"}` schedule that advances unfinished runs, and the
 * statements the API needs to manage schedules in that group only (infra/plan/iam.ts).
 */
import { apiEnvironment } from "./environment";
import { asSstPermissions, dataArns } from "./permissions";
import { batchScheduleStatements, batchTriggerStatements, schedulerInvokeStatements } from "./plan/iam";
import { queues } from "./queues";
import { urlSecret } from "./secrets";

const group = new aws.scheduler.ScheduleGroup("KilnBatchSchedules", {});
const groupSchedules = $interpolate`arn:aws:scheduler:${aws.getRegionOutput().name}:${aws.getCallerIdentityOutput().accountId}:schedule/${group.name}/*`;
// The role's ARN is built from its name so the trigger's own settings need not wait for the role.
const roleName = $interpolate`kiln-batch-scheduler-${$app.stage}`;
const roleArn = $interpolate`arn:aws:iam::${aws.getCallerIdentityOutput().accountId}:role/${roleName}`;
// Likewise the trigger's: named, so its own settings can carry its ARN.
const triggerName = $interpolate`kiln-batch-trigger-${$app.stage}`;
const triggerArn = $interpolate`arn:aws:lambda:${aws.getRegionOutput().name}:${aws.getCallerIdentityOutput().accountId}:function:${triggerName}`;
const warmupQueue = queues.find((q) => q.plan.role === "warmup")!.queue.arn;
const scheduleSettings = {
  KILN_BATCH_SCHEDULE_GROUP: group.name,
  KILN_BATCH_SCHEDULER_ROLE_ARN: roleArn,
  KILN_BATCH_TRIGGER_ARN: triggerArn,
};

/** Fires, warm-ups and pumps; finishes runs (contact sheets with sharp, notifications). */
export const batchTrigger = new sst.aws.Function("KilnBatchTrigger", {
  handler: "packages/api/src/entry/batch-trigger.handler",
  runtime: "nodejs20.x",
  architecture: "x86_64",
  memory: "1024 MB",
  timeout: "5 minutes",
  link: [urlSecret],
  nodejs: { install: ["sharp"] },
  permissions: asSstPermissions([
    ...batchTriggerStatements({ ...dataArns, warmupQueue }),
    ...batchScheduleStatements<$util.Input<string>>({ scheduleGroupSchedules: groupSchedules, schedulerRole: roleArn }),
  ]),
  environment: {
    ...apiEnvironment,
    KILN_URL_SECRET: urlSecret.value,
    // The trigger removes a schedule whose manifest is gone (batches/trigger.ts).
    ...scheduleSettings,
  },
  transform: { function: { name: triggerName } },
});

const role = new aws.iam.Role("KilnBatchSchedulerRole", {
  name: roleName,
  assumeRolePolicy: aws.iam.assumeRolePolicyForPrincipal({ Service: "scheduler.amazonaws.com" }),
  inlinePolicies: [
    {
      name: "kiln-batch-trigger-invoke",
      policy: $jsonStringify({
        Version: "2012-10-17",
        Statement: schedulerInvokeStatements({ triggerFunction: batchTrigger.arn }),
      }),
    },
  ],
});

// Advances unfinished runs (feeds the batch lane within each key's window, finishes ended runs).
new aws.scheduler.Schedule("KilnBatchPump", {
  groupName: group.name,
  scheduleExpression: "rate(1 minute)",
  flexibleTimeWindow: { mode: "OFF" },
  target: { arn: batchTrigger.arn, roleArn: role.arn, input: JSON.stringify({ kind: "pump" }) },
});

export const batchSchedules = {
  group,
  role,
  trigger: batchTrigger,
  apiStatements: batchScheduleStatements<$util.Input<string>>({
    scheduleGroupSchedules: groupSchedules,
    schedulerRole: roleArn,
  }),
  /** KILN_* settings for the API: where manifests' schedules go and what they invoke. */
  apiSettings: scheduleSettings,
};
