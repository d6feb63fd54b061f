/**
 * The API's Lambda bundle (esbuild, entry/lambda.ts) as the Node 20 runtime loads it: a fresh
 * `node` without tsx, with no node_modules in reach, on the AWS family (fauxqs + dynalite on
 * loopback). It must import, answer health, authenticate against DynamoDB and enqueue a render.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { isBuiltin } from "node:module";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { createApiKey, type Ports, queueForStage } from "@kiln/shared";

import { bundleApi, type BundleResult } from "../../packages/api/src/entry/bundles.js";
import { probeLambdaBundle } from "../../packages/api/src/entry/lambda-probe.js";
import {
  type AwsStandins,
  openStandinPorts,
  startAwsStandins,
} from "../../packages/shared/test/support/aws-standins.js";

describe("the Lambda bundle", { timeout: 120_000 }, () => {
  let standins: AwsStandins;
  let ports: Ports;
  let key: string;
  let outdir: string;
  let bundle: BundleResult;

  before(async () => {
    standins = await startAwsStandins();
    ({ ports } = await openStandinPorts(standins, {
      queues: ["kiln-base", "kiln-refine", "kiln-webhooks"],
      maxReceives: 3,
      bucket: "kiln-lambda",
      table: "kiln-lambda",
      queuePrefix: "lambda-",
    }));
    ({ key } = await createApiKey(ports.keys, { name: "lambda-bundle", scopes: ["render"] }));
    outdir = mkdtempSync(path.join(os.tmpdir(), "kiln-lambda-"));
    bundle = await bundleApi("lambda", outdir);
  });
  after(async () => {
    await ports?.close();
    await standins?.stop();
    if (outdir) rmSync(outdir, { recursive: true, force: true });
  });

  it("is one ESM file needing only Node's built-ins: no packages, no native addons", () => {
    const imports = Object.values(bundle.metafile.outputs).flatMap((o) => o.imports.map((i) => i.path));
    assert.deepEqual(
      imports.filter((p) => !isBuiltin(p)),
      [],
    );
    const inputs = Object.keys(bundle.metafile.inputs);
    assert.deepEqual(
      inputs.filter((p) => /\.node$|better-sqlite3|onnxruntime|sharp|[\\/]tsx[\\/]/.test(p)),
      [],
    );
    assert.ok(
      inputs.some((p) => p.includes("@aws-sdk/client-sqs")),
      "the SDK is bundled, not taken from the runtime",
    );
  });

  it("imports in a fresh node and answers Function URL requests on the AWS family", async () => {
    const auth = { authorization: `Bearer ${key}`, "content-type": "application/json" };
    const result = await probeLambdaBundle(
      bundle.file,
      {
        KILN_BACKEND: "aws",
        KILN_LOG_LEVEL: "silent",
        KILN_MIN_SIDE: "64",
        KILN_SQS_ENDPOINT: standins.sqsEndpoint,
        KILN_S3_ENDPOINT: standins.s3Endpoint,
        KILN_DYNAMO_ENDPOINT: standins.dynamoEndpoint,
        KILN_BUCKET: "kiln-lambda",
        KILN_TABLE: "kiln-lambda",
        KILN_QUEUE_PREFIX: "lambda-",
        // The SDK's default chain reads these, as on Lambda.
        AWS_ACCESS_KEY_ID: standins.credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: standins.credentials.secretAccessKey,
        AWS_REGION: standins.region,
      },
      [
        { method: "GET", path: "/healthz" },
        { method: "GET", path: "/v1/renders?limit=1", headers: auth },
        {
          method: "POST",
          path: "/v1/renders",
          headers: auth,
          body: JSON.stringify({ prompt: "a kiln at dusk", width: 64, height: 64, steps: 2 }),
        },
      ],
    );
    const [health, list, created] = result.responses;
    assert.equal(health!.statusCode, 200, health!.body);
    assert.equal(list!.statusCode, 200, list!.body);
    assert.deepEqual(JSON.parse(list!.body).data, []);
    assert.equal(created!.statusCode, 202, created!.body);
    const job = JSON.parse(created!.body) as { id: string; links: { self: string } };
    assert.match(job.links.self, /lambda-url\.us-east-1\.on\.aws/);
    const [message] = await ports.queue.receive(queueForStage("base"), {
      max: 1,
      visibilitySeconds: 30,
      waitSeconds: 1,
    });
    assert.equal((message?.body as { jobId?: string } | undefined)?.jobId, job.id, "stage 0 was enqueued");
    assert.equal((await ports.jobs.get(job.id))?.status, "queued");
  });
});
