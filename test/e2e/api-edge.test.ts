/**
 * The API on an edge runtime: the esbuild bundle of packages/api/src/entry/edge.ts served by
 * workerd (through miniflare), on the AWS family over `fetch` against fauxqs and dynalite on
 * loopback, with a `kiln worker` process on Node rendering with the tiny models. A render goes in
 * through workerd and comes back as a presigned S3 URL.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { GetQueueUrlCommand } from "@aws-sdk/client-sqs";
import { createApiKey, type Ports, SST_LINKS } from "@kiln/shared";
import { createAwsClients } from "@kiln/shared/aws";
import { Miniflare } from "miniflare";
import sharp from "sharp";

import { bundleApi } from "../../packages/api/src/entry/bundles.js";
import {
  type AwsStandins,
  openStandinPorts,
  startAwsStandins,
} from "../../packages/shared/test/support/aws-standins.js";
import { killAllWorkers, spawnWorker } from "../support/durability-harness.js";

describe("the API bundle on workerd (miniflare) with a Node worker, AWS family", { timeout: 180_000 }, () => {
  let standins: AwsStandins;
  let ports: Ports;
  let mf: Miniflare;
  let url: string;
  let key: string;
  let outdir: string;
  let bundleImports: string[] = [];
  const logs: string[] = [];

  before(async () => {
    standins = await startAwsStandins();
    const names = { bucket: "kiln-edge", table: "kiln-edge", queuePrefix: "edge-" };
    let options;
    ({ ports, options } = await openStandinPorts(standins, {
      queues: ["kiln-base", "kiln-refine", "kiln-webhooks"],
      maxReceives: 3,
      ...names,
    }));
    ({ key } = await createApiKey(ports.keys, { name: "edge", scopes: ["render"] }));
    const clients = createAwsClients(options);
    const queueUrls: string[] = [];
    for (const queue of Object.keys(SST_LINKS.queues)) {
      const { QueueUrl } = await clients.sqs.send(
        new GetQueueUrlCommand({ QueueName: `${names.queuePrefix}${queue}` }),
      );
      queueUrls.push(`${queue}=${QueueUrl}`);
    }
    clients.sqs.destroy();
    clients.s3.destroy();
    clients.dynamo.destroy();

    outdir = mkdtempSync(path.join(os.tmpdir(), "kiln-edge-"));
    const bundle = await bundleApi("edge", outdir);
    bundleImports = Object.values(bundle.metafile.outputs).flatMap((o) => o.imports.map((i) => i.path));
    mf = new Miniflare({
      modules: true,
      // The bundle is one file; passed as text, since workerd refuses module paths outside its directory.
      script: readFileSync(bundle.file, "utf8"),
      compatibilityDate: "2025-09-01",
      host: "127.0.0.1",
      port: 0,
      // As a deployment sets them: plain settings as vars, credentials as secrets.
      bindings: {
        KILN_BACKEND: "aws",
        KILN_LOG_LEVEL: "warn",
        KILN_MIN_SIDE: "64",
        KILN_AWS_REGION: standins.region,
        KILN_SQS_ENDPOINT: standins.sqsEndpoint,
        KILN_S3_ENDPOINT: standins.s3Endpoint,
        KILN_DYNAMO_ENDPOINT: standins.dynamoEndpoint,
        KILN_BUCKET: names.bucket,
        KILN_TABLE: names.table,
        KILN_QUEUE_URLS: queueUrls.join(","),
        AWS_ACCESS_KEY_ID: standins.credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: standins.credentials.secretAccessKey,
      },
      handleRuntimeStdio(stdout: NodeJS.ReadableStream, stderr: NodeJS.ReadableStream) {
        for (const stream of [stdout, stderr]) stream.on("data", (chunk: Buffer) => logs.push(String(chunk)));
      },
    });
    url = String(await mf.ready).replace(/\/$/, "");
    await spawnWorker({
      env: {
        KILN_BACKEND: "aws",
        KILN_SQS_ENDPOINT: standins.sqsEndpoint,
        KILN_S3_ENDPOINT: standins.s3Endpoint,
        KILN_DYNAMO_ENDPOINT: standins.dynamoEndpoint,
        AWS_ACCESS_KEY_ID: standins.credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: standins.credentials.secretAccessKey,
        KILN_BUCKET: names.bucket,
        KILN_TABLE: names.table,
        KILN_QUEUE_PREFIX: names.queuePrefix,
        KILN_VISIBILITY_SECONDS: "10",
      },
    });
  });
  after(async () => {
    await killAllWorkers();
    await mf?.dispose();
    await ports?.close();
    await standins?.stop();
    if (outdir) rmSync(outdir, { recursive: true, force: true });
  });

  const call = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(`${url}${p}`, {
      method,
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, json: JSON.parse(text) as any, text };
  };

  it("is one self-contained module that workerd serves", async () => {
    // Nothing left for the runtime to resolve: no `node:` built-ins, no packages.
    assert.deepEqual(bundleImports, []);
    const res = await call("GET", "/healthz");
    assert.equal(res.status, 200, res.text);
  });

  it("takes a render, a Node worker finishes it, and the image downloads from a presigned S3 URL", async () => {
    const created = await call("POST", "/v1/renders", {
      prompt: "a lighthouse on a cliff",
      mode: "ensemble",
      width: 128,
      height: 128,
      steps: 8,
      seed: 11,
    });
    assert.equal(created.status, 202, `${created.text}\nworkerd: ${logs.join("")}`);
    assert.ok(created.headers.get("location")?.startsWith(url), "links use the origin the request arrived at");
    let job: any;
    for (const deadline = Date.now() + 90_000; ;) {
      job = (await call("GET", `/v1/renders/${created.json.id}`)).json;
      if (["succeeded", "failed", "canceled", "expired"].includes(job.status)) break;
      assert.ok(Date.now() < deadline, `job still ${job.status}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    const image = new URL(job.images[0].url);
    assert.equal(image.origin, new URL(standins.s3Endpoint).origin, "the URL points at the S3 endpoint");
    assert.ok(image.searchParams.get("X-Amz-Signature"), "presigned in workerd with Web Crypto");
    const png = Buffer.from(await (await fetch(image)).arrayBuffer());
    const meta = await sharp(png).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ["png", 128, 128]);

    // Listing pages through DynamoDB with a cursor encoded without Buffer.
    const first = await call("GET", "/v1/renders?limit=1");
    assert.equal(first.status, 200, first.text);
    assert.equal(first.json.data[0].id, created.json.id);
    const forged = await call("GET", `/v1/renders?cursor=${btoa("not-issued-here").replace(/=+$/, "")}`);
    assert.equal(forged.status, 400, forged.text);
    assert.match(forged.json.errors[0].message, /not one this server issued/, forged.text);
  });

  it("refuses a bad key with problem+json from the edge", async () => {
    const res = await fetch(`${url}/v1/renders`, {
      method: "POST",
      headers: { authorization: "Bearer kiln_nope", "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(res.status, 401);
    assert.match(res.headers.get("content-type") ?? "", /problem\+json/);
  });
});
