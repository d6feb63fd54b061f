import type { StageKind } from "../schemas/job.js";
import type { ImageResize, OutputFormat, RenderMode, SchedulerName } from "../schemas/render-request.js";

/** One stage of a render: what a worker of `kind` runs, fully determined by the plan. */
export interface StagePlan {
  index: number;
  kind: StageKind;
  /** Which model folder runs it. A refine stage falls back to the base model when no refiner is configured. */
  model: "base" | "refiner";
  /** Ensemble of experts: fraction of the schedule where this stage starts / ends (diffusers' denoising_start/end). */
  denoisingStart?: number;
  denoisingEnd?: number;
  /** SDEdit: re-noise the input latents to this strength, after an optional latent upscale. */
  strength?: number;
  hiresScale?: number;
  /**
   * `image`: the stage starts from the plan's source picture (img2img, inpaint, outpaint): VAE-encoded, re-noised
   * to `strength`, and for inpaint/outpaint masked.
   */
  start?: "image";
  /** `latents` hands over to the next stage; `images` decodes with the VAE and finishes the job. */
  output: "latents" | "images";
}

/** A render request, normalised (defaults applied, seed chosen) and split into stages. Immutable once planned. */
export interface RenderPlan {
  v: 1;
  /** Batch lanes: renders of a batch run travel in the batch queues; absent = interactive. */
  lane?: "batch";
  // Resolution buckets: the bucket the render size belongs to (`1024x1024`), absent for small unbucketed sizes;
  // `requestedSize` is [width, height] as asked when the API snapped it to the bucket.
  bucket?: string;
  requestedSize?: [number, number];
  /** Set when KILN_BUCKET_ROUTING=lanes: every stage of the job travels in the bucket's queues. */
  route?: string;
  mode: RenderMode;
  prompt: string;
  prompt2?: string;
  negativePrompt?: string;
  negativePrompt2?: string;
  width: number;
  height: number;
  steps: number;
  guidanceScale: number;
  guidanceRescale: number;
  seed: number;
  n: number;
  highNoiseFrac: number;
  strength: number;
  hiresScale: number;
  scheduler?: SchedulerName;
  karras?: boolean;
  clipSkip?: number;
  longPrompt: boolean;
  promptWeighting: boolean;
  /** (height, width), as diffusers orders them. */
  originalSize: [number, number];
  cropsCoordsTopLeft: [number, number];
  targetSize: [number, number];
  aestheticScore: number;
  negativeAestheticScore: number;
  outputFormat: OutputFormat;
  outputQuality: number;
  /** img2img, inpaint, outpaint: the user's picture and how to bring it to the render's size. */
  source?: ImageSource;
  /** The SDXL invisible watermark on the final images (absent in plans made before it: on). */
  watermark?: boolean;
  stages: StagePlan[];
}

/** The pixels a render starts from: stored once under the job, read by every stage and retry. */
export interface ImageSource {
  /** Blob key of the picture as uploaded (`jobs/<id>/inputs/image`). */
  image: string;
  /** Blob key of the mask, when one was sent. */
  mask?: string;
  /** `luminance`: white = repaint (Kiln, diffusers); `alpha`: fully transparent = repaint (OpenAI edits). */
  maskFrom: "luminance" | "alpha";
  /** The size the picture is resized to; `outpaint` then adds `expand` around it (the plan's width/height). */
  width: number;
  height: number;
  resize: ImageResize;
  /** Gaussian σ, in pixels, applied to the mask before the final composite. */
  maskBlur: number;
  expand?: { left: number; right: number; top: number; bottom: number };
  /**
   * diffusers' `padding_mask_crop`: the stages work on the crop around the mask (grown by this many pixels, then to
   * the render's aspect ratio) resized to the render size; the last stage pastes it back onto the picture.
   */
  paddingMaskCrop?: number;
}

/** Pixel size of the final images: SDEdit with a latent upscale grows them, in whole latent cells. */
export function outputSize(plan: Pick<RenderPlan, "width" | "height" | "stages">): { width: number; height: number } {
  const last = plan.stages[plan.stages.length - 1];
  const scale = last?.hiresScale ?? 1;
  return { width: scaleToLatentGrid(plan.width, scale), height: scaleToLatentGrid(plan.height, scale) };
}

export const scaleToLatentGrid = (pixels: number, scale: number): number => Math.round((pixels / 8) * scale) * 8;
