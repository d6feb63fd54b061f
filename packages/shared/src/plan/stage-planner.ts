import { KilnError } from "../errors.js";
import { DEFAULT_STRENGTH, isImageMode, type RenderRequest } from "../schemas/render-request.js";
import type { ImageSource, RenderPlan, StagePlan } from "./render-plan.js";

/** The stored input pictures of an image mode, with the size read from their headers. */
export interface PlannedInputs {
  image: { key: string; width: number; height: number };
  mask?: { key: string; width: number; height: number };
  /** OpenAI edits mark the area to edit with transparency; Kiln's own masks are white = repaint. */
  maskFrom?: "luminance" | "alpha";
  /** Pixels a picture may be scaled to when the request gives no size (default 1024²). */
  pixelBudget?: number;
  minSide?: number;
  maxSide?: number;
}

/**
 * The size an image mode renders its picture at: the request's width/height when given (one alone keeps the
 * picture's aspect), else the picture's own size scaled down into the pixel budget; multiples of 8.
 */
export function sourceSize(
  request: Pick<RenderRequest, "width" | "height">,
  picture: { width: number; height: number },
  options: { pixelBudget?: number; minSide?: number; maxSide?: number } = {},
): { width: number; height: number } {
  const minSide = options.minSide ?? 64;
  const maxSide = options.maxSide ?? 2048;
  const to8 = (v: number) => Math.min(maxSide, Math.max(minSide, Math.floor(v / 8) * 8));
  if (request.width !== undefined && request.height !== undefined)
    return { width: request.width, height: request.height };
  const aspect = picture.width / picture.height;
  if (request.width !== undefined) return { width: request.width, height: to8(request.width / aspect) };
  if (request.height !== undefined) return { width: to8(request.height * aspect), height: request.height };
  const budget = options.pixelBudget ?? 1024 * 1024;
  const scale = Math.min(1, Math.sqrt(budget / (picture.width * picture.height)));
  return { width: to8(picture.width * scale), height: to8(picture.height * scale) };
}

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
export function planRender(request: RenderRequest, seed: number, inputs?: PlannedInputs): RenderPlan {
  const stages: StagePlan[] = [];
  const strength = request.strength ?? DEFAULT_STRENGTH[request.mode];
  let width = request.width ?? 1024;
  let height = request.height ?? 1024;
  let source: ImageSource | undefined;
  if (isImageMode(request.mode)) {
    if (!inputs)
      throw new KilnError("input_missing", `mode ${request.mode} needs its input picture received and stored first.`, {
        status: 400,
        details: { errors: [{ field: "image", message: "send the picture to start from" }] },
      });
    const size = sourceSize(request, inputs.image, inputs);
    const expand = request.mode === "outpaint" ? request.expand : undefined;
    source = {
      image: inputs.image.key,
      ...(inputs.mask ? { mask: inputs.mask.key } : {}),
      maskFrom: inputs.maskFrom ?? "luminance",
      width: size.width,
      height: size.height,
      resize: request.resize,
      maskBlur: request.mask_blur,
      ...(expand ? { expand } : {}),
      ...(request.padding_mask_crop !== undefined ? { paddingMaskCrop: request.padding_mask_crop } : {}),
    };
    width = size.width + (expand ? expand.left + expand.right : 0);
    height = size.height + (expand ? expand.top + expand.bottom : 0);
  }
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
        strength,
        hiresScale: request.hires_scale,
        output: "images",
      });
      break;
    case "img2img":
    case "inpaint":
    case "outpaint": {
      // The first stage starts from the picture at `strength`; the refiner, when asked, either takes the last
      // part of that schedule (ensemble) or re-noises the finished image (SDEdit), as for text-to-image.
      const refiner = request.refiner;
      stages.push({
        index: 0,
        kind: "base",
        model: "base",
        start: "image",
        strength,
        ...(refiner === "ensemble" ? { denoisingEnd: request.high_noise_frac } : {}),
        output: refiner === "none" ? "images" : "latents",
      });
      if (refiner === "ensemble")
        stages.push({
          index: 1,
          kind: "refine",
          model: "refiner",
          denoisingStart: request.high_noise_frac,
          output: "images",
        });
      if (refiner === "sdedit")
        stages.push({
          index: 1,
          kind: "refine",
          model: "refiner",
          strength: request.refiner_strength,
          output: "images",
        });
      break;
    }
  }
  const size: [number, number] = [height, width];
  return {
    v: 1,
    mode: request.mode,
    prompt: request.prompt,
    prompt2: request.prompt_2,
    negativePrompt: request.negative_prompt,
    negativePrompt2: request.negative_prompt_2,
    width,
    height,
    steps: request.steps,
    guidanceScale: request.guidance_scale,
    guidanceRescale: request.guidance_rescale,
    seed,
    n: request.n,
    highNoiseFrac: request.high_noise_frac,
    strength,
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
    ...(source ? { source } : {}),
    watermark: request.watermark,
    stages,
  };
}
