import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import {
  KilnError,
  type Latents,
  planRender,
  type RenderPlan,
  type RenderRequestInput,
  renderRequestSchema,
} from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import sharp from "sharp";

import { readPngText } from "../src/engine/image-files.js";
import { firstNonFinite } from "../src/engine/latent-ops.js";
import { loadSdxlModel, type SdxlModel } from "../src/engine/sdxl-model.js";
import { generationParameters, runPipelineStage, type StageResult } from "../src/engine/sdxl-pipeline.js";
import { writeTinyModel } from "../src/models/tiny-models.js";

/** runPipelineStage on the tiny models: every scheduler renders, stages hand over across scheduler families, n images batch exactly. */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-pipeline-"));
const logger = createLogger({ level: "silent" });
const models: { base?: SdxlModel; refiner?: SdxlModel; dpmRefiner?: SdxlModel; nanVae?: SdxlModel } = {};

before(async () => {
  const options = { providers: ["cpu" as const], logger };
  writeTinyModel(path.join(tmp, "base"), { role: "base" });
  writeTinyModel(path.join(tmp, "refiner"), { role: "refiner" });
  // A refiner whose own scheduler is DPM-Solver++: the hand-over from the base's Euler must convert the latents.
  writeTinyModel(path.join(tmp, "refiner-dpm"), { role: "refiner" });
  const schedulerFile = path.join(tmp, "refiner-dpm", "scheduler", "scheduler_config.json");
  const config = JSON.parse(fs.readFileSync(schedulerFile, "utf8"));
  fs.writeFileSync(
    schedulerFile,
    JSON.stringify({
      ...config,
      _class_name: "DPMSolverMultistepScheduler",
      algorithm_type: "dpmsolver++",
      solver_order: 2,
    }),
  );
  writeTinyModel(path.join(tmp, "nan-vae"), { role: "base", vaeDecoderEmitsNaN: true });
  models.base = await loadSdxlModel(path.join(tmp, "base"), "base", options);
  models.refiner = await loadSdxlModel(path.join(tmp, "refiner"), "refiner", options);
  models.dpmRefiner = await loadSdxlModel(path.join(tmp, "refiner-dpm"), "refiner", options);
  models.nanVae = await loadSdxlModel(path.join(tmp, "nan-vae"), "base", options);
});

after(async () => {
  for (const m of Object.values(models)) await m?.release();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const plan = (body: Partial<RenderRequestInput>, seed = 42): RenderPlan =>
  planRender(
    renderRequestSchema().parse({ prompt: "a red fox in snow", width: 64, height: 64, steps: 6, ...body }),
    seed,
  );

async function render(model: SdxlModel, p: RenderPlan, stage = 0, input?: Latents): Promise<StageResult> {
  return runPipelineStage(model, { jobId: "job_test", plan: p, stage: p.stages[stage]! }, input);
}

const images = (r: StageResult) => {
  assert.equal(r.kind, "images");
  return r.kind === "images" ? r.images : [];
};

async function pixels(bytes: Uint8Array): Promise<Buffer> {
  return sharp(bytes).removeAlpha().raw().toBuffer();
}

describe("runPipelineStage renders with every scheduler", () => {
  const cases = [
    { scheduler: "euler" },
    { scheduler: "euler", karras: true },
    { scheduler: "euler_a" },
    { scheduler: "dpmpp_2m" },
    { scheduler: "dpmpp_2m", karras: true },
    { scheduler: "ddim" },
  ] as const;
  for (const c of cases) {
    it(`${c.scheduler}${"karras" in c ? " + karras" : ""}: finite latents, a 64×64 image, the same bytes for the same seed`, async () => {
      const body = { mode: "base" as const, ...c };
      const latentPlan: RenderPlan = {
        ...plan(body),
        stages: [{ index: 0, kind: "base", model: "base", output: "latents" }],
      };
      const latents = await render(models.base!, latentPlan);
      assert.equal(latents.kind, "latents");
      if (latents.kind !== "latents") return;
      assert.deepEqual(latents.latents.shape, [1, 4, 8, 8]);
      assert.equal(firstNonFinite(latents.latents.data), -1);
      assert.equal(latents.steps, 6);
      assert.equal(latents.latents.meta.scheduler, c.scheduler);

      const [a] = images(await render(models.base!, plan(body)));
      const [b] = images(await render(models.base!, plan(body)));
      const [other] = images(await render(models.base!, plan(body, 43)));
      const meta = await sharp(a!.bytes).metadata();
      assert.deepEqual([meta.format, meta.width, meta.height], ["png", 64, 64]);
      const stats = await sharp(a!.bytes).stats();
      assert.ok(
        stats.channels.some((ch) => ch.stdev > 1),
        "not a flat image",
      );
      assert.ok(Buffer.from(a!.bytes).equals(Buffer.from(b!.bytes)), "same seed, same bytes");
      assert.ok(!(await pixels(a!.bytes)).equals(await pixels(other!.bytes)), "another seed, other pixels");
    });
  }

  it("the schedulers give different images from the same seed", async () => {
    const seen = new Set<string>();
    for (const scheduler of ["euler", "euler_a", "dpmpp_2m", "ddim"] as const) {
      const [image] = images(await render(models.base!, plan({ mode: "base", scheduler })));
      seen.add((await pixels(image!.bytes)).toString("base64"));
    }
    assert.equal(seen.size, 4);
  });

  it("karras with ddim is refused by the engine too (a plan that did not come through the API check)", async () => {
    await assert.rejects(
      render(models.base!, { ...plan({ mode: "base", scheduler: "ddim" }), karras: true }),
      (e: unknown) => e instanceof KilnError && /karras/.test(e.message),
    );
  });
});

describe("ensemble and SDEdit hand-overs", () => {
  it("hands Euler latents to a refiner whose scheduler is DPM++ 2M: converted to VP space, finite image", async () => {
    const p = plan({ mode: "ensemble", steps: 10 });
    const base = await render(models.base!, p, 0);
    assert.equal(base.kind, "latents");
    if (base.kind !== "latents") return;
    assert.equal(base.latents.meta.scheduler, "euler");
    assert.equal(base.latents.meta.latentSpace, "ve");
    assert.equal(base.steps, 8, "10 steps at 0.8: the base runs 8");
    const input = structuredClone(base.latents);
    const refined = await render(models.dpmRefiner!, p, 1, input);
    assert.deepEqual(input.data, base.latents.data, "the caller's latents are not modified");
    assert.equal(refined.steps, 2);
    const [image] = images(refined);
    const raw = await pixels(image!.bytes);
    assert.equal(raw.length, 64 * 64 * 3);
    assert.ok((await sharp(image!.bytes).stats()).channels.some((ch) => ch.stdev > 1));
    // Same family (the Euler refiner) gives another image: the refiner's scheduler really was DPM++ 2M.
    const [same] = images(await render(models.refiner!, p, 1, base.latents));
    assert.ok(!raw.equals(await pixels(same!.bytes)));
  });

  it("SDEdit with a latent upscale renders at the upscaled size", async () => {
    const p = plan({ mode: "sdedit", strength: 0.5, hires_scale: 1.5 });
    const base = await render(models.base!, p, 0);
    assert.equal(base.kind, "latents");
    const refined = await render(models.refiner!, p, 1, base.kind === "latents" ? base.latents : undefined);
    assert.equal(refined.steps, 3, "6 steps at strength 0.5");
    const meta = await sharp(images(refined)[0]!.bytes).metadata();
    assert.deepEqual([meta.width, meta.height], [96, 96]);
  });
});

describe("n images in one UNet batch", () => {
  for (const scheduler of ["euler", "euler_a"] as const) {
    it(`${scheduler}: image i of a batch of 4 equals a render of one image with seed + i`, async () => {
      const batch = images(await render(models.base!, plan({ mode: "base", scheduler, n: 4 }, 500)));
      assert.equal(batch.length, 4);
      for (let i = 0; i < 4; i++) {
        const [single] = images(await render(models.base!, plan({ mode: "base", scheduler, n: 1 }, 500 + i)));
        assert.ok((await pixels(batch[i]!.bytes)).equals(await pixels(single!.bytes)), `image ${i}`);
        assert.equal(
          readPngText(batch[i]!.bytes).parameters,
          readPngText(single!.bytes).parameters,
          `image ${i}: parameters`,
        );
      }
    });
  }

  it("n = 2 and n = 3 batches agree with the n = 4 batch image by image (ensemble, both stages)", async () => {
    const run = async (n: number) => {
      const p = plan({ mode: "ensemble", scheduler: "euler_a", n }, 900);
      const base = await render(models.base!, p, 0);
      return images(await render(models.refiner!, p, 1, base.kind === "latents" ? base.latents : undefined));
    };
    const four = await run(4);
    for (const n of [2, 3]) {
      const some = await run(n);
      for (let i = 0; i < n; i++)
        assert.ok((await pixels(some[i]!.bytes)).equals(await pixels(four[i]!.bytes)), `n = ${n}, image ${i}`);
    }
  });
});

describe("VAE decode", () => {
  it("a VAE that emits NaN fails the stage with vae_non_finite instead of a black image", async () => {
    await assert.rejects(render(models.nanVae!, plan({ mode: "base" })), (e: unknown) => {
      assert.ok(e instanceof KilnError);
      assert.equal(e.code, "vae_non_finite");
      assert.match(e.message, /NaN/);
      assert.match(e.message, /fp16-fix|fp32/);
      return true;
    });
  });
});

describe("generation parameters in the files", () => {
  it("PNG: an A1111-style `parameters` text chunk", async () => {
    const p = plan(
      {
        mode: "base",
        negative_prompt: "blurry",
        scheduler: "dpmpp_2m",
        karras: true,
        guidance_scale: 6.5,
        clip_skip: 1,
        n: 2,
      },
      77,
    );
    const out = images(await render(models.base!, p));
    assert.equal(
      readPngText(out[1]!.bytes).parameters,
      "a red fox in snow\nNegative prompt: blurry\nSteps: 6, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 78, Size: 64x64, Model: base, Mode: base, Clip skip: 3, Version: Kiln",
    );
  });

  it("the text names the refiner switch, the denoising strength and a latent upscale", () => {
    const model = models.base!;
    assert.match(
      generationParameters(plan({ mode: "ensemble", high_noise_frac: 0.75 }), model, 0, "euler"),
      /Sampler: Euler, CFG scale: 5, Seed: 42, Size: 64x64, .*Refiner switch at: 0.75/,
    );
    const sdedit = generationParameters(plan({ mode: "sdedit", strength: 0.4, hires_scale: 1.5 }), model, 0, "euler_a");
    assert.match(
      sdedit,
      /Sampler: Euler a, .*Size: 64x64, .*Denoising strength: 0.4, Hires upscale: 1.5, Hires upscaler: Latent/,
    );
  });

  for (const format of ["webp", "jpeg"] as const) {
    it(`${format}: the same text as EXIF ImageDescription (non-ASCII replaced)`, async () => {
      const p = plan({ mode: "base", prompt: "a fox — in snow", output_format: format, output_quality: 80 });
      const [image] = images(await render(models.base!, p));
      const meta = await sharp(image!.bytes).metadata();
      assert.equal(meta.format, format);
      assert.equal(image!.contentType, `image/${format}`);
      const exif = meta.exif?.toString("latin1") ?? "";
      assert.ok(exif.includes("a fox ? in snow\nSteps: 6, Sampler: Euler, CFG scale: 5, Seed: 42, Size: 64x64"), exif);
    });
  }
});
