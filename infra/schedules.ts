/**
 * Batch schedules on EventBridge Scheduler: one schedule group for Kiln's batch runs, a role the
 * scheduler assumes to start one (send to the batch lane, or invoke a function), and the statements
 * the API needs to manage schedules in that group only (infra/plan/iam.ts).
 */
import { batchScheduleStatements, schedulerInvokeStatements } from "./plan/iam";
import { queues } from "./queues";

const group = new aws.scheduler.ScheduleGroup("KilnBatchSchedules", {});

const batchQueueArns = queues.filter((q) => q.plan.role === "batch").map((q) => q.queue.arn);
// Until the batch lane exists, scheduled runs enter through the stage-0 queue.
const targets = batchQueueArns.length
  ? batchQueueArns
  : queues.filter((q) => q.plan.name === "kiln-base").map((q) => q.queue.arn);

const role = new aws.iam.Role("KilnBatchSchedulerRole", {
  assumeRolePolicy: aws.iam.assumeRolePolicyForPrincipal({ Service: "scheduler.amazonaws.com" }),
  inlinePolicies: [
    {
      name: "kiln-batch-start",
      policy: $jsonStringify({ Version: "2012-10-17", Statement: schedulerInvokeStatements({ batchQueues: targets }) }),
    },
  ],
});

export const batchSchedules = {
  group,
  role,
  apiStatements: batchScheduleStatements<$util.Input<string>>({
    scheduleGroupSchedules: $interpolate`arn:aws:scheduler:${aws.getRegionOutput().name}:${aws.getCallerIdentityOutput().accountId}:schedule/${group.name}/*`,
    schedulerRole: role.arn,
  }),
};
