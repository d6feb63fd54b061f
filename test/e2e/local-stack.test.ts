import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { readPngText, runPipelineStage } from "@kiln/gpu-worker";
import {
  decodeLatents,
  encodeLatents,
  failDeadLetteredJobs,
  planRender,
  queueForStage,
  renderRequestSchema,
} from "@kiln/shared";
import sharp from "sharp";

import { api, download, type LocalStack, startLocalStack, waitForJob } from "../support/local-stack.js";

/** The local stack end to end over HTTP: real SQLite queue, real blob files, real ONNX sessions, real PNGs. */
describe("local stack, end to end", () => {
  let stack: LocalStack;
  before(async () => {
    stack = await startLocalStack();
  });
  after(() => stack.stop());

  async function render(body: Record<string, unknown>) {
    const created = await api(stack, "POST", "/v1/renders", body);
    assert.equal(created.status, 202, created.text);
    assert.match(created.headers.get("location") ?? "", new RegExp(`/v1/renders/${created.json.id}$`));
    const job = await waitForJob(stack, created.json.id);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    return job;
  }

  for (const [mode, extra, size] of [
    ["base", {}, [128, 96]],
    ["ensemble", {}, [128, 96]],
    ["sdedit", { strength: 0.5 }, [128, 96]],
    ["sdedit", { hires_scale: 1.5 }, [192, 144]],
  ] as const) {
    it(`renders a ${mode} job ${JSON.stringify(extra)} to a real PNG of the right size`, async () => {
      const job = await render({
        prompt: "a red fox in snow",
        mode,
        width: 128,
        height: 96,
        steps: 8,
        seed: 5,
        ...extra,
      });
      assert.equal(job.mode, mode);
      assert.equal(job.images.length, 1);
      const png = await download(job.images[0].url);
      const meta = await sharp(png).metadata();
      assert.equal(meta.format, "png");
      assert.deepEqual([meta.width, meta.height], size);
      assert.deepEqual([job.images[0].width, job.images[0].height], size);
      const stats = await sharp(png).stats();
      assert.ok(
        stats.channels.some((c) => c.stdev > 1),
        "the image is not a flat colour",
      );
      assert.match(
        readPngText(png).parameters ?? "",
        /^a red fox in snow\n.*Steps: 8, Sampler: Euler, CFG scale: 5, Seed: 5, Size: /s,
      );
      assert.equal(job.progress.step, job.progress.steps);
      assert.equal(job.progress.stage, mode === "base" ? 0 : 1);
    });
  }

  it("renders n images in one job with seeds seed+i, in webp and jpeg too", async () => {
    const job = await render({
      prompt: "a boat",
      mode: "base",
      width: 64,
      height: 64,
      steps: 4,
      seed: 100,
      n: 2,
      output_format: "webp",
    });
    assert.deepEqual(
      job.images.map((i: { seed: number }) => i.seed),
      [100, 101],
    );
    const [a, b] = await Promise.all(job.images.map((i: { url: string }) => download(i.url)));
    assert.equal((await sharp(a!).metadata()).format, "webp");
    assert.notDeepEqual(a, b);
    const jpeg = await render({
      prompt: "a boat",
      mode: "base",
      width: 64,
      height: 64,
      steps: 4,
      seed: 100,
      output_format: "jpeg",
    });
    assert.equal((await sharp(await download(jpeg.images[0].url)).metadata()).format, "jpeg");
  });

  it("is deterministic: the same request and seed give byte-identical PNGs; another seed does not", async () => {
    const body = { prompt: "determinism", width: 64, height: 64, steps: 6, seed: 1234 };
    const [a, b, c] = await Promise.all([render(body), render(body), render({ ...body, seed: 1235 })]);
    const [pa, pb, pc] = await Promise.all([a, b, c].map((j) => download(j.images[0].url)));
    assert.ok(pa!.equals(pb!), "same seed, same bytes");
    assert.ok(!pa!.equals(pc!), "another seed, other bytes");
  });

  it("split equivalence: an ensemble render through the queue equals both stages run in one process", async () => {
    const body = { prompt: "a lighthouse", mode: "ensemble" as const, width: 64, height: 64, steps: 10, seed: 77 };
    const job = await render(body);
    const viaQueue = await download(job.images[0].url);

    const plan = planRender(
      renderRequestSchema({ minSide: 64, maxSide: 2048, maxPixels: 2048 * 2048, maxPromptChars: 4000 }).parse(body),
      77,
    );
    const models = stack.models!;
    const base = await runPipelineStage(models.base!, { jobId: job.id, plan, stage: plan.stages[0]! }, undefined);
    assert.equal(base.kind, "latents");
    // The hand-over goes through the same fp16 codec in memory, without the queue or the blob store.
    const handed = await decodeLatents(
      await encodeLatents(base.kind === "latents" ? base.latents : (undefined as never)),
    );
    const refined = await runPipelineStage(models.refiner!, { jobId: job.id, plan, stage: plan.stages[1]! }, handed);
    assert.equal(refined.kind, "images");
    assert.ok(Buffer.from(refined.kind === "images" ? refined.images[0]!.bytes : []).equals(viaQueue));
  });

  it("answers 401 problem+json without a valid key", async () => {
    for (const auth of [
      undefined,
      "Bearer nope",
      "Bearer kiln_aaaaaaaaaa_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ]) {
      const res = await fetch(`${stack.url}/v1/renders`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(auth ? { authorization: auth } : {}) },
        body: "{}",
      });
      assert.equal(res.status, 401);
      assert.equal(res.headers.get("content-type"), "application/problem+json");
      assert.equal(((await res.json()) as { code: string }).code, "unauthorized");
    }
  });

  it("answers 400 problem+json naming each offending field", async () => {
    const res = await api(stack, "POST", "/v1/renders", {
      prompt: "",
      width: 100,
      steps: 500,
      mode: "turbo",
      surprise: 1,
    });
    assert.equal(res.status, 400);
    assert.equal(res.headers.get("content-type"), "application/problem+json");
    const fields = res.json.errors.map((e: { field: string }) => e.field);
    for (const f of ["prompt", "width", "steps", "mode", "surprise"])
      assert.ok(fields.includes(f), `${f} in ${fields}`);
    const bad = await api(stack, "POST", "/v1/renders", "{not json");
    assert.equal(bad.status, 400);
    assert.equal(bad.headers.get("content-type"), "application/problem+json");
  });

  it("answers 404 for unknown jobs and other keys' jobs", async () => {
    assert.equal((await api(stack, "GET", "/v1/renders/job_nope")).status, 404);
  });

  it("GET /healthz answers 200", async () => {
    const res = await fetch(`${stack.url}/healthz`);
    assert.equal(res.status, 200);
  });
});

describe("local stack, queue semantics", () => {
  let stack: LocalStack;
  before(async () => {
    stack = await startLocalStack({ worker: false, env: { KILN_MAX_RECEIVES: "3" } });
  });
  after(() => stack.stop());

  it("a claimed message reappears after its visibility timeout; after N receives it is dead-lettered and the job fails with a clear code", async () => {
    const created = await api(stack, "POST", "/v1/renders", { prompt: "doomed", width: 64, height: 64, steps: 2 });
    assert.equal(created.status, 202);
    const queue = queueForStage("base");
    // Three deliveries that each "crash" (never ack): the message comes back after each visibility timeout.
    for (let receive = 1; receive <= 3; receive++) {
      let got: Awaited<ReturnType<typeof stack.ports.queue.receive>> = [];
      const deadline = Date.now() + 5000;
      while (got.length === 0 && Date.now() < deadline)
        got = await stack.ports.queue.receive(queue, { visibilitySeconds: 1, waitSeconds: 1 });
      assert.equal(got.length, 1, `delivery ${receive}`);
      assert.equal(got[0]!.receiveCount, receive);
      assert.equal((got[0]!.body as { jobId: string }).jobId, created.json.id);
    }
    await new Promise((r) => setTimeout(r, 1100));
    // The fourth receive finds it over the limit: dead-lettered, not delivered.
    assert.equal((await stack.ports.queue.receive(queue, { visibilitySeconds: 1, waitSeconds: 0 })).length, 0);
    assert.equal((await stack.ports.queue.peekDeadLetters(queue)).length, 1);
    assert.deepEqual(await failDeadLetteredJobs(stack.ports, ["base", "refine"]), [created.json.id]);
    const job = (await api(stack, "GET", `/v1/renders/${created.json.id}`)).json;
    assert.equal(job.status, "failed");
    assert.equal(job.error.code, "stage_dead_lettered");
    assert.match(job.error.message, /kiln dlq replay/);
  });
});
