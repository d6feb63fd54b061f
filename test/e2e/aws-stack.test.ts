/**
 * `kiln api` and `kiln worker` as separate processes on the AWS family (fauxqs + dynalite on
 * loopback), configured the two ways a deployment does: the API through SST resource links
 * (`SST_RESOURCE_<Name>` JSON), the worker through KILN_* settings. A render goes through the
 * public HTTP API and comes back as a presigned S3 URL.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";

import { GetQueueUrlCommand } from "@aws-sdk/client-sqs";
import type { Ports } from "@kiln/shared";
import {
  createApiKey,
  deadLetterQueueOf,
  DEFAULT_RENDER_LIMITS,
  type JobRecord,
  planRender,
  queueForStage,
  QUEUES,
  renderRequestSchema,
  SST_LINKS,
  stageMessage,
  stageQueues,
} from "@kiln/shared";
import { createAwsClients } from "@kiln/shared/aws";
import sharp from "sharp";

import { handler as deadLetterSweep } from "../../packages/cli/src/cron/dead-letter-sweep.js";
import {
  type AwsStandins,
  openStandinPorts,
  startAwsStandins,
} from "../../packages/shared/test/support/aws-standins.js";
import {
  type ChildKiln,
  type ChildWorker,
  killAllWorkers,
  spawnKiln,
  spawnWorker,
} from "../support/durability-harness.js";

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });

describe("kiln api + kiln worker on the AWS family", { timeout: 120_000 }, () => {
  let standins: AwsStandins;
  let ports: Ports;
  let api: ChildKiln;
  let worker: ChildWorker;
  let url: string;
  let key: string;
  let cronEnv: Record<string, string>;

  before(async () => {
    standins = await startAwsStandins();
    const names = { bucket: "kiln-stack", table: "kiln-stack", queuePrefix: "stack-" };
    let options;
    ({ ports, options } = await openStandinPorts(standins, {
      queues: QUEUES.map((q) => q.name),
      maxReceives: 3,
      ...names,
    }));
    ({ key } = await createApiKey(ports.keys, { name: "aws-stack", scopes: ["render", "admin"] }));
    const clients = createAwsClients(options);
    const queueUrls: Record<string, string> = {};
    for (const queue of Object.keys(SST_LINKS.queues)) {
      queueUrls[queue] = (
        await clients.sqs.send(new GetQueueUrlCommand({ QueueName: `${names.queuePrefix}${queue}` }))
      ).QueueUrl!;
    }
    clients.sqs.destroy();
    clients.s3.destroy();
    clients.dynamo.destroy();
    const credentials = {
      AWS_ACCESS_KEY_ID: standins.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: standins.credentials.secretAccessKey,
    };
    const endpoints = {
      KILN_SQS_ENDPOINT: standins.sqsEndpoint,
      KILN_S3_ENDPOINT: standins.s3Endpoint,
      KILN_DYNAMO_ENDPOINT: standins.dynamoEndpoint,
    };
    cronEnv = {
      KILN_BACKEND: "aws",
      KILN_LOG_LEVEL: "silent",
      ...endpoints,
      ...credentials,
      KILN_BUCKET: names.bucket,
      KILN_TABLE: names.table,
      KILN_QUEUE_PREFIX: "cron-",
    };
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    [api, worker] = await Promise.all([
      spawnKiln(
        "api",
        {
          KILN_BACKEND: "aws",
          PORT: String(port),
          KILN_MIN_SIDE: "64",
          ...endpoints,
          ...credentials,
          // As SST injects links: no KILN_BUCKET/KILN_TABLE/KILN_QUEUE_PREFIX, only resource JSON.
          [`SST_RESOURCE_${SST_LINKS.bucket}`]: JSON.stringify({ name: names.bucket, type: "sst.aws.Bucket" }),
          [`SST_RESOURCE_${SST_LINKS.table}`]: JSON.stringify({ name: names.table, type: "sst.aws.Dynamo" }),
          ...Object.fromEntries(
            Object.entries(SST_LINKS.queues).map(([queue, link]) => [
              `SST_RESOURCE_${link}`,
              JSON.stringify({ url: queueUrls[queue], type: "sst.aws.Queue" }),
            ]),
          ),
        },
        "API listening",
      ),
      spawnWorker({
        env: {
          KILN_BACKEND: "aws",
          ...endpoints,
          ...credentials,
          KILN_BUCKET: names.bucket,
          KILN_TABLE: names.table,
          KILN_QUEUE_PREFIX: names.queuePrefix,
          KILN_VISIBILITY_SECONDS: "10",
        },
      }),
    ]);
  });
  after(async () => {
    await killAllWorkers();
    await ports?.close();
    await standins?.stop();
  });

  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, json: (await res.json()) as any };
  };

  it("renders through the HTTP API to a presigned S3 download", async () => {
    const created = await call("POST", "/v1/renders", {
      prompt: "a harbour at night",
      mode: "ensemble",
      width: 128,
      height: 128,
      steps: 8,
      seed: 3,
    });
    assert.equal(
      created.status,
      202,
      `${JSON.stringify(created.json)}; API errors: ${JSON.stringify(api.logs.filter((l) => Number(l.level) >= 50))}`,
    );
    let job: any;
    for (const deadline = Date.now() + 60_000; ;) {
      job = (await call("GET", `/v1/renders/${created.json.id}`)).json;
      if (["succeeded", "failed", "canceled", "expired"].includes(job.status)) break;
      assert.ok(Date.now() < deadline, `job still ${job.status}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    const image = new URL(job.images[0].url);
    assert.equal(image.origin, new URL(standins.s3Endpoint).origin, "the URL points at the S3 endpoint");
    assert.ok(image.searchParams.get("X-Amz-Signature"), "presigned");
    const png = Buffer.from(await (await fetch(image)).arrayBuffer());
    assert.deepEqual([(await sharp(png).metadata()).width, (await sharp(png).metadata()).height], [128, 128]);
  });

  it("the worker beats into the DynamoDB worker registry the API reads", async () => {
    const beats = await ports.workers!.list(Date.now() - 60_000);
    assert.ok(
      beats.some((b) => b.workerId.startsWith(worker.idPrefix) && b.stages.includes("refine")),
      JSON.stringify(beats),
    );
  });

  it("the dead-letter cron handler fails a job whose stage message was dead-lettered", async () => {
    const plan = planRender(
      renderRequestSchema(DEFAULT_RENDER_LIMITS).parse({ prompt: "lost", width: 256, height: 256 }),
      1,
    );
    const at = new Date().toISOString();
    const job: JobRecord = {
      id: "job_deadletter",
      ownerKeyId: "k",
      status: "running",
      version: 1,
      createdAt: at,
      updatedAt: at,
      plan,
      images: [],
      stageTimings: [],
    };
    await ports.jobs.create(job);
    // Queues of their own, so the running worker's own sweep cannot get there first.
    const { ports: cronPorts } = await openStandinPorts(standins, {
      queues: stageQueues(),
      maxReceives: 3,
      bucket: "kiln-stack",
      table: "kiln-stack",
      queuePrefix: "cron-",
    });
    // As SQS's redrive policy leaves it after the last delivery died with its worker.
    await cronPorts.queue.send(deadLetterQueueOf(queueForStage("base")), stageMessage(job.id, plan, 0));
    await cronPorts.close();
    const saved = { ...process.env };
    Object.assign(process.env, cronEnv);
    try {
      // The cron also runs the submit reconciler; this job was enqueued, so nothing is re-sent.
      assert.deepEqual(await deadLetterSweep(), { failed: [job.id], resent: [], told: [] });
    } finally {
      for (const k of Object.keys(cronEnv)) if (saved[k] === undefined) delete process.env[k];
      Object.assign(process.env, saved);
    }
    const failed = await ports.jobs.get(job.id);
    assert.equal(failed?.status, "failed");
    assert.equal(failed?.error?.code, "stage_dead_lettered");
  });

  it("the worker serves /healthz on the AWS family", async () => {
    const health = (await (await fetch(`${worker.healthUrl}/healthz`)).json()) as {
      state: string;
      lastPollAt: string;
      models: Record<string, { providers: string[] }>;
    };
    assert.equal(health.state, "running");
    assert.ok(Date.now() - Date.parse(health.lastPollAt) < 15_000);
    assert.deepEqual(Object.keys(health.models).sort(), ["base", "refiner"]);
    assert.ok(api.alive());
  });
});
