/**
 * GPU workers as raw Pulumi (SST's Cluster/Service are Fargate-only, and Fargate has no GPUs):
 * ECS on EC2 GPU instances from a mixed-instances auto-scaling group (on-demand base + spot), a
 * capacity provider with managed scaling so ECS starts instances when tasks need them, one GPU per
 * task, and the service's task count following the stage backlog per worker, from zero.
 *
 * Spot interruption → drain: the ECS agent runs with ECS_ENABLE_SPOT_INSTANCE_DRAINING, so the
 * two-minute notice sets the instance DRAINING and ECS stops its task with SIGTERM; the worker
 * stops polling, finishes or releases its stage within KILN_DRAIN_SECONDS, and the task's
 * stopTimeout (drain + 15 s, ≤ 120 s) is when SIGKILL would follow.
 *
 * Only `@pulumi/pulumi` and `@pulumi/aws`: sst.config.ts calls it inside run(), and the offline
 * tests call it under `pulumi.runtime.setMocks`.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";

import { SST_LINKS } from "../../packages/shared/src/sst-links.js";
import { workerTaskStatements } from "../plan/iam.js";
import type { QueuePlan } from "../plan/queues.js";
import {
  backlogPerWorkerExpression,
  type FleetSettings,
  planFleet,
  waitingWithoutWorkerExpression,
} from "../plan/scaling.js";

export interface FleetQueue {
  plan: QueuePlan;
  url: pulumi.Input<string>;
  arn: pulumi.Input<string>;
  /** The SQS queue name (CloudWatch's dimension). */
  queueName: pulumi.Input<string>;
  dlqUrl: pulumi.Input<string>;
  dlqArn: pulumi.Input<string>;
}

export interface GpuFleetArgs {
  stage: string;
  vpcId: pulumi.Input<string>;
  privateSubnetIds: pulumi.Input<pulumi.Input<string>[]>;
  queues: FleetQueue[];
  bucket: { name: pulumi.Input<string>; arn: pulumi.Input<string> };
  table: { name: pulumi.Input<string>; arn: pulumi.Input<string> };
  settings: FleetSettings;
  /** Image tag the service runs; `kiln deploy` pushes `<repository>:<tag>`. */
  imageTag: string;
  /** Where instances sync model folders from at boot (`s3://<bucket>/models`); empty: none. */
  modelsPrefix: pulumi.Input<string>;
}

const HEALTH_PORT = 8788;

export function createGpuFleet(args: GpuFleetArgs) {
  const plan = planFleet(args.settings);
  // Workers read both lanes (batch only when the interactive queues are empty), so both wake and scale the fleet.
  const stageQueues = args.queues.filter((q) => q.plan.role === "stage" || q.plan.role === "batch");
  const longestVisibility = Math.max(...stageQueues.map((q) => q.plan.visibilitySeconds));
  // Batch warm-up: its messages count as waiting stages, so the fleet scales ahead of a scheduled run.
  const scaledQueues = [...stageQueues, ...args.queues.filter((q) => q.plan.role === "warmup")];

  const repository = new aws.ecr.Repository("KilnWorkerImage", {
    forceDelete: args.stage !== "production",
    imageScanningConfiguration: { scanOnPush: true },
  });

  const cluster = new aws.ecs.Cluster("KilnGpuCluster", {
    settings: [{ name: "containerInsights", value: "enabled" }],
  });

  // --- instances ---------------------------------------------------------------------------
  const instanceRole = new aws.iam.Role("KilnGpuInstanceRole", {
    assumeRolePolicy: aws.iam.assumeRolePolicyForPrincipal({ Service: "ec2.amazonaws.com" }),
    managedPolicyArns: [
      "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role",
      "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
    ],
    // Model folders only: read the `models/` prefix of Kiln's bucket at boot.
    inlinePolicies: [
      {
        name: "kiln-models-read",
        policy: pulumi.jsonStringify({
          Version: "2012-10-17",
          Statement: [
            { Effect: "Allow", Action: ["s3:GetObject"], Resource: [pulumi.interpolate`${args.bucket.arn}/models/*`] },
            {
              Effect: "Allow",
              Action: ["s3:ListBucket"],
              Resource: [args.bucket.arn],
              Condition: { StringLike: { "s3:prefix": ["models/*"] } },
            },
          ],
        }),
      },
    ],
  });
  const instanceProfile = new aws.iam.InstanceProfile("KilnGpuInstanceProfile", { role: instanceRole.name });

  const instanceSecurityGroup = new aws.ec2.SecurityGroup("KilnGpuInstances", {
    vpcId: args.vpcId,
    description: "Kiln GPU workers: outbound only (queues, stores, ECR); health is read by the ECS agent on the host.",
    egress: [{ protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"] }],
  });

  const gpuAmi = aws.ssm.getParameterOutput({
    name: "/aws/service/ecs/optimized-ami/amazon-linux-2/gpu/recommended/image_id",
  });

  const userData = pulumi.interpolate`#!/bin/bash
set -euo pipefail
cat >> /etc/ecs/ecs.config <<CONFIG
ECS_CLUSTER=${cluster.name}
ECS_ENABLE_GPU_SUPPORT=true
ECS_ENABLE_SPOT_INSTANCE_DRAINING=true
ECS_CONTAINER_STOP_TIMEOUT=${plan.task.stopTimeoutSeconds}s
CONFIG
mkdir -p /opt/kiln/models /opt/kiln/engine-cache
if [ -n "${args.modelsPrefix}" ]; then aws s3 sync --only-show-errors "${args.modelsPrefix}" /opt/kiln/models; fi
`;

  const launchTemplate = new aws.ec2.LaunchTemplate("KilnGpuLaunchTemplate", {
    imageId: gpuAmi.value,
    iamInstanceProfile: { arn: instanceProfile.arn },
    vpcSecurityGroupIds: [instanceSecurityGroup.id],
    userData: userData.apply((s) => Buffer.from(s).toString("base64")),
    metadataOptions: { httpTokens: "required", httpEndpoint: "enabled", httpPutResponseHopLimit: 2 },
    // SDXL base + refiner ONNX exports are ~20 GB; TensorRT engines add more.
    blockDeviceMappings: [
      {
        deviceName: "/dev/xvda",
        ebs: { volumeSize: 200, volumeType: "gp3", deleteOnTermination: "true", encrypted: "true" },
      },
    ],
  });

  const autoScalingGroup = new aws.autoscaling.Group("KilnGpuInstances", {
    minSize: plan.asg.minSize,
    maxSize: plan.asg.maxSize,
    vpcZoneIdentifiers: args.privateSubnetIds,
    capacityRebalance: plan.asg.capacityRebalance,
    mixedInstancesPolicy: {
      instancesDistribution: {
        onDemandBaseCapacity: plan.asg.onDemandBaseCapacity,
        onDemandPercentageAboveBaseCapacity: plan.asg.onDemandPercentageAboveBaseCapacity,
        spotAllocationStrategy: plan.asg.spotAllocationStrategy,
      },
      launchTemplate: {
        launchTemplateSpecification: { launchTemplateId: launchTemplate.id, version: "$Latest" },
        overrides: plan.asg.instanceTypes.map((instanceType) => ({ instanceType })),
      },
    },
    // ECS managed termination protection decides which instances may go (none running a task).
    protectFromScaleIn: true,
    tags: [{ key: "AmazonECSManaged", value: "true", propagateAtLaunch: true }],
  });

  const capacityProvider = new aws.ecs.CapacityProvider("KilnGpuCapacity", {
    autoScalingGroupProvider: {
      autoScalingGroupArn: autoScalingGroup.arn,
      managedTerminationProtection: "ENABLED",
      managedDraining: "ENABLED",
      managedScaling: { status: "ENABLED", targetCapacity: 100, minimumScalingStepSize: 1, maximumScalingStepSize: 4 },
    },
  });

  new aws.ecs.ClusterCapacityProviders("KilnGpuClusterCapacity", {
    clusterName: cluster.name,
    capacityProviders: [capacityProvider.name],
    defaultCapacityProviderStrategies: [{ capacityProvider: capacityProvider.name, weight: 1 }],
  });

  // --- task --------------------------------------------------------------------------------
  const executionRole = new aws.iam.Role("KilnWorkerExecutionRole", {
    assumeRolePolicy: aws.iam.assumeRolePolicyForPrincipal({ Service: "ecs-tasks.amazonaws.com" }),
    managedPolicyArns: ["arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"],
  });

  const taskRole = new aws.iam.Role("KilnWorkerTaskRole", {
    assumeRolePolicy: aws.iam.assumeRolePolicyForPrincipal({ Service: "ecs-tasks.amazonaws.com" }),
    inlinePolicies: [
      {
        name: "kiln-worker",
        policy: pulumi.jsonStringify({
          Version: "2012-10-17",
          Statement: workerTaskStatements<pulumi.Input<string>>({
            queues: args.queues.flatMap((q) => [q.arn, q.dlqArn]),
            bucket: args.bucket.arn,
            bucketObjects: pulumi.interpolate`${args.bucket.arn}/*`,
            table: args.table.arn,
            tableIndexes: pulumi.interpolate`${args.table.arn}/index/*`,
          }),
        }),
      },
    ],
  });

  const logGroup = new aws.cloudwatch.LogGroup("KilnWorkerLogs", { retentionInDays: 14 });

  /** The same JSON SST injects for `Resource.<Name>`, read by packages/shared/src/sst-links.ts. */
  const links = [
    { name: `SST_RESOURCE_${SST_LINKS.bucket}`, value: pulumi.jsonStringify({ name: args.bucket.name }) },
    { name: `SST_RESOURCE_${SST_LINKS.table}`, value: pulumi.jsonStringify({ name: args.table.name }) },
    ...args.queues.flatMap((q) => [
      { name: `SST_RESOURCE_${q.plan.link}`, value: pulumi.jsonStringify({ url: q.url }) },
      { name: `SST_RESOURCE_${q.plan.dlqLink}`, value: pulumi.jsonStringify({ url: q.dlqUrl }) },
    ]),
  ];

  const taskDefinition = new aws.ecs.TaskDefinition("KilnGpuWorker", {
    family: `kiln-${args.stage}-gpu-worker`,
    requiresCompatibilities: ["EC2"],
    networkMode: "host",
    executionRoleArn: executionRole.arn,
    taskRoleArn: taskRole.arn,
    volumes: [
      { name: "models", hostPath: "/opt/kiln/models" },
      { name: "engine-cache", hostPath: "/opt/kiln/engine-cache" },
    ],
    containerDefinitions: pulumi.jsonStringify([
      {
        name: "worker",
        image: pulumi.interpolate`${repository.repositoryUrl}:${args.imageTag}`,
        essential: true,
        command: ["worker"],
        memoryReservation: 12_288,
        resourceRequirements: [{ type: "GPU", value: String(plan.task.gpus) }],
        stopTimeout: plan.task.stopTimeoutSeconds,
        environment: [
          { name: "KILN_BACKEND", value: "aws" },
          { name: "KILN_PROVIDERS", value: "cuda,cpu" },
          { name: "KILN_MODEL_DIR", value: "/models/sdxl-base" },
          { name: "KILN_REFINER_DIR", value: "/models/sdxl-refiner" },
          { name: "KILN_TINY_MODELS", value: "false" },
          { name: "KILN_STAGES", value: "base,refine" },
          { name: "KILN_VISIBILITY_SECONDS", value: String(longestVisibility) },
          { name: "KILN_MAX_RECEIVES", value: String(stageQueues[0]?.plan.maxReceives ?? 5) },
          { name: "KILN_DRAIN_SECONDS", value: String(plan.task.drainSeconds) },
          { name: "KILN_HOST", value: "0.0.0.0" },
          { name: "KILN_WORKER_PORT", value: String(HEALTH_PORT) },
          ...links,
        ],
        mountPoints: [
          { sourceVolume: "models", containerPath: "/models", readOnly: true },
          { sourceVolume: "engine-cache", containerPath: "/cache" },
        ],
        healthCheck: {
          command: [
            "CMD",
            "node",
            "-e",
            `fetch("http://127.0.0.1:${HEALTH_PORT}/healthz").then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))`,
          ],
          interval: 30,
          timeout: 5,
          retries: 3,
          startPeriod: 300,
        },
        logConfiguration: {
          logDriver: "awslogs",
          options: {
            "awslogs-group": logGroup.name,
            "awslogs-region": aws.getRegionOutput().name,
            "awslogs-stream-prefix": "worker",
          },
        },
      },
    ]),
  });

  const service = new aws.ecs.Service(
    "KilnGpuWorkers",
    {
      cluster: cluster.arn,
      taskDefinition: taskDefinition.arn,
      desiredCount: plan.service.desiredCount,
      capacityProviderStrategies: [{ capacityProvider: capacityProvider.name, weight: 1 }],
      // One task per GPU instance (host networking, one health port): replace in place, never double up.
      deploymentMinimumHealthyPercent: 0,
      deploymentMaximumPercent: 100,
      placementConstraints: [{ type: "distinctInstance" }],
    },
    { ignoreChanges: ["desiredCount"] },
  );

  // --- scaling on backlog per worker ---------------------------------------------------------
  const target = new aws.appautoscaling.Target("KilnGpuWorkersScaling", {
    serviceNamespace: "ecs",
    scalableDimension: "ecs:service:DesiredCount",
    resourceId: pulumi.interpolate`service/${cluster.name}/${service.name}`,
    minCapacity: plan.service.minCapacity,
    maxCapacity: plan.service.maxCapacity,
  });

  const queueMetrics = scaledQueues.map((q, i) => ({
    id: `q${i}`,
    returnData: false,
    metricStat: {
      stat: "Sum",
      metric: {
        namespace: "AWS/SQS",
        metricName: "ApproximateNumberOfMessagesVisible",
        dimensions: [{ name: "QueueName", value: q.queueName }],
      },
    },
  }));
  const workersMetric = {
    id: "workers",
    returnData: false,
    metricStat: {
      stat: "Average",
      metric: {
        namespace: "ECS/ContainerInsights",
        metricName: "RunningTaskCount",
        dimensions: [
          { name: "ClusterName", value: cluster.name },
          { name: "ServiceName", value: service.name },
        ],
      },
    },
  };

  const backlogPolicy = new aws.appautoscaling.Policy("KilnBacklogPerWorker", {
    policyType: "TargetTrackingScaling",
    serviceNamespace: target.serviceNamespace,
    scalableDimension: target.scalableDimension,
    resourceId: target.resourceId,
    targetTrackingScalingPolicyConfiguration: {
      targetValue: plan.scaling.targetBacklogPerWorker,
      scaleInCooldown: plan.scaling.scaleInCooldown,
      scaleOutCooldown: plan.scaling.scaleOutCooldown,
      customizedMetricSpecification: {
        metrics: [
          ...queueMetrics,
          workersMetric,
          {
            id: "backlog",
            expression: backlogPerWorkerExpression(scaledQueues.length),
            label: "Stages waiting per worker",
            returnData: true,
          },
        ],
      },
    },
  });

  /** Target tracking cannot leave zero (nothing to divide by): a step policy starts the first workers. */
  const wakeUp = new aws.appautoscaling.Policy("KilnWakeFromZero", {
    policyType: "StepScaling",
    serviceNamespace: target.serviceNamespace,
    scalableDimension: target.scalableDimension,
    resourceId: target.resourceId,
    stepScalingPolicyConfiguration: {
      adjustmentType: "ExactCapacity",
      cooldown: 60,
      stepAdjustments: [{ metricIntervalLowerBound: "0", scalingAdjustment: plan.scaling.wakeFromZeroWorkers }],
    },
  });

  const wakeAlarm = new aws.cloudwatch.MetricAlarm("KilnStagesWaitingWithNoWorker", {
    comparisonOperator: "GreaterThanOrEqualToThreshold",
    threshold: 1,
    evaluationPeriods: 1,
    metricQueries: [
      ...scaledQueues.map((q, i) => ({
        id: `q${i}`,
        returnData: false,
        metric: {
          namespace: "AWS/SQS",
          metricName: "ApproximateNumberOfMessagesVisible",
          dimensions: { QueueName: q.queueName },
          stat: "Sum",
          period: 60,
        },
      })),
      {
        id: "workers",
        returnData: false,
        metric: {
          namespace: "ECS/ContainerInsights",
          metricName: "RunningTaskCount",
          dimensions: { ClusterName: cluster.name, ServiceName: service.name },
          stat: "Average",
          period: 60,
        },
      },
      {
        id: "waitingWithoutWorker",
        expression: waitingWithoutWorkerExpression(scaledQueues.length),
        label: "Stages waiting while no worker runs",
        returnData: true,
      },
    ],
    alarmActions: [wakeUp.arn],
  });

  return {
    repository,
    cluster,
    autoScalingGroup,
    launchTemplate,
    capacityProvider,
    taskRole,
    instanceRole,
    taskDefinition,
    service,
    target,
    backlogPolicy,
    wakeUp,
    wakeAlarm,
  };
}
