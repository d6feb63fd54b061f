/**
 * GPU workers: raw Pulumi ECS on EC2, because SST's Cluster/Service are Fargate-only and Fargate
 * has no GPUs. An auto-scaling group of GPU instances (ECS GPU-optimised AMI) backs a capacity
 * provider with managed scaling, so ECS starts instances when tasks need them; the service's task
 * count follows the queue backlog per worker (application auto-scaling), from zero.
 *
 * Each task takes one GPU (`resourceRequirements: GPU 1`) and runs `kiln worker` from
 * packages/gpu-worker/Dockerfile, pushed to the ECR repository below. Scale-in and spot
 * interruptions send SIGTERM: the worker drains (KILN_DRAIN_SECONDS) within the stop timeout.
 */
import { loadDeployConfig } from "../packages/shared/src/config";
import { deadLetterQueueOf } from "../packages/shared/src/ports/queue";
import { SST_LINKS } from "../packages/shared/src/sst-links";
import { allQueues, MAX_RECEIVES, queues, stageQueuePairs } from "./queues";
import { bucket } from "./storage";
import { table } from "./table";

/** KILN_GPU_*, KILN_BACKLOG_PER_WORKER (default 4: ~6 s of backlog at ~1.5 s per SDXL render), KILN_MODELS_S3_URI. */
const config = { ...loadDeployConfig().gpu, drainSeconds: 100 };

const vpc = new sst.aws.Vpc("KilnVpc", { nat: "ec2" });

export const repository = new aws.ecr.Repository("KilnWorkerImage", {
  forceDelete: $app.stage !== "production",
  imageScanningConfiguration: { scanOnPush: true },
});

export const cluster = new aws.ecs.Cluster("KilnGpuCluster", {
  settings: [{ name: "containerInsights", value: "enabled" }],
});

// --- instances -------------------------------------------------------------------------------
const instanceRole = new aws.iam.Role("KilnGpuInstanceRole", {
  assumeRolePolicy: aws.iam.assumeRolePolicyForPrincipal({ Service: "ec2.amazonaws.com" }),
  managedPolicyArns: [
    "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role",
    "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
    "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",
  ],
});
const instanceProfile = new aws.iam.InstanceProfile("KilnGpuInstanceProfile", { role: instanceRole.name });

const instanceSecurityGroup = new aws.ec2.SecurityGroup("KilnGpuInstances", {
  vpcId: vpc.id,
  description: "Kiln GPU workers: outbound only (queues, stores, ECR); health is read by the ECS agent on the host.",
  egress: [{ protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"] }],
});

const gpuAmi = aws.ssm.getParameterOutput({
  name: "/aws/service/ecs/optimized-ami/amazon-linux-2/gpu/recommended/image_id",
});

const userData = $interpolate`#!/bin/bash
set -euo pipefail
cat >> /etc/ecs/ecs.config <<CONFIG
ECS_CLUSTER=${cluster.name}
ECS_ENABLE_GPU_SUPPORT=true
ECS_ENABLE_SPOT_INSTANCE_DRAINING=true
ECS_CONTAINER_STOP_TIMEOUT=${config.drainSeconds + 20}s
CONFIG
mkdir -p /opt/kiln/models /opt/kiln/engine-cache
if [ -n "${config.modelsS3Uri}" ]; then aws s3 sync --only-show-errors "${config.modelsS3Uri}" /opt/kiln/models; fi
`;

const launchTemplate = new aws.ec2.LaunchTemplate("KilnGpuLaunchTemplate", {
  imageId: gpuAmi.value,
  instanceType: config.instanceType,
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
  minSize: 0,
  maxSize: config.maxInstances,
  vpcZoneIdentifiers: vpc.privateSubnets,
  launchTemplate: { id: launchTemplate.id, version: "$Latest" },
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

// --- task ------------------------------------------------------------------------------------

const executionRole = new aws.iam.Role("KilnWorkerExecutionRole", {
  assumeRolePolicy: aws.iam.assumeRolePolicyForPrincipal({ Service: "ecs-tasks.amazonaws.com" }),
  managedPolicyArns: ["arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"],
});

const taskRole = new aws.iam.Role("KilnWorkerTaskRole", {
  assumeRolePolicy: aws.iam.assumeRolePolicyForPrincipal({ Service: "ecs-tasks.amazonaws.com" }),
  inlinePolicies: [
    {
      name: "kiln-worker",
      policy: $jsonStringify({
        Version: "2012-10-17",
        Statement: [
          {
            Effect: "Allow",
            Action: [
              "sqs:ReceiveMessage",
              "sqs:DeleteMessage",
              "sqs:ChangeMessageVisibility",
              "sqs:SendMessage",
              "sqs:GetQueueAttributes",
              "sqs:GetQueueUrl",
            ],
            Resource: allQueues.map((q) => q.arn),
          },
          {
            Effect: "Allow",
            Action: ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            Resource: [$interpolate`${bucket.arn}/*`],
          },
          { Effect: "Allow", Action: ["s3:ListBucket"], Resource: [bucket.arn] },
          {
            Effect: "Allow",
            Action: [
              "dynamodb:GetItem",
              "dynamodb:PutItem",
              "dynamodb:UpdateItem",
              "dynamodb:DeleteItem",
              "dynamodb:Query",
            ],
            Resource: [table.arn, $interpolate`${table.arn}/index/*`],
          },
        ],
      }),
    },
  ],
});

const logGroup = new aws.cloudwatch.LogGroup("KilnWorkerLogs", { retentionInDays: 14 });

/** The same JSON SST injects for `Resource.<Name>`, read by packages/shared/src/sst-links.ts. */
const links = [
  { name: `SST_RESOURCE_${SST_LINKS.bucket}`, value: $jsonStringify({ name: bucket.name, type: "sst.aws.Bucket" }) },
  { name: `SST_RESOURCE_${SST_LINKS.table}`, value: $jsonStringify({ name: table.name, type: "sst.aws.Dynamo" }) },
  ...Object.values(queues).flatMap(({ definition, queue, dlq }) => [
    {
      name: `SST_RESOURCE_${SST_LINKS.queues[definition.name]}`,
      value: $jsonStringify({ url: queue.url, type: "sst.aws.Queue" }),
    },
    {
      name: `SST_RESOURCE_${SST_LINKS.queues[deadLetterQueueOf(definition.name)]}`,
      value: $jsonStringify({ url: dlq.url, type: "sst.aws.Queue" }),
    },
  ]),
];

const HEALTH_PORT = 8788;

export const taskDefinition = new aws.ecs.TaskDefinition("KilnGpuWorker", {
  family: $interpolate`kiln-${$app.stage}-gpu-worker`,
  requiresCompatibilities: ["EC2"],
  networkMode: "host",
  executionRoleArn: executionRole.arn,
  taskRoleArn: taskRole.arn,
  volumes: [
    { name: "models", hostPath: "/opt/kiln/models" },
    { name: "engine-cache", hostPath: "/opt/kiln/engine-cache" },
  ],
  containerDefinitions: $jsonStringify([
    {
      name: "worker",
      image: $interpolate`${repository.repositoryUrl}:latest`,
      essential: true,
      command: ["worker"],
      memoryReservation: 12_288,
      resourceRequirements: [{ type: "GPU", value: "1" }],
      stopTimeout: 120,
      environment: [
        { name: "KILN_BACKEND", value: "aws" },
        { name: "KILN_PROVIDERS", value: "cuda,cpu" },
        { name: "KILN_MODEL_DIR", value: "/models/sdxl-base" },
        { name: "KILN_REFINER_DIR", value: "/models/sdxl-refiner" },
        { name: "KILN_TINY_MODELS", value: "false" },
        { name: "KILN_STAGES", value: "base,refine" },
        { name: "KILN_VISIBILITY_SECONDS", value: "60" },
        { name: "KILN_MAX_RECEIVES", value: String(MAX_RECEIVES) },
        { name: "KILN_DRAIN_SECONDS", value: String(config.drainSeconds) },
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

export const service = new aws.ecs.Service(
  "KilnGpuWorkers",
  {
    cluster: cluster.arn,
    taskDefinition: taskDefinition.arn,
    desiredCount: config.minWorkers,
    capacityProviderStrategies: [{ capacityProvider: capacityProvider.name, weight: 1 }],
    // One task per GPU instance (host networking, one health port): replace in place, never double up.
    deploymentMinimumHealthyPercent: 0,
    deploymentMaximumPercent: 100,
    placementConstraints: [{ type: "distinctInstance" }],
  },
  { ignoreChanges: ["desiredCount"] },
);

// --- scaling on backlog per worker -----------------------------------------------------------
const target = new aws.appautoscaling.Target("KilnGpuWorkersScaling", {
  serviceNamespace: "ecs",
  scalableDimension: "ecs:service:DesiredCount",
  resourceId: $interpolate`service/${cluster.name}/${service.name}`,
  minCapacity: config.minWorkers,
  maxCapacity: config.maxInstances,
});

/** CloudWatch metric-math ids of the stage queues (`base`, `refine`, one per kind and lane). */
const stageMetrics = stageQueuePairs.map((q) => ({
  id: q.definition.name.replace(/^kiln-/, "").replace(/-/g, "_"),
  queueName: q.queue.nodes.queue.name,
}));
const waitingStages = stageMetrics.map((m) => m.id).join(" + ");

const visible = (id: string, queueName: $util.Output<string>) => ({
  id,
  returnData: false,
  metricStat: {
    stat: "Sum",
    metric: {
      namespace: "AWS/SQS",
      metricName: "ApproximateNumberOfMessagesVisible",
      dimensions: [{ name: "QueueName", value: queueName }],
    },
  },
});

/** (stages waiting in every stage queue) / running workers, kept near `backlogPerWorker`. */
new aws.appautoscaling.Policy("KilnBacklogPerWorker", {
  policyType: "TargetTrackingScaling",
  serviceNamespace: target.serviceNamespace,
  scalableDimension: target.scalableDimension,
  resourceId: target.resourceId,
  targetTrackingScalingPolicyConfiguration: {
    targetValue: config.backlogPerWorker,
    scaleInCooldown: 300,
    scaleOutCooldown: 60,
    customizedMetricSpecification: {
      metrics: [
        ...stageMetrics.map((m) => visible(m.id, m.queueName)),
        {
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
        },
        {
          id: "backlog",
          expression: `(${waitingStages}) / MAX([workers, 1])`,
          label: "Stages waiting per worker",
          returnData: true,
        },
      ],
    },
  },
});

/**
 * Target tracking cannot leave zero (nothing runs to divide by), so a step policy starts the first
 * worker as soon as any stage waits.
 */
const wakeUp = new aws.appautoscaling.Policy("KilnWakeFromZero", {
  policyType: "StepScaling",
  serviceNamespace: target.serviceNamespace,
  scalableDimension: target.scalableDimension,
  resourceId: target.resourceId,
  stepScalingPolicyConfiguration: {
    adjustmentType: "ExactCapacity",
    cooldown: 60,
    stepAdjustments: [{ metricIntervalLowerBound: "0", scalingAdjustment: Math.max(1, config.minWorkers) }],
  },
});

const alarmVisible = (id: string, queueName: $util.Output<string>) => ({
  id,
  returnData: false,
  metric: {
    namespace: "AWS/SQS",
    metricName: "ApproximateNumberOfMessagesVisible",
    dimensions: { QueueName: queueName },
    stat: "Sum",
    period: 60,
  },
});

new aws.cloudwatch.MetricAlarm("KilnStagesWaitingWithNoWorker", {
  comparisonOperator: "GreaterThanOrEqualToThreshold",
  threshold: 1,
  evaluationPeriods: 1,
  metricQueries: [
    ...stageMetrics.map((m) => alarmVisible(m.id, m.queueName)),
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
      expression: `IF(workers < 1, ${waitingStages}, 0)`,
      label: "Stages waiting while no worker runs",
      returnData: true,
    },
  ],
  alarmActions: [wakeUp.arn],
});
