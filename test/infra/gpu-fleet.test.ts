/**
 * The raw-Pulumi GPU fleet (infra/fleet/gpu-fleet.ts) built under Pulumi's unit-test mocks: no
 * cloud, no engine; every resource's inputs are recorded and checked as the deployment would
 * send them.
 */
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";

import * as pulumi from "@pulumi/pulumi";

import { overlyBroad, type Statement } from "../../infra/plan/iam.js";
import { kilnQueueSpecs, planQueues } from "../../infra/plan/queues.js";
import { DEFAULT_FLEET, SPOT_NOTICE_SECONDS } from "../../infra/plan/scaling.js";

interface Recorded {
  type: string;
  name: string;
  inputs: Record<string, any>;
}
const recorded: Recorded[] = [];

await pulumi.runtime.setMocks(
  {
    newResource(args) {
      recorded.push({ type: args.type, name: args.name, inputs: args.inputs });
      const arn = `arn:aws:mock:us-east-1:123456789012:${args.name}`;
      return {
        id: `${args.name}-id`,
        state: { ...args.inputs, arn, name: args.inputs.name ?? args.name, repositoryUrl: `123.dkr.ecr/${args.name}` },
      };
    },
    call(args) {
      if (args.token === "aws:ssm/getParameter:getParameter")
        return { ...args.inputs, value: "ami-0gpu", type: "String" };
      if (args.token === "aws:index/getRegion:getRegion")
        return { name: "us-east-1", region: "us-east-1", id: "us-east-1" };
      return args.inputs;
    },
  },
  "kiln",
  "test",
  false,
);

const settled = <T>(o: pulumi.Output<T>) => new Promise<T>((resolve) => o.apply(resolve));
const one = (type: string) => {
  const found = recorded.filter((r) => r.type === type);
  assert.equal(found.length, 1, `one ${type}, got ${found.length}`);
  return found[0]!;
};

describe("GPU fleet resource graph (Pulumi mocks)", { timeout: 120_000 }, () => {
  const plans = planQueues(kilnQueueSpecs());

  before(async () => {
    const { createGpuFleet } = await import("../../infra/fleet/gpu-fleet.js");
    const fleet = createGpuFleet({
      stage: "test",
      vpcId: "vpc-1",
      privateSubnetIds: ["subnet-a", "subnet-b"],
      queues: plans.map((plan) => ({
        plan,
        url: `https://sqs.us-east-1.amazonaws.com/123/${plan.name}`,
        arn: `arn:aws:sqs:us-east-1:123:${plan.name}`,
        queueName: plan.name,
        dlqUrl: `https://sqs.us-east-1.amazonaws.com/123/${plan.name}-dlq`,
        dlqArn: `arn:aws:sqs:us-east-1:123:${plan.name}-dlq`,
      })),
      bucket: { name: "kiln-bucket", arn: "arn:aws:s3:::kiln-bucket" },
      table: { name: "kiln-table", arn: "arn:aws:dynamodb:us-east-1:123:table/kiln-table" },
      settings: DEFAULT_FLEET,
      imageTag: "v1",
      modelsPrefix: "s3://kiln-bucket/models",
    });
    await Promise.all([
      settled(fleet.wakeAlarm.id),
      settled(fleet.backlogPolicy.id),
      settled(fleet.taskDefinition.id),
      settled(fleet.instanceRole.id),
      settled(fleet.launchTemplate.id),
    ]);
  });

  it("runs each task on one GPU, stopping within the spot notice", () => {
    const [container] = JSON.parse(one("aws:ecs/taskDefinition:TaskDefinition").inputs.containerDefinitions);
    assert.deepEqual(container.resourceRequirements, [{ type: "GPU", value: "1" }]);
    assert.ok(container.stopTimeout <= SPOT_NOTICE_SECONDS);
    const env = Object.fromEntries(
      container.environment.map((e: { name: string; value: string }) => [e.name, e.value]),
    );
    assert.ok(Number(env.KILN_DRAIN_SECONDS) < container.stopTimeout);
    assert.equal(env.KILN_VISIBILITY_SECONDS, String(plans.find((p) => p.name === "kiln-base")!.visibilitySeconds));
    for (const plan of plans) {
      assert.ok(env[`SST_RESOURCE_${plan.link}`], `the worker is linked to ${plan.name}`);
      assert.ok(env[`SST_RESOURCE_${plan.dlqLink}`], `the worker is linked to ${plan.name}-dlq`);
    }
    assert.equal(container.image, "123.dkr.ecr/KilnWorkerImage:v1");
  });

  it("lets the auto-scaling group reach zero instances, mixing on-demand and spot types", () => {
    const asg = one("aws:autoscaling/group:Group").inputs;
    assert.equal(asg.minSize, 0);
    assert.equal(asg.maxSize, DEFAULT_FLEET.maxWorkers);
    assert.equal(asg.capacityRebalance, true);
    const mix = asg.mixedInstancesPolicy;
    assert.equal(mix.instancesDistribution.onDemandBaseCapacity, DEFAULT_FLEET.onDemandBase);
    assert.deepEqual(
      mix.launchTemplate.overrides.map((o: { instanceType: string }) => o.instanceType),
      DEFAULT_FLEET.instanceTypes,
    );
    const provider = one("aws:ecs/capacityProvider:CapacityProvider").inputs.autoScalingGroupProvider;
    assert.equal(provider.managedScaling.status, "ENABLED");
    assert.equal(provider.managedTerminationProtection, "ENABLED");
  });

  it("drains on the spot interruption notice", () => {
    const userData = Buffer.from(one("aws:ec2/launchTemplate:LaunchTemplate").inputs.userData, "base64").toString();
    assert.match(userData, /ECS_ENABLE_SPOT_INSTANCE_DRAINING=true/);
    assert.match(userData, /ECS_ENABLE_GPU_SUPPORT=true/);
  });

  it("scales the service from zero on backlog per running worker", () => {
    const target = one("aws:appautoscaling/target:Target").inputs;
    assert.equal(target.minCapacity, 0);
    const policies = recorded.filter((r) => r.type === "aws:appautoscaling/policy:Policy");
    const tracking = policies.find((p) => p.inputs.policyType === "TargetTrackingScaling")!.inputs;
    const metrics = tracking.targetTrackingScalingPolicyConfiguration.customizedMetricSpecification.metrics;
    const returned = metrics.filter((m: { returnData: boolean }) => m.returnData);
    assert.equal(returned.length, 1);
    assert.match(returned[0].expression, /\/ MAX\(\[workers, 1\]\)$/);
    // Both lanes of every stage kind; outbound queues (webhooks, chat) never scale the GPU fleet.
    // Batch warm-up: its signal queue counts too, so a scheduled run's warm-up starts workers.
    const stageQueues = plans
      .filter((p) => p.role === "stage" || p.role === "batch" || p.role === "warmup")
      .map((p) => p.name);
    assert.ok(stageQueues.includes("kiln-base-batch") && !stageQueues.includes("kiln-chat"));
    assert.ok(stageQueues.includes("kiln-batch-warmup"));
    const measured = metrics
      .filter((m: any) => m.metricStat?.metric.metricName === "ApproximateNumberOfMessagesVisible")
      .map((m: any) => m.metricStat.metric.dimensions[0].value);
    assert.deepEqual(measured.sort(), stageQueues.sort());
    const wake = policies.find((p) => p.inputs.policyType === "StepScaling")!.inputs;
    assert.equal(wake.stepScalingPolicyConfiguration.stepAdjustments[0].scalingAdjustment, 1);
    const alarm = one("aws:cloudwatch/metricAlarm:MetricAlarm").inputs;
    assert.deepEqual(alarm.alarmActions, ["arn:aws:mock:us-east-1:123456789012:KilnWakeFromZero"]);
  });

  it("grants roles no wildcard actions and no '*' resources on data", () => {
    const roles = recorded.filter((r) => r.type === "aws:iam/role:Role");
    const inline = roles.flatMap((r) =>
      (r.inputs.inlinePolicies ?? []).flatMap((p: { policy: string }) => JSON.parse(p.policy).Statement as Statement[]),
    );
    assert.ok(inline.length > 0);
    assert.deepEqual(
      overlyBroad(inline, (r) => r === "*"),
      [],
    );
    const managed = roles.flatMap((r) => r.inputs.managedPolicyArns ?? []);
    assert.ok(!managed.some((a: string) => /S3ReadOnly|S3FullAccess|AdministratorAccess|DynamoDBFullAccess/.test(a)));
  });
});
