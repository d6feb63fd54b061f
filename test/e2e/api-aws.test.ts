import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";

import { sweepExpiredJobs } from "@kiln/api";
import {
  createLambdaHandler,
  createLambdaStreamHandler,
  type LambdaHandler,
  type LambdaStreamHandler,
} from "@kiln/api/lambda";
import { sdxlExecutor, Worker } from "@kiln/gpu-worker";
import { createApiKey, type PausePoint, type Ports, stageQueues } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import sharp from "sharp";

import { jobRecord } from "../../packages/api/test/fixtures.js";
import {
  type AwsStandins,
  openStandinPorts,
  startAwsStandins,
} from "../../packages/shared/test/support/aws-standins.js";
import { download, loadTinyModels } from "../support/local-stack.js";

/**
 * The API on the AWS family (fauxqs for SQS and S3, dynalite for DynamoDB) through its Lambda
 * handler, invoked with API Gateway HTTP API (payload 2.0) and Function URL events built as AWS
 * documents them, and configured from KILN_* variables as a deployed function is.
 */

/**
 * One endpoint for all three services, as KILN_AWS_ENDPOINT offers: DynamoDB calls (X-Amz-Target
 * DynamoDB_*) go to dynalite, SQS and S3 calls to fauxqs.
 */
async function startEndpointRouter(standins: AwsStandins): Promise<{ url: string; close(): Promise<void> }> {
  const fauxqs = new URL(standins.sqsEndpoint);
  const dynamo = new URL(standins.dynamoEndpoint);
  const server = http.createServer((req, res) => {
    const target = String(req.headers["x-amz-target"] ?? "").startsWith("DynamoDB") ? dynamo : fauxqs;
    const upstream = http.request(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

type Kind = "apigw" | "url";

/** An HTTP API (payload format 2.0) or Function URL event for one request. */
function lambdaEvent(
  kind: Kind,
  method: string,
  target: string,
  options: { headers?: Record<string, string>; body?: string; base64?: boolean } = {},
) {
  const url = new URL(target, "https://placeholder");
  const domainName =
    kind === "apigw"
      ? "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"
      : "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws";
  const query = Object.fromEntries(url.searchParams);
  const body =
    options.body === undefined
      ? undefined
      : options.base64
        ? Buffer.from(options.body).toString("base64")
        : options.body;
  return {
    version: "2.0",
    routeKey: "$default",
    rawPath: url.pathname,
    rawQueryString: url.search.slice(1),
    headers: {
      host: domainName,
      "user-agent": "curl/8.5.0",
      "x-amzn-trace-id": "Root=1-5e7b6c3f-0123456789abcdef01234567",
      "x-forwarded-for": "203.0.113.7",
      "x-forwarded-port": "443",
      "x-forwarded-proto": "https",
      ...(body !== undefined ? { "content-length": String(Buffer.byteLength(options.body!)) } : {}),
      ...options.headers,
    },
    queryStringParameters: Object.keys(query).length ? query : undefined,
    requestContext: {
      accountId: kind === "apigw" ? "123456789012" : "anonymous",
      apiId: domainName.split(".")[0],
      domainName,
      domainPrefix: domainName.split(".")[0],
      http: { method, path: url.pathname, protocol: "HTTP/1.1", sourceIp: "203.0.113.7", userAgent: "curl/8.5.0" },
      requestId: `req-${Math.random().toString(16).slice(2)}`,
      routeKey: "$default",
      stage: "$default",
      time: "26/Nov/2026:06:00:00 +0000",
      timeEpoch: Date.now(),
      ...(kind === "apigw" ? {} : { authentication: null }),
    },
    body,
    isBase64Encoded: options.base64 ?? false,
    ...(kind === "apigw" ? {} : { pathParameters: null, stageVariables: null }),
  };
}

interface LambdaResult {
  statusCode: number;
  headers: Record<string, string>;
  body: string;
  isBase64Encoded: boolean;
}

describe("API on the AWS family through the Lambda handler", () => {
  let standins: AwsStandins;
  let router: { url: string; close(): Promise<void> };
  let ports: Ports;
  let handler: LambdaHandler;
  let key: string;
  let keyId: string;
  let lambdaEnv: Record<string, string>;
  const timing = { preferWaitCapSeconds: 25, syncWaitSeconds: 25, eventStreamSeconds: 20, pollMs: 100 };
  let worker: Worker;
  /** The in-process worker's pause point: set only while a test holds one of its own jobs. */
  let hold: PausePoint | undefined;
  const savedEnv = { ...process.env };

  before(async () => {
    standins = await startAwsStandins();
    ports = (
      await openStandinPorts(standins, {
        queues: stageQueues(),
        maxReceives: 3,
        bucket: "kiln-api",
        table: "kiln-api",
      })
    ).ports;
    router = await startEndpointRouter(standins);
    // The SDK's default credential chain reads these, as it would on Lambda.
    process.env.AWS_ACCESS_KEY_ID = standins.credentials.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = standins.credentials.secretAccessKey;
    lambdaEnv = {
      KILN_BACKEND: "aws",
      KILN_AWS_ENDPOINT: router.url,
      KILN_AWS_REGION: standins.region,
      KILN_BUCKET: "kiln-api",
      KILN_TABLE: "kiln-api",
      KILN_MIN_SIDE: "64",
      KILN_LOG_LEVEL: "silent",
    };
    handler = createLambdaHandler(lambdaEnv, timing);
    ({
      key,
      record: { id: keyId },
    } = await createApiKey(ports.keys, { name: "lambda", scopes: ["render"] }));
    worker = new Worker({
      ports,
      execute: sdxlExecutor(await loadTinyModels(), { blobs: ports.blobs }),
      logger: createLogger({ level: "silent" }),
      stages: ["base", "refine"],
      concurrency: 1,
      visibilitySeconds: 30,
      maxReceives: 3,
      cancelPollMs: 200,
      // Inert unless a test arms a hold (see `holdAt`), and only for that test's job.
      pause: (point, info, prepare) => hold?.(point, info, prepare) ?? Promise.resolve(),
    });
    worker.start();
  });
  after(async () => {
    await worker.drain(0);
    await ports.close();
    await router.close();
    await standins.stop();
    process.env = savedEnv;
  });

  async function invoke(
    kind: Kind,
    method: string,
    target: string,
    body?: unknown,
    headers: Record<string, string> = {},
    base64 = false,
  ) {
    const text = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
    const event = lambdaEvent(kind, method, target, {
      headers: {
        authorization: `Bearer ${key}`,
        ...(text !== undefined ? { "content-type": "application/json" } : {}),
        ...headers,
      },
      body: text,
      base64,
    });
    const res = (await handler(event as never)) as LambdaResult;
    const raw = res.isBase64Encoded ? Buffer.from(res.body, "base64").toString("utf8") : res.body;
    let json: any;
    try {
      json = JSON.parse(raw);
    } catch {
      json = undefined;
    }
    return { ...res, raw, json };
  }

  it("submits through API Gateway with Prefer: wait and answers 201 with the finished render and links on the request's domain", async () => {
    const res = await invoke(
      "apigw",
      "POST",
      "/v1/renders",
      { prompt: "a cloud", mode: "ensemble", width: 64, height: 64, steps: 6, seed: 1 },
      { prefer: "wait=20" },
    );
    assert.equal(res.statusCode, 201, res.raw);
    assert.equal(res.headers["preference-applied"], "wait=20");
    assert.equal(res.json.status, "succeeded");
    assert.match(
      res.json.links.self,
      /^https:\/\/a1b2c3d4e5\.execute-api\.us-east-1\.amazonaws\.com\/v1\/renders\/job_/,
    );
    assert.equal(res.headers.location, res.json.links.self);
    const png = await download(res.json.images[0].url);
    assert.equal((await sharp(png).metadata()).width, 64, "the presigned S3 URL serves the image");
  });

  it("caps Prefer: wait at the deployment's limit and says so", async () => {
    const res = await invoke(
      "url",
      "POST",
      "/v1/renders",
      { prompt: "capped", mode: "base", width: 64, height: 64, steps: 2 },
      { prefer: "wait=60" },
    );
    assert.ok([201, 202].includes(res.statusCode), res.raw);
    assert.equal(res.headers["preference-applied"], "wait=25");
  });

  it("reads, lists and cancels through a Function URL, with a base64-encoded body too", async () => {
    const created = await invoke(
      "url",
      "POST",
      "/v1/renders",
      { prompt: "listed", mode: "base", width: 64, height: 64, steps: 2, deadline_seconds: 600 },
      {},
      true,
    );
    assert.equal(created.statusCode, 202, created.raw);
    assert.match(created.json.links.self, /lambda-url\.us-east-1\.on\.aws/);
    const got = await invoke("url", "GET", `/v1/renders/${created.json.id}`);
    assert.equal(got.statusCode, 200);
    assert.equal(got.json.id, created.json.id);
    assert.ok(["queued", "running", "succeeded"].includes(got.json.status));
    const page = await invoke("url", "GET", "/v1/renders?limit=2");
    assert.equal(page.statusCode, 200);
    assert.equal(page.json.data.length, 2);
    assert.equal(page.json.data[0].id, created.json.id, "newest first");
    const next = await invoke("url", "GET", page.json.links.next.replace(/^https:\/\/[^/]+/, ""));
    assert.equal(next.statusCode, 200);
    assert.ok(
      next.json.data.every((j: { id: string }) => !page.json.data.some((p: { id: string }) => p.id === j.id)),
      "pages do not overlap",
    );
    const done = await invoke("url", "GET", `/v1/renders?status=succeeded&limit=100`);
    assert.ok(done.json.data.every((j: { status: string }) => j.status === "succeeded"));
  });

  /**
   * Holds the stage of the job whose prompt is `prompt` at `point` (e.g. `stage0-step3`), its progress
   * recorded, until `release`. Every other job and point passes; `disarm` (in a `finally`) lets a held
   * stage go and takes the hold away, so later tests run on a worker that never pauses.
   */
  function holdAt(point: string, prompt: string) {
    let reached!: (info: Record<string, unknown>) => void;
    let release!: () => void;
    const at = new Promise<Record<string, unknown>>((r) => (reached = r));
    const gate = new Promise<void>((r) => (release = r));
    let claimed = false;
    hold = async (p, info = {}, prepare) => {
      if (p !== point || claimed) return;
      if ((await ports.jobs.get(String(info.jobId)))?.plan.prompt !== prompt || claimed) return;
      claimed = true;
      await prepare?.();
      reached(info);
      await gate;
    };
    return {
      reached: at,
      release,
      disarm() {
        hold = undefined;
        release();
      },
    };
  }

  it("cancels a running render on the AWS family: it stops at the next step", async () => {
    // Held at step 3 of 8 while the cancel is requested: no race with the render's speed.
    const prompt = "cancel me at step 3";
    const held = holdAt("stage0-step3", prompt);
    try {
      const created = await invoke("apigw", "POST", "/v1/renders", {
        prompt,
        mode: "base",
        width: 64,
        height: 64,
        steps: 8,
      });
      assert.equal(created.statusCode, 202, created.raw);
      const id = created.json.id as string;
      assert.equal((await held.reached).jobId, id);
      const view = (await invoke("apigw", "GET", `/v1/renders/${id}`)).json;
      assert.equal(view.status, "running");
      assert.deepEqual([view.progress.step, view.progress.steps], [3, 8]);

      const canceled = await invoke("apigw", "DELETE", `/v1/renders/${id}`);
      assert.equal(canceled.statusCode, 202, canceled.raw);
      assert.equal(canceled.json.cancel_requested, true);
      // Let go, the stage looks at its job before step 4 and stops there.
      held.release();

      const deadline = Date.now() + 60_000;
      let end;
      do {
        end = (await invoke("apigw", "GET", `/v1/renders/${id}`)).json;
        if (["canceled", "succeeded", "failed"].includes(end.status)) break;
        await new Promise((r) => setTimeout(r, 50));
      } while (Date.now() < deadline);
      assert.equal(end.status, "canceled");
      assert.equal(end.error.code, "canceled");
      assert.equal(end.images.length, 0);
      assert.deepEqual([end.progress.step, end.progress.steps], [3, 8], "stopped before step 4");
      const again = await invoke("apigw", "DELETE", `/v1/renders/${id}`);
      assert.equal(again.statusCode, 409);
      assert.equal(again.headers["content-type"], "application/problem+json");
    } finally {
      held.disarm();
    }
  });

  it("answers the OpenAI Images subset synchronously", async () => {
    const res = await invoke("url", "POST", "/v1/images/generations", {
      prompt: "a kettle",
      size: "64x64",
      response_format: "b64_json",
    });
    assert.equal(res.statusCode, 200, res.raw);
    assert.equal((await sharp(Buffer.from(res.json.data[0].b64_json, "base64")).metadata()).format, "png");
  });

  it("streams a finished render's events as one buffered response", async () => {
    const created = await invoke(
      "apigw",
      "POST",
      "/v1/renders",
      { prompt: "streamed", mode: "base", width: 64, height: 64, steps: 2 },
      { prefer: "wait=20" },
    );
    assert.equal(created.statusCode, 201);
    const res = await invoke("apigw", "GET", `/v1/renders/${created.json.id}/events`);
    assert.equal(res.statusCode, 200);
    assert.match(res.headers["content-type"] ?? "", /^text\/event-stream/);
    assert.match(res.raw, /event: succeeded\ndata: \{.*\}\nid: end\n\n$/s);
    assert.equal(
      (await invoke("apigw", "GET", `/v1/renders/${created.json.id}/events`, undefined, { "last-event-id": "end" }))
        .statusCode,
      204,
    );
  });

  it("streams an event stream as it happens through streamHandler (Lambda response streaming)", async () => {
    // The Lambda Node runtime's streaming globals, as documented: streamifyResponse marks the
    // handler; HttpResponseStream.from carries the status and headers ahead of the body.
    let metadata: { statusCode: number; headers: Record<string, string> } | undefined;
    const runtime = globalThis as { awslambda?: Record<string, unknown> };
    const saved = runtime.awslambda; // the AWS SDK keeps its own state there
    runtime.awslambda = {
      ...saved,
      streamifyResponse: (fn: unknown) => fn,
      HttpResponseStream: { from: (stream: unknown, meta: typeof metadata) => ((metadata = meta), stream) },
    };
    try {
      await streamEventsOfACanceledRender(createLambdaStreamHandler(lambdaEnv, timing), () => metadata);
    } finally {
      runtime.awslambda = saved;
    }
  });

  async function streamEventsOfACanceledRender(
    streamer: LambdaStreamHandler,
    metadata: () => { statusCode: number; headers: Record<string, string> } | undefined,
  ): Promise<void> {
    // Queued and never enqueued, so the stream stays open until the render is canceled.
    const job = jobRecord({ width: 64, height: 64 }, { id: "job_streamed1", ownerKeyId: keyId, status: "queued" });
    await ports.jobs.create(job);
    const body = new PassThrough();
    let text = "";
    let ended = false;
    const firstChunk = new Promise<void>((resolve) => body.once("data", () => resolve()));
    body.on("data", (chunk: Buffer) => (text += chunk.toString("utf8")));
    const done = streamer(
      lambdaEvent("url", "GET", `/v1/renders/${job.id}/events`, {
        headers: { authorization: `Bearer ${key}` },
      }) as never,
      body,
    ).then(() => (ended = true));
    await firstChunk;
    assert.equal(ended, false, "the first bytes arrive while the stream is still open");
    assert.equal(metadata()?.statusCode, 200);
    assert.match(metadata()?.headers["content-type"] ?? "", /^text\/event-stream/);
    const canceled = await invoke("url", "DELETE", `/v1/renders/${job.id}`);
    assert.equal(canceled.statusCode, 200, canceled.raw); // a queued render is canceled at once
    await done;
    assert.match(text, /^retry: 2000\n\n/);
    assert.match(text, /event: canceled\ndata: \{.*\}\nid: end\n\n$/s);
  }

  it("answers errors as problem+json through both event types", async () => {
    for (const kind of ["apigw", "url"] as const) {
      const unauth = (await handler(lambdaEvent(kind, "GET", "/v1/renders") as never)) as LambdaResult;
      assert.equal(unauth.statusCode, 401);
      assert.equal(unauth.headers["content-type"], "application/problem+json");
      const invalid = await invoke(kind, "POST", "/v1/renders", { prompt: "x", width: 100, steps: 500 });
      assert.equal(invalid.statusCode, 400);
      assert.deepEqual(invalid.json.errors.map((e: { field: string }) => e.field).sort(), ["steps", "width"]);
      const media = await invoke(kind, "POST", "/v1/renders", "prompt=x", { "content-type": "text/plain" });
      assert.equal(media.statusCode, 415);
      assert.equal((await invoke(kind, "GET", "/v1/renders/job_nope")).statusCode, 404);
    }
    const spec = await invoke("url", "GET", "/openapi.json");
    assert.equal(spec.json.servers[0].url, "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws");
  });

  it("img2img and inpaint on the AWS family: the input stored once in S3, pixels outside the mask byte-identical", async () => {
    const W = 96;
    const H = 64;
    const rgb = new Uint8Array(W * H * 3).map((_, i) => (i * 29 + (i >> 6) * 7) & 255);
    const png = await sharp(rgb, { raw: { width: W, height: H, channels: 3 } })
      .png()
      .toBuffer();
    const mask = await sharp(
      new Uint8Array(W * H).map((_, p) => (p % W >= W / 2 ? 255 : 0)),
      { raw: { width: W, height: H, channels: 1 } },
    )
      .png()
      .toBuffer();
    const rgbOf = async (bytes: Buffer) =>
      (await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true })).data;

    const img2img = await invoke(
      "apigw",
      "POST",
      "/v1/renders",
      { prompt: "a fox", mode: "img2img", image: png.toString("base64"), strength: 0.5, steps: 4, seed: 3 },
      { prefer: "wait=20" },
    );
    assert.equal(img2img.statusCode, 201, img2img.raw);
    assert.equal(img2img.json.status, "succeeded", img2img.raw);
    const id = img2img.json.id as string;
    assert.deepEqual(await ports.blobs.list(`jobs/${id}/inputs/`), [`jobs/${id}/inputs/image.png`]);
    assert.deepEqual(Buffer.from((await ports.blobs.get(`jobs/${id}/inputs/image.png`))!), png);
    const meta = await sharp(await download(img2img.json.images[0].url)).metadata();
    assert.deepEqual([meta.width, meta.height], [W, H]);

    const inpaint = await invoke(
      "url",
      "POST",
      "/v1/renders",
      {
        prompt: "a fox",
        mode: "inpaint",
        image: `data:image/png;base64,${png.toString("base64")}`,
        mask: mask.toString("base64"),
        steps: 4,
        seed: 5,
      },
      { prefer: "wait=20" },
    );
    assert.equal(inpaint.statusCode, 201, inpaint.raw);
    assert.equal(inpaint.json.status, "succeeded", inpaint.raw);
    const out = await rgbOf(await download(inpaint.json.images[0].url));
    assert.equal(out.length, rgb.length);
    let changed = 0;
    for (let p = 0; p < W * H; p++)
      for (let c = 0; c < 3; c++) {
        if (p % W < W / 2) assert.equal(out[p * 3 + c], rgb[p * 3 + c], `pixel ${p} outside the mask`);
        else if (out[p * 3 + c] !== rgb[p * 3 + c]) changed++;
      }
    assert.ok(changed > 500, `${changed} masked values changed`);
  });

  it("sweeps expired outputs on the AWS family: S3 objects, then the DynamoDB record", async () => {
    const id = "job_aws_sweep";
    const created = "2020-01-01T00:00:00.000Z";
    const plan = (await ports.jobs.listByOwner((await ports.keys.list())[0]!.id, { limit: 1 })).jobs[0]!.plan;
    await ports.jobs.create({
      id,
      ownerKeyId: "key_x",
      status: "succeeded",
      version: 1,
      createdAt: created,
      updatedAt: created,
      finishedAt: created,
      plan,
      images: [],
      stageTimings: [],
      expiresAt: Date.parse(created) / 1000 + 60,
    });
    await ports.blobs.put(`jobs/${id}/images/0.png`, Uint8Array.of(1));
    const result = await sweepExpiredJobs(ports, { now: new Date() });
    assert.deepEqual(result.deletedJobs, [id], "only the job past its retention; this run's renders stay");
    assert.equal(await ports.jobs.get(id), null);
    assert.deepEqual(await ports.blobs.list(`jobs/${id}/`), []);
  });
});
