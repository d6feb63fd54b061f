import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { type Latents, planRender, renderRequestSchema } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import sharp from "sharp";

import { prepareRefineBlend } from "../../src/engine/img2img/prepare-latents.js";
import { prepareSource } from "../../src/engine/img2img/source-image.js";
import { NoiseSource } from "../../src/engine/noise.js";
import { createScheduler } from "../../src/engine/schedulers/index.js";
import { loadSdxlModel, type SdxlModel } from "../../src/engine/sdxl-model.js";
import { runPipelineStage, stageNoiseSeed, stageSchedule } from "../../src/engine/sdxl-pipeline.js";
import { writeTinyModels } from "../../src/models/tiny-models.js";

/**
 * A refine stage after an inpaint base keeps blending the picture in outside the mask at every step, as diffusers'
 * inpaint pipeline does in its refiner call: after step i the latents outside the (latent-grid) mask are exactly the
 * picture's latents re-noised to timestep i + 1 (`add_noise(image_latents, noise, t[i+1])`), clean after the last.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-refine-blend-"));
let base: SdxlModel;
let refiner: SdxlModel;
let picture: Uint8Array;
let maskPng: Uint8Array;

before(async () => {
  const dirs = writeTinyModels(tmp, 3);
  const options = { providers: ["cpu" as const], logger: createLogger({ level: "silent" }) };
  base = await loadSdxlModel(dirs.base, "base", options);
  refiner = await loadSdxlModel(dirs.refiner, "refiner", options);
  const rgb = new Uint8Array(64 * 64 * 3).map((_, i) => (i * 41 + (i >> 7) * 3) & 255);
  picture = await sharp(rgb, { raw: { width: 64, height: 64, channels: 3 } })
    .png()
    .toBuffer();
  // Repaint the bottom-left quarter.
  const mask = new Uint8Array(64 * 64).map((_, p) => (p % 64 < 32 && p >= 32 * 64 ? 255 : 0));
  maskPng = await sharp(mask, { raw: { width: 64, height: 64, channels: 1 } })
    .png()
    .toBuffer();
});

after(async () => {
  await base?.release();
  await refiner?.release();
  fs.rmSync(tmp, { recursive: true, force: true });
});

for (const refinerMode of ["ensemble", "sdedit"] as const) {
  describe(`inpaint with refiner ${refinerMode}`, () => {
    it("blends the re-noised picture in outside the mask after every refiner step", async () => {
      const request = renderRequestSchema().parse({
        prompt: "a fox",
        mode: "inpaint",
        image: "x",
        mask: "x",
        steps: 8,
        n: 2,
        strength: 0.9,
        refiner: refinerMode,
        refiner_strength: 0.5,
        scheduler: "euler",
      });
      const plan = planRender(request, 21, {
        image: { key: "image", width: 64, height: 64 },
        mask: { key: "mask", width: 64, height: 64 },
      });
      const source = await prepareSource(plan.source!, "inpaint", picture, maskPng, plan.seed);
      const job = { jobId: "job_blend", plan, source };
      const first = await runPipelineStage(base, { ...job, stage: plan.stages[0]! }, undefined);
      assert.equal(first.kind, "latents");
      const handOver = (first as { latents: Latents }).latents;

      // What the refine stage must blend in: the picture through the refiner's VAE encoder and the noise, drawn from
      // the stage's own generators in diffusers' order.
      const stage = plan.stages[1]!;
      const generators = [0, 1].map((i) => new NoiseSource(stageNoiseSeed(plan.seed + i, stage.index)));
      const blend = await prepareRefineBlend(refiner, source, generators);
      const scheduler = createScheduler(refiner.schedulerConfig, { name: "euler" });
      scheduler.setTimesteps(plan.steps);
      const { begin, end } = stageSchedule(scheduler, plan, stage);
      assert.ok(end - begin >= 2, `${end - begin} refiner steps`);

      const seen: Float32Array[] = [];
      const result = await runPipelineStage(refiner, { ...job, stage }, handOver, {
        onStep: (_step, _steps, latents) => void seen.push(latents.slice()),
      });
      assert.equal(result.kind, "images");
      assert.equal(seen.length, end - begin);
      const plane = 8 * 8;
      let insideDiffers = 0;
      seen.forEach((latents, k) => {
        const i = begin + k;
        const known =
          i + 1 < scheduler.timesteps.length
            ? scheduler.addNoise(blend.imageLatents, blend.noise, i + 1)
            : blend.imageLatents;
        for (let j = 0; j < latents.length; j++) {
          if (blend.mask[j % plane] === 0) assert.equal(latents[j], known[j], `step ${i}, value ${j} outside the mask`);
          else if (latents[j] !== known[j]) insideDiffers++;
        }
      });
      assert.ok(insideDiffers > 100, `${insideDiffers} masked values follow the denoiser`);
      // The mask holds both kinds of cell.
      assert.ok(blend.mask.includes(0) && blend.mask.includes(1));
    });
  });
}
