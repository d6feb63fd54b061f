/**
 * Batching compatible jobs into one UNet batch (engine/unet-group.ts, unet-batch.ts) on the tiny models, CPU
 * provider: every job run in a group gives the same bytes (latents, and image files) as the same job run alone,
 * for several seeds, prompts, guidance scales and rescales, n = 1 and n = 2, Euler and Euler ancestral, an
 * ensemble's two stages; a cancel or a failure of one member leaves the others identical; stages that cannot
 * share a batch (other step counts, guidance off) still run, in their own batches. The UNet's calls are observed
 * (their batch sizes counted) by wrapping the session's `run`, which still runs.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { type Latents, planRender, type RenderPlan, type RenderRequestInput, renderRequestSchema } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import sharp from "sharp";

import { type PreparedSource, prepareSource } from "../../src/engine/img2img/source-image.js";
import { loadSdxlModel, type SdxlModel } from "../../src/engine/sdxl-model.js";
import { runPipelineStage, type StageHooks, type StageResult } from "../../src/engine/sdxl-pipeline.js";
import { type DenoiseMember, splitBySession } from "../../src/engine/unet-batch.js";
import { UnetGroup } from "../../src/engine/unet-group.js";
import { writeReferenceModel } from "../../src/models/reference/reference-models.js";
import { writeTinyModel } from "../../src/models/tiny-models.js";
import { GpuTurns } from "../../src/runtime/pipeline/gpu-turns.js";
import { recordUnetRows } from "./unet-calls.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-unet-group-"));
const logger = createLogger({ level: "silent" });
const models: {
  base?: SdxlModel;
  refiner?: SdxlModel;
  inpainting?: SdxlModel;
  referenceBase?: SdxlModel;
  referenceRefiner?: SdxlModel;
} = {};
/** Batch size of every UNet call, per model. */
const calls = new Map<SdxlModel, number[]>();

before(async () => {
  const options = { providers: ["cpu" as const], logger };
  writeTinyModel(path.join(tmp, "base"), { role: "base" });
  writeTinyModel(path.join(tmp, "refiner"), { role: "refiner" });
  models.base = await loadSdxlModel(path.join(tmp, "base"), "base", options);
  models.refiner = await loadSdxlModel(path.join(tmp, "refiner"), "refiner", options);
  writeTinyModel(path.join(tmp, "inpaint"), { role: "base", unetInChannels: 9 });
  models.inpainting = await loadSdxlModel(path.join(tmp, "inpaint"), "base", options);
  // The reference models' UNet is another graph (the exact denoiser of a picture set): a second check that rows
  // do not depend on their batch on the CPU provider.
  writeReferenceModel(path.join(tmp, "reference-base"), { role: "base" });
  writeReferenceModel(path.join(tmp, "reference-refiner"), { role: "refiner" });
  models.referenceBase = await loadSdxlModel(path.join(tmp, "reference-base"), "base", options);
  models.referenceRefiner = await loadSdxlModel(path.join(tmp, "reference-refiner"), "refiner", options);
  for (const m of [models.base, models.refiner, models.inpainting]) calls.set(m, recordUnetRows(m));
});

after(async () => {
  for (const m of Object.values(models)) await m?.release();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const plan = (body: Partial<RenderRequestInput>, seed: number): RenderPlan =>
  planRender(
    renderRequestSchema().parse({ prompt: "a red fox in snow", width: 64, height: 64, steps: 5, ...body }),
    seed,
  );

interface Job {
  plan: RenderPlan;
  stage?: number;
  input?: Latents;
  hooks?: StageHooks;
  source?: PreparedSource;
}

const jobOf = (j: Job, i: number) => ({
  jobId: `job_${i}`,
  plan: j.plan,
  stage: j.plan.stages[j.stage ?? 0]!,
  source: j.source,
});

async function alone(model: SdxlModel, j: Job, i: number): Promise<StageResult> {
  return runPipelineStage(model, jobOf(j, i), j.input, j.hooks);
}

/** The jobs' stages run together as one group, as the worker runs stages claimed together. */
async function together(model: SdxlModel, jobs: Job[], turn?: GpuTurns): Promise<PromiseSettledResult<StageResult>[]> {
  const group = new UnetGroup(jobs.length, turn, logger);
  return Promise.allSettled(
    jobs.map((j, i) => {
      const seat = group.seat(i);
      return runPipelineStage(model, jobOf(j, i), j.input, { ...j.hooks, group: seat, gpu: seat.gpu }).finally(() =>
        seat.gpu.release(),
      );
    }),
  );
}

function value(r: PromiseSettledResult<StageResult>): StageResult {
  if (r.status === "rejected") throw r.reason;
  return r.value;
}

/** The bytes a stage produced: its latents, or its image files (pixels, watermark, parameters chunk and all). */
function bytes(r: StageResult): Buffer {
  if (r.kind === "latents")
    return Buffer.from(r.latents.data.buffer, r.latents.data.byteOffset, r.latents.data.byteLength);
  return Buffer.concat(r.images.map((i) => Buffer.from(i.bytes)));
}

async function unetCalls<T>(model: SdxlModel, run: () => Promise<T>): Promise<{ result: T; batches: number[] }> {
  const seen = calls.get(model)!;
  const from = seen.length;
  const result = await run();
  return { result, batches: seen.slice(from) };
}

const MIXED: Job[] = [
  { plan: plan({ mode: "base", scheduler: "euler_a", guidance_scale: 5 }, 11) },
  { plan: plan({ mode: "base", scheduler: "euler", prompt: "a lighthouse at dusk", guidance_scale: 7.5, n: 2 }, 12) },
  {
    plan: plan(
      {
        mode: "base",
        scheduler: "euler_a",
        prompt: "a bowl of plums",
        negative_prompt: "blurry",
        guidance_rescale: 0.7,
      },
      13,
    ),
  },
  { plan: plan({ mode: "base", scheduler: "euler", guidance_scale: 3, n: 2 }, 14) },
];

describe("UNet batches of several jobs' stages", { timeout: 180_000 }, () => {
  it("four jobs (n = 1 and 2, two schedulers, several prompts, seeds and guidance) give the bytes they give alone, in one batch per step", async () => {
    const model = models.base!;
    const solo: StageResult[] = [];
    for (const [i, j] of MIXED.entries()) solo.push(await alone(model, j, i));
    const { result, batches } = await unetCalls(model, () => together(model, MIXED));
    assert.deepEqual(batches, [12, 12, 12, 12, 12], "one call per step over 2 + 4 + 2 + 4 rows");
    result.forEach((r, i) => assert.ok(bytes(value(r)).equals(bytes(solo[i]!)), `job ${i}: identical`));
    // Each job's UNet time is its rows' share of the shared calls: 2 : 4 : 2 : 4, not the whole time four times.
    const unet = result.map((r) => value(r).unetSeconds);
    assert.ok(unet.every((t) => t > 0));
    for (const [i, rows] of [2, 4, 2, 4].entries())
      assert.ok(Math.abs(unet[i]! / unet[0]! - rows / 2) < 1e-9, `job ${i}: ${unet[i]} s for ${rows} rows`);
  });

  it("an ensemble's base and refine stages, each grouped, give the images the jobs give alone", async () => {
    const jobs = [11, 12, 13].map((seed, i) =>
      plan(
        {
          mode: "ensemble",
          prompt: ["a fox", "a barn owl", "a red kite"][i],
          scheduler: "euler_a",
          steps: 6,
          n: i === 1 ? 2 : 1,
          guidance_scale: 4 + i,
        },
        seed,
      ),
    );
    const solo: StageResult[] = [];
    for (const [i, p] of jobs.entries()) {
      const base = await alone(models.base!, { plan: p }, i);
      assert.equal(base.kind, "latents");
      solo.push(
        await alone(
          models.refiner!,
          { plan: p, stage: 1, input: base.kind === "latents" ? base.latents : undefined },
          i,
        ),
      );
    }
    const bases = (
      await together(
        models.base!,
        jobs.map((p) => ({ plan: p })),
      )
    ).map(value);
    const { result, batches } = await unetCalls(models.refiner!, () =>
      together(
        models.refiner!,
        jobs.map((p, i) => {
          const b = bases[i]!;
          return { plan: p, stage: 1, input: b.kind === "latents" ? b.latents : undefined };
        }),
      ),
    );
    assert.ok(batches.length > 0 && batches.every((b) => b === 8), `refine batches of 2 + 4 + 2 rows: ${batches}`);
    result.forEach((r, i) => assert.ok(bytes(value(r)).equals(bytes(solo[i]!)), `job ${i}: identical images`));
  });

  it("on the reference models too: an ensemble of three prompts grouped gives the images each gives alone", async () => {
    const prompts = [
      "a small red circle at the left on a blue background",
      "a large green square at the right on a yellow background",
      "a red circle on a blue background",
    ];
    const jobs = prompts.map((prompt, i) =>
      plan({ mode: "ensemble", prompt, steps: 8, guidance_scale: 3 + i, n: i === 2 ? 2 : 1 }, 40 + i),
    );
    const solo: StageResult[] = [];
    for (const [i, p] of jobs.entries()) {
      const base = await alone(models.referenceBase!, { plan: p }, i);
      const input = base.kind === "latents" ? base.latents : undefined;
      solo.push(await alone(models.referenceRefiner!, { plan: p, stage: 1, input }, i));
    }
    const bases = (
      await together(
        models.referenceBase!,
        jobs.map((p) => ({ plan: p })),
      )
    ).map(value);
    const refined = await together(
      models.referenceRefiner!,
      jobs.map((p, i) => {
        const b = bases[i]!;
        return { plan: p, stage: 1, input: b.kind === "latents" ? b.latents : undefined };
      }),
    );
    refined.forEach((r, i) => assert.ok(bytes(value(r)).equals(bytes(solo[i]!)), `job ${i}: identical images`));
  });

  it("inpainting grouped (4-channel blend per job; 9-channel UNet inputs per job) gives the images it gives alone", async () => {
    const rgb = new Uint8Array(64 * 64 * 3).map((_, i) => (i * 37 + (i >> 7) * 11) & 255);
    const picture = await sharp(rgb, { raw: { width: 64, height: 64, channels: 3 } })
      .png()
      .toBuffer();
    const mask = await sharp(
      new Uint8Array(64 * 64).map((_, p) => (p % 64 >= 32 ? 255 : 0)),
      { raw: { width: 64, height: 64, channels: 1 } },
    )
      .png()
      .toBuffer();
    const inpaintJob = async (body: Partial<RenderRequestInput>, seed: number): Promise<Job> => {
      const request = renderRequestSchema().parse({
        prompt: "a fox",
        steps: 4,
        image: "x",
        mask: "m",
        mode: "inpaint",
        ...body,
      });
      const p = planRender(request, seed, {
        image: { key: "image", width: 64, height: 64 },
        mask: { key: "mask", width: 64, height: 64 },
      });
      return { plan: p, source: await prepareSource(p.source!, "inpaint", picture, mask, p.seed) };
    };
    for (const model of [models.base!, models.inpainting!]) {
      const jobs = [
        await inpaintJob({}, 31),
        await inpaintJob({ prompt: "a hare", n: 2, guidance_scale: 6 }, 32),
        await inpaintJob({ prompt: "an owl", strength: 0.7 }, 31),
        await inpaintJob({ prompt: "a stoat", strength: 0.7, scheduler: "euler_a" }, 33),
      ];
      const solo: StageResult[] = [];
      for (const [i, j] of jobs.entries()) solo.push(await alone(model, j, i));
      const { result, batches } = await unetCalls(model, () => together(model, jobs));
      // Strength 0.9999 and 0.7 start at other timesteps: two batches, 2 + 4 rows and 2 + 2 rows.
      assert.deepEqual([...new Set(batches)].sort(), [4, 6], `${model.unetInChannels} channels: ${batches}`);
      result.forEach((r, i) =>
        assert.ok(bytes(value(r)).equals(bytes(solo[i]!)), `${model.unetInChannels} channels, job ${i}: identical`),
      );
    }
  });

  it("a job canceled mid-batch leaves at the next step; the others finish with the bytes they give alone", async () => {
    const model = models.base!;
    const solo: StageResult[] = [];
    for (const [i, j] of MIXED.entries()) solo.push(await alone(model, j, i));
    const cancel = new AbortController();
    const jobs = MIXED.map((j, i) =>
      i === 1
        ? {
            ...j,
            hooks: {
              signal: cancel.signal,
              onStep: (step: number) => void (step === 2 && cancel.abort(new Error("canceled"))),
            },
          }
        : j,
    );
    const { result, batches } = await unetCalls(model, () => together(model, jobs));
    assert.deepEqual(batches, [12, 12, 8, 8, 8], "job 1's four rows leave after its second step");
    assert.equal(result[1]!.status, "rejected");
    assert.equal((result[1] as PromiseRejectedResult).reason.message, "canceled");
    for (const i of [0, 2, 3]) assert.ok(bytes(value(result[i]!)).equals(bytes(solo[i]!)), `job ${i}: identical`);
  });

  it("a job whose own step fails fails alone; a job that leaves before denoising does not hold the others", async () => {
    const model = models.base!;
    const solo: StageResult[] = [];
    for (const [i, j] of MIXED.entries()) solo.push(await alone(model, j, i));
    const jobs = MIXED.map((j, i) =>
      i === 2
        ? {
            ...j,
            hooks: {
              onStep: (step: number) => {
                if (step === 3) throw new Error("progress store broke");
              },
            },
          }
        : j,
    );
    const group = new UnetGroup(jobs.length + 1, undefined, logger);
    group.seat(jobs.length).leave(); // e.g. a duplicate delivery acknowledged in its precheck
    const result = await Promise.allSettled(
      jobs.map((j, i) => runPipelineStage(model, jobOf(j, i), undefined, { ...j.hooks, group: group.seat(i) })),
    );
    assert.equal((result[2] as PromiseRejectedResult).reason.message, "progress store broke");
    for (const i of [0, 1, 3]) assert.ok(bytes(value(result[i]!)).equals(bytes(solo[i]!)), `job ${i}: identical`);
  });

  it("a job canceled while its group waits for a late member leaves at once; the group still waits for the late one", async () => {
    const model = models.base!;
    const jobs = [MIXED[0]!, MIXED[1]!, MIXED[2]!];
    const solo: StageResult[] = [];
    for (const [i, j] of jobs.entries()) solo.push(await alone(model, j, i));
    // The late member is waited for however slow the machine (the group's own deadline is the next test's).
    const group = new UnetGroup(3, undefined, logger, 600_000);
    const cancel = new AbortController();
    let joined!: () => void;
    const oneJoined = new Promise<void>((r) => (joined = r));
    // Seat 1 as the stage sees it, telling the test when its stage has arrived at step 6.
    const seat1 = { ...group.seat(1), denoise: (m: DenoiseMember) => (setImmediate(joined), group.seat(1).denoise(m)) };
    const { result, batches } = await unetCalls(model, async () => {
      const first = [
        runPipelineStage(model, jobOf(jobs[0]!, 0), undefined, { group: group.seat(0) }),
        runPipelineStage(model, jobOf(jobs[1]!, 1), undefined, { group: seat1, signal: cancel.signal }),
      ].map((p) =>
        p.then(
          (r) => ({ status: "fulfilled" as const, value: r }),
          (e: unknown) => ({ status: "rejected" as const, reason: e }),
        ),
      );
      await oneJoined;
      cancel.abort(new Error("canceled while waiting"));
      const canceled = await first[1]!;
      assert.equal(canceled.status, "rejected", "out at once, before the late member arrives");
      const late = runPipelineStage(model, jobOf(jobs[2]!, 2), undefined, { group: group.seat(2) });
      return [await first[0]!, canceled, await late.then((r) => ({ status: "fulfilled" as const, value: r }))];
    });
    assert.deepEqual(batches, [4, 4, 4, 4, 4], "jobs 0 and 2 in one batch, job 1 never in it");
    assert.equal(((result[1] as PromiseRejectedResult).reason as Error).message, "canceled while waiting");
    for (const i of [0, 2]) assert.ok(bytes(value(result[i]!)).equals(bytes(solo[i]!)), `job ${i}: identical`);
  });

  it("members that have arrived do not wait past the group's deadline for one not prepared; it denoises alone after", async () => {
    const model = models.base!;
    const jobs = [MIXED[0]!, MIXED[2]!];
    const solo: StageResult[] = [];
    for (const [i, j] of jobs.entries()) solo.push(await alone(model, j, i));
    // The second stage starts only once the first has finished: without the deadline the first would wait forever.
    const group = new UnetGroup(2, undefined, logger, 50);
    const { result, batches } = await unetCalls(model, async () => {
      const first = await runPipelineStage(model, jobOf(jobs[0]!, 0), undefined, { group: group.seat(0) });
      const late = await runPipelineStage(model, jobOf(jobs[1]!, 1), undefined, { group: group.seat(1) });
      return [first, late];
    });
    assert.deepEqual(batches, [2, 2, 2, 2, 2, 2, 2, 2, 2, 2], "each alone: 5 steps of 2 rows, one after the other");
    result.forEach((r, i) => assert.ok(bytes(r).equals(bytes(solo[i]!)), `job ${i}: identical`));
  });

  it("stages that cannot share a batch (other steps, guidance off) run in their own batches, identical to alone", async () => {
    const model = models.base!;
    const jobs: Job[] = [
      { plan: plan({ mode: "base" }, 21) },
      { plan: plan({ mode: "base", steps: 4 }, 22) },
      { plan: plan({ mode: "base", guidance_scale: 1 }, 23) },
      { plan: plan({ mode: "base", guidance_scale: 1, n: 2 }, 24) },
      { plan: plan({ mode: "base", prompt: "a teapot" }, 25) },
    ];
    const solo: StageResult[] = [];
    for (const [i, j] of jobs.entries()) solo.push(await alone(model, j, i));
    const turns = new GpuTurns(1);
    const { result, batches } = await unetCalls(model, () => together(model, jobs, turns));
    assert.deepEqual(
      [...batches].sort((a, b) => a - b),
      [...Array(4).fill(2), ...Array(5).fill(3), ...Array(5).fill(4)],
      "5 steps × 4 rows (two guided jobs), 5 × 3 rows (guidance off, n = 1 + 2), 4 × 2 rows (4 steps)",
    );
    result.forEach((r, i) => assert.ok(bytes(value(r)).equals(bytes(solo[i]!)), `job ${i}: identical`));
    assert.equal(turns.busy, 0, "the group gave its one GPU turn back");
  });

  it("a batch is cut where it would leave the TensorRT engine's batch profile (2–8 rows) for the model's own session", () => {
    // The engine profile as batchRange("unet", 4) builds it; only the batch arithmetic is exercised here (no GPU).
    const sessionOf = (_: DenoiseMember, rows: number) => (rows >= 2 && rows <= 8 ? "engine" : "own");
    const member = (n: number, guided = true) => ({ n, guided }) as DenoiseMember;
    const rows = (batches: DenoiseMember[][]) => batches.map((b) => b.map((m) => (m.guided ? 2 * m.n : m.n)));
    assert.deepEqual(rows(splitBySession([member(1), member(2), member(1), member(1), member(2)], sessionOf)), [
      [2, 4, 2],
      [2, 4],
    ]);
    assert.deepEqual(rows(splitBySession([member(4), member(1)], sessionOf)), [[8], [2]]);
    assert.deepEqual(rows(splitBySession([member(1, false), member(1, false)], sessionOf)), [[1], [1]]);
    // Without engines every size runs on the model's own session: one batch.
    assert.deepEqual(rows(splitBySession([member(4), member(4), member(4)], () => "own")), [[8, 8, 8]]);
  });
});
