/**
 * The GPU worker fleet (infra/fleet/gpu-fleet.ts, raw Pulumi, tested offline under Pulumi mocks)
 * in Kiln's VPC, on every queue the code uses. Sizing from KILN_GPU_* in the deploying shell.
 */
import { createGpuFleet } from "./fleet/gpu-fleet";
import { fleetSettingsFromEnv } from "./plan/scaling";
import { queues } from "./queues";
import { bucket } from "./storage";
import { table } from "./table";

const vpc = new sst.aws.Vpc("KilnVpc", { nat: "ec2" });

export const fleet = createGpuFleet({
  stage: $app.stage,
  vpcId: vpc.id,
  privateSubnetIds: vpc.privateSubnets,
  queues: queues.map((q) => ({
    plan: q.plan,
    url: q.queue.url,
    arn: q.queue.arn,
    queueName: q.queue.nodes.queue.name,
    dlqUrl: q.dlq.url,
    dlqArn: q.dlq.arn,
  })),
  bucket: { name: bucket.name, arn: bucket.arn },
  table: { name: table.name, arn: table.arn },
  settings: fleetSettingsFromEnv(process.env),
  imageTag: process.env.KILN_WORKER_IMAGE_TAG ?? "latest",
  modelsPrefix: $interpolate`s3://${bucket.name}/models`,
});
