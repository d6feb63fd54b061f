/// <reference path="./.sst/platform/config.d.ts" />

/**
 * Kiln on AWS (SST 4, Pulumi underneath), one concern per file in infra/: storage, queues (+ DLQs),
 * table, permissions, the API on Lambda, batch schedules, the GPU worker fleet (raw Pulumi), the
 * dead-letter cron, alarms, secrets. Parameters are derived in infra/plan/* and the fleet is built
 * by infra/fleet/*, both tested offline (test/infra). `npm run infra:check` type-checks this file.
 * NEVER DEPLOYED to a real account: see docs/operations.md ("What has never been deployed").
 */
export default $config({
  app(input) {
    return {
      name: "kiln",
      home: "aws",
      removal: input?.stage === "production" ? "retain" : "remove",
      protect: input?.stage === "production",
      providers: { aws: { region: (process.env.KILN_AWS_REGION as aws.Region | undefined) ?? "us-east-1" } },
    };
  },
  async run() {
    await import("./infra/secrets");
    const { bucket } = await import("./infra/storage");
    const { queues } = await import("./infra/queues");
    const { table } = await import("./infra/table");
    const { api } = await import("./infra/api");
    const { fleet } = await import("./infra/worker-fleet");
    await import("./infra/cron");
    await import("./infra/alarms");
    // Outbox relay (DynamoDB Streams → function): import "./infra/outbox-relay" once its handler exists.
    return {
      api: api.url,
      bucket: bucket.name,
      table: table.name,
      ...Object.fromEntries(queues.map((q) => [q.plan.name, q.queue.url])),
      workerImage: fleet.repository.repositoryUrl,
      cluster: fleet.cluster.name,
    };
  },
});
