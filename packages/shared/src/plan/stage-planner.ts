import type { RenderRequest } from "../schemas/render-request.js";
import type { RenderPlan, StagePlan } from "./render-plan.js";

/**
 * Splits a validated render request into its stages. Pure: the same request and seed always give
 * the same plan, so planning is tested without any model.
 *
 * - `base`: the base model runs the whole schedule and decodes.
 * - `ensemble`: the base denoises the high-noise part (`denoisingEnd = high_noise_frac`) and hands over
 *   noisy latents; the refiner continues from the same point (`denoisingStart`) and decodes.
 * - `sdedit`: the base finishes; the refiner re-noises its latents to `strength` (after an optional
 *   latent upscale) and denoises them with the same prompt.
 */
export function planRender(request: RenderRequest, seed: number): RenderPlan {
  const stages: StagePlan[] = [];
  switch (request.mode) {
    case "base":
      stages.push({ index: 0, kind: "base", model: "base", output: "images" });
      break;
    case "ensemble":
      stages.push({ index: 0, kind: "base", model: "base", denoisingEnd: request.high_noise_frac, output: "latents" });
      stages.push({
        index: 1,
        kind: "refine",
        model: "refiner",
        denoisingStart: request.high_noise_frac,
        output: "images",
      });
      break;
    case "sdedit":
      stages.push({ index: 0, kind: "base", model: "base", output: "latents" });
      stages.push({
        index: 1,
        kind: "refine",
        model: "refiner",
        strength: request.strength,
        hiresScale: request.hires_scale,
        output: "images",
      });
      break;
  }
  const size: [number, number] = [request.height, request.width];
  return {
    v: 1,
    mode: request.mode,
    prompt: request.prompt,
    prompt2: request.prompt_2,
    negativePrompt: request.negative_prompt,
    negativePrompt2: request.negative_prompt_2,
    width: request.width,
    height: request.height,
    steps: request.steps,
    guidanceScale: request.guidance_scale,
    guidanceRescale: request.guidance_rescale,
    seed,
    n: request.n,
    highNoiseFrac: request.high_noise_frac,
    strength: request.strength,
    hiresScale: request.hires_scale,
    scheduler: request.scheduler,
    karras: request.karras,
    clipSkip: request.clip_skip,
    longPrompt: request.long_prompt,
    promptWeighting: request.prompt_weighting,
    originalSize: request.original_size ?? size,
    cropsCoordsTopLeft: request.crops_coords_top_left ?? [0, 0],
    targetSize: request.target_size ?? size,
    aestheticScore: request.aesthetic_score,
    negativeAestheticScore: request.negative_aesthetic_score,
    outputFormat: request.output_format,
    outputQuality: request.output_quality,
    stages,
  };
}
