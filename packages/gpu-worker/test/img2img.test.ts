import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { planRender, type RenderRequestInput, renderRequestSchema } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import * as ort from "onnxruntime-node";
import sharp from "sharp";

import {
  binariseMask,
  blendKnownLatents,
  compositeOverOriginal,
  downsampleMaskNearest,
  fillInpaintModelInput,
  maskedImage,
} from "../src/engine/img2img/mask.js";
import { prepareSource } from "../src/engine/img2img/source-image.js";
import { encodeImageLatents, rgb8ToVaeInput, sampleLatentDistribution } from "../src/engine/img2img/vae-encoder.js";
import { NoiseSource } from "../src/engine/noise.js";
import { createScheduler } from "../src/engine/schedulers/index.js";
import { loadSdxlModel, type SdxlModel } from "../src/engine/sdxl-model.js";
import { runPipelineStage, stageSchedule } from "../src/engine/sdxl-pipeline.js";
import { writeTinyModel } from "../src/models/tiny-models.js";

/** img2img, inpaint and outpaint: diffusers' formulas with constants computed from them, then runPipelineStage end to end. */

describe("img2img math (diffusers' formulas)", () => {
  it("samples the encoder's diagonal Gaussian: mean + exp(0.5·clamp(logvar, −30, 20))·ε, × 0.13025", () => {
    // [mean ‖ logvar] for 3 latents; constants from the formula in float32 (numpy):
    // lv = np.clip(logvar, -30, 20); std = exp(0.5·lv); (mean + std·eps) · 0.13025, with exp correctly rounded
    // to float32 (exp(10) = 22026.46484375; numpy's float32 exp gives the next float up, 22026.466796875).
    const params = Float32Array.from([0.5, -1.2, 0.25, -40, 25, -2.5]);
    const eps = Float32Array.from([0.3, -0.7, 1.1]);
    const out = sampleLatentDistribution(params, eps, 0.13025);
    assert.deepEqual(Array.from(out), [0.06512501835823059, -2008.4193115234375, 0.07361147552728653]);
  });

  it("pixels enter the VAE as 2·x/255 − 1, CHW", () => {
    const rgb = Uint8Array.from([0, 128, 255, 64, 32, 16]); // 2×1 pixels
    const x = rgb8ToVaeInput(rgb, 2, 1);
    const v = (b: number) => Math.fround(2 * Math.fround(b / 255) - 1);
    assert.deepEqual(Array.from(x), [v(0), v(64), v(128), v(32), v(255), v(16)]);
  });

  it("binarises the mask at 0.5 and downsamples it as torch's nearest interpolate", () => {
    assert.deepEqual(Array.from(binariseMask(Uint8Array.from([0, 127, 128, 255]))), [0, 0, 1, 1]);
    // 20 → 3: scale float32(20/3) = 6.6666665; sources ⌊0⌋, ⌊6.6666665⌋, ⌊13.333333⌋ = 0, 6, 13.
    const row = new Float32Array(20).map((_, i) => i);
    assert.deepEqual(Array.from(downsampleMaskNearest(row, 20, 1, 3, 1)), [0, 6, 13]);
    // ×8: cell (y, x) takes pixel (8y, 8x).
    const grid = new Float32Array(16 * 16).map((_, i) => i);
    assert.deepEqual(Array.from(downsampleMaskNearest(grid, 16, 16, 2, 2)), [0, 8, 128, 136]);
  });

  it("blends (1 − m)·known + m·latents per latent cell, every channel and image", () => {
    const mask = Float32Array.from([0, 1]);
    const latents = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]); // [2 images, 2 channels, 1, 2]
    const known = Float32Array.from([-1, -2, -3, -4, -5, -6, -7, -8]);
    assert.deepEqual(Array.from(blendKnownLatents(latents, known, mask)), [-1, 2, -3, 4, -5, 6, -7, 8]);
  });

  it("masks the picture with image·(mask < 0.5) and lays out the 9-channel input as latents ‖ mask ‖ masked latents", () => {
    assert.deepEqual(
      Array.from(maskedImage(Float32Array.from([0.5, -0.5, 0.25, 1]), Float32Array.from([0, 1]))),
      [0.5, 0, 0.25, 0],
    );
    // One image, one latent cell, CFG batch of 2: each row is [latents/σ (4), mask (1), masked latents (4)].
    const latents = Float32Array.from([2, 4, 6, 8]);
    const conditioning = Float32Array.from([1, 10, 20, 30, 40]);
    const out = fillInpaintModelInput(latents, 2, [conditioning], new Float32Array(18));
    assert.deepEqual(Array.from(out), [1, 2, 3, 4, 1, 10, 20, 30, 40, 1, 2, 3, 4, 1, 10, 20, 30, 40]);
  });

  it("composites the original outside the mask exactly", () => {
    const gen = Uint8Array.from([10, 10, 10, 200, 200, 200, 100, 100, 100]);
    const orig = Uint8Array.from([50, 60, 70, 80, 90, 100, 0, 255, 128]);
    // m = 128: round((orig·127 + gen·128)/255) → 50, round((255·127 + 100·128)/255) = 177, round((128·127 + 12800)/255) = 114.
    const out = compositeOverOriginal(gen, orig, Uint8Array.from([0, 255, 128]));
    assert.deepEqual(Array.from(out), [50, 60, 70, 200, 200, 200, 50, 177, 114]);
  });

  it("starts img2img at diffusers' get_timesteps index for strength", () => {
    // 30 steps at 0.3: init_timestep = min(int(30·0.3), 30) = 9, t_start = 21.
    const scheduler = createScheduler(
      { num_train_timesteps: 1000, timestep_spacing: "leading", steps_offset: 1 },
      {
        name: "euler",
      },
    );
    scheduler.setTimesteps(30);
    const plan = planRender(
      renderRequestSchema().parse({ prompt: "x", mode: "img2img", image: "x", steps: 30, strength: 0.3 }),
      1,
      { image: { key: "k", width: 64, height: 64 } },
    );
    assert.deepEqual(stageSchedule(scheduler, plan, plan.stages[0]!), { begin: 21, end: 30 });
    assert.equal(plan.stages[0]!.start, "image");
    assert.equal(plan.width, 64);
  });
});

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-img2img-"));
const logger = createLogger({ level: "silent" });
let base: SdxlModel;
let inpainting: SdxlModel;
let picture: Uint8Array;
let pictureRgb: Uint8Array;
let maskPng: Uint8Array;

before(async () => {
  const options = { providers: ["cpu" as const], logger };
  writeTinyModel(path.join(tmp, "base"), { role: "base" });
  writeTinyModel(path.join(tmp, "inpaint"), { role: "base", unetInChannels: 9 });
  base = await loadSdxlModel(path.join(tmp, "base"), "base", options);
  inpainting = await loadSdxlModel(path.join(tmp, "inpaint"), "base", options);
  pictureRgb = new Uint8Array(64 * 64 * 3).map((_, i) => (i * 37 + (i >> 7) * 11) & 255);
  picture = await sharp(pictureRgb, { raw: { width: 64, height: 64, channels: 3 } })
    .png()
    .toBuffer();
  // Repaint the right half.
  const mask = new Uint8Array(64 * 64).map((_, p) => (p % 64 >= 32 ? 255 : 0));
  maskPng = await sharp(mask, { raw: { width: 64, height: 64, channels: 1 } })
    .png()
    .toBuffer();
});

after(async () => {
  await base?.release();
  await inpainting?.release();
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function render(model: SdxlModel, body: Partial<RenderRequestInput>, mask = true) {
  const request = renderRequestSchema().parse({ prompt: "a fox", steps: 4, image: "x", ...body });
  const plan = planRender(request, 7, {
    image: { key: "image", width: 64, height: 64 },
    ...(mask && body.mode === "inpaint" ? { mask: { key: "mask", width: 64, height: 64 } } : {}),
  });
  const mode = plan.mode as "img2img" | "inpaint" | "outpaint";
  const source = await prepareSource(plan.source!, mode, picture, mask ? maskPng : undefined, plan.seed);
  const result = await runPipelineStage(model, { jobId: "job_t", plan, stage: plan.stages[0]!, source }, undefined);
  assert.equal(result.kind, "images");
  if (result.kind !== "images") throw new Error("unreachable");
  return { plan, images: result.images, steps: result.steps };
}

async function rgbOf(png: Uint8Array): Promise<{ data: Buffer; width: number; height: number }> {
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

describe("runPipelineStage from a picture (tiny models)", () => {
  it("VAE-encodes as the encoder's distribution sampled with the image's generator", async () => {
    const pixels = rgb8ToVaeInput(pictureRgb, 64, 64);
    const { latents } = await encodeImageLatents(base.vaeEncoder!, pixels, 64, 64, new NoiseSource(5), 0.13025);
    const raw = await base.vaeEncoder!.session.run({ sample: new ort.Tensor("float32", pixels, [1, 3, 64, 64]) });
    const params = raw.latent_parameters!.data as Float32Array;
    const expected = sampleLatentDistribution(params, new NoiseSource(5).randn(4 * 8 * 8), 0.13025);
    assert.deepEqual(latents, expected);
  });

  it("img2img runs strength × steps and is byte-identical run to run", async () => {
    const a = await render(base, { mode: "img2img", strength: 0.5 });
    assert.equal(a.steps, 2);
    const b = await render(base, { mode: "img2img", strength: 0.5 });
    assert.deepEqual(a.images[0]!.bytes, b.images[0]!.bytes);
    const c = await render(base, { mode: "img2img", strength: 1 });
    assert.notDeepEqual(a.images[0]!.bytes, c.images[0]!.bytes);
  });

  it("inpaint (4-channel UNet) keeps every pixel outside the mask byte-identical", async () => {
    const { images } = await render(base, { mode: "inpaint", mask: "x" });
    const out = await rgbOf(images[0]!.bytes);
    let changed = 0;
    for (let p = 0; p < 64 * 64; p++) {
      for (let c = 0; c < 3; c++) {
        if (p % 64 < 32) assert.equal(out.data[p * 3 + c], pictureRgb[p * 3 + c], `pixel ${p} channel ${c}`);
        else if (out.data[p * 3 + c] !== pictureRgb[p * 3 + c]) changed++;
      }
    }
    assert.ok(changed > 1000, `only ${changed} masked values changed`);
  });

  it("inpaint on a 9-channel UNet runs its own conditioning, and refuses img2img", async () => {
    const { images } = await render(inpainting, { mode: "inpaint", mask: "x", strength: 1 });
    const out = await rgbOf(images[0]!.bytes);
    assert.deepEqual(out.data.subarray(0, 32 * 3), Buffer.from(pictureRgb.subarray(0, 32 * 3)));
    const plain = await render(base, { mode: "inpaint", mask: "x", strength: 1 });
    assert.notDeepEqual(images[0]!.bytes, plain.images[0]!.bytes);
    await assert.rejects(render(inpainting, { mode: "img2img" }), /9-channel inpainting UNet/);
  });

  it("outpaint grows the canvas and keeps the picture where it was", async () => {
    const { images, plan } = await render(base, { mode: "outpaint", expand: { left: 16, top: 8 } }, false);
    assert.equal(plan.width, 80);
    assert.equal(plan.height, 72);
    const out = await rgbOf(images[0]!.bytes);
    assert.equal(out.width, 80);
    for (let y = 0; y < 64; y++)
      for (let x = 0; x < 64; x++)
        for (let c = 0; c < 3; c++)
          assert.equal(out.data[((y + 8) * 80 + x + 16) * 3 + c], pictureRgb[(y * 64 + x) * 3 + c]);
  });
});
