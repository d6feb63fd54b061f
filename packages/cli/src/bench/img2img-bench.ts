import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import {
  encodeImageLatents,
  loadSdxlModel,
  NoiseSource,
  prepareSource,
  rgb8ToVaeInput,
  runPipelineStage,
  writeTinyModel,
} from "@kiln/gpu-worker";
import { planRender, type RenderPlan, renderRequestSchema } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import sharp from "sharp";

import { fmt, percentile, table } from "./stats.js";

const SIDE = 1024;
const STEPS = 30;
const RUNS = 5;

async function timed(runs: number, fn: () => Promise<unknown>): Promise<number[]> {
  await fn(); // warm-up
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await fn();
    out.push(performance.now() - t);
  }
  return out;
}

/**
 * Issue 9's figures at 1024² on the tiny base model (CPU provider): the VAE encode alone, and the time to image
 * of an img2img render at strength 0.3 (picture decode and encode included) against a text-to-image render, both
 * 30 steps, guidance 5, one stage, in-process (no queue): the ratio is what carries over to real models.
 */
export async function run(): Promise<string> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-img2img-"));
  const dir = path.join(root, "base");
  writeTinyModel(dir, { role: "base" });
  const model = await loadSdxlModel(dir, "base", { providers: ["cpu"], logger: createLogger({ level: "silent" }) });
  try {
    const rgb = new Uint8Array(SIDE * SIDE * 3).map((_, i) => (i * 31 + (i >> 11) * 7) & 255);
    const png = await sharp(rgb, { raw: { width: SIDE, height: SIDE, channels: 3 } })
      .png()
      .toBuffer();
    const pixels = rgb8ToVaeInput(rgb, SIDE, SIDE);
    const encode = await timed(RUNS, () =>
      encodeImageLatents(model.vaeEncoder!, pixels, SIDE, SIDE, new NoiseSource(1), model.vaeScalingFactor),
    );
    const base = { prompt: "a lighthouse on a cliff at dusk, oil painting", steps: STEPS, seed: 3 };
    const textPlan = planRender(renderRequestSchema().parse({ ...base, mode: "base", width: SIDE, height: SIDE }), 3);
    const imagePlan = planRender(
      renderRequestSchema().parse({ ...base, mode: "img2img", image: "x", strength: 0.3 }),
      3,
      {
        image: { key: "image", width: SIDE, height: SIDE },
      },
    );
    const render = async (plan: RenderPlan) => {
      const source = plan.source ? await prepareSource(plan.source, "img2img", png, undefined, plan.seed) : undefined;
      return runPipelineStage(model, { jobId: "job_bench", plan, stage: plan.stages[0]!, source }, undefined);
    };
    const text = await timed(RUNS, () => render(textPlan));
    const image = await timed(RUNS, () => render(imagePlan));
    const ratio = percentile(image, 50) / percentile(text, 50);
    return [
      `${RUNS} runs after a warm-up each; ${SIDE}×${SIDE}, ${STEPS} steps, guidance 5, n = 1, tiny base model on the CPU provider, in-process (runPipelineStage; no queue or HTTP). img2img at strength 0.3 runs int(30·0.3) = 9 steps after decoding the PNG and VAE-encoding it.`,
      "",
      table(
        ["figure", "p50 (ms)", "max (ms)"],
        [
          ["VAE encode (1024² → 128² latents, sampled)", fmt(percentile(encode, 50), 0), fmt(Math.max(...encode), 0)],
          ["text-to-image, time to image", fmt(percentile(text, 50), 0), fmt(Math.max(...text), 0)],
          ["img2img at strength 0.3, time to image", fmt(percentile(image, 50), 0), fmt(Math.max(...image), 0)],
        ],
      ),
      "",
      `img2img / text-to-image (p50): ${fmt(ratio, 2)}`,
    ].join("\n");
  } finally {
    await model.release();
    fs.rmSync(root, { recursive: true, force: true });
  }
}
