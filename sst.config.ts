/// <reference path="./.sst/platform/config.d.ts" />

/**
 * Kiln on AWS (SST v3+/4, Pulumi underneath): storage, queues, table, the API on Lambda, the GPU
 * worker fleet on ECS/EC2, a cron and secrets, one concern per file in infra/.
 * UNDEPLOYED and UNVERIFIED against a real account: see docs/operations.md ("What is not verified").
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
    const { base, refine } = await import("./infra/queues");
    const { table } = await import("./infra/table");
    const { api } = await import("./infra/api");
    const { repository, cluster } = await import("./infra/worker-fleet");
    await import("./infra/cron");
    return {
      api: api.url,
      bucket: bucket.name,
      table: table.name,
      baseQueue: base.queue.url,
      refineQueue: refine.queue.url,
      workerImage: repository.repositoryUrl,
      cluster: cluster.name,
    };
  },
});
