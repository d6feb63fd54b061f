import type { StageKind } from "../schemas/job.js";
import type { OutputFormat, RenderMode, SchedulerName } from "../schemas/render-request.js";

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
  /** `latents` hands over to the next stage; `images` decodes with the VAE and finishes the job. */
  output: "latents" | "images";
}

/** A render request, normalised (defaults applied, seed chosen) and split into stages. Immutable once planned. */
export interface RenderPlan {
  v: 1;
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
  stages: StagePlan[];
}

/** Pixel size of the final images: SDEdit with a latent upscale grows them, in whole latent cells. */
export function outputSize(plan: Pick<RenderPlan, "width" | "height" | "stages">): { width: number; height: number } {
  const last = plan.stages[plan.stages.length - 1];
  const scale = last?.hiresScale ?? 1;
  return { width: scaleToLatentGrid(plan.width, scale), height: scaleToLatentGrid(plan.height, scale) };
}

export const scaleToLatentGrid = (pixels: number, scale: number): number => Math.round((pixels / 8) * scale) * 8;
