import { type BlobStore, type JobRecord, KilnError, type Latents, type StagePlan } from "@kiln/shared";

import { type PreparedSource, prepareSource } from "../engine/img2img/source-image.js";
import type { NoiseKernel } from "../engine/noise.js";
import type { SdxlModel } from "../engine/sdxl-model.js";
import { runPipelineStage, type StageHooks, type StageResult } from "../engine/sdxl-pipeline.js";

/** Runs one stage's computation. The worker runtime is written against this, not against the engine. */
export type StageExecutor = (
  job: JobRecord,
  stage: StagePlan,
  input: Latents | undefined,
  hooks: StageHooks,
) => Promise<StageResult>;

export interface ModelSet {
  base?: SdxlModel;
  refiner?: SdxlModel;
}

/**
 * The SDXL executor. A refine stage runs on the refiner when one is loaded, else on the base model
 * (diffusers allows the base UNet as its own refiner; the conditioning follows the model's UNet).
 * `blobs` holds the jobs' input pictures (img2img, inpaint, outpaint); `noiseKernel` picks which of torch's CPU
 * Box–Muller kernels seeded noise reproduces (default `avx2`).
 */
export function sdxlExecutor(
  models: ModelSet,
  options: { blobs?: BlobStore; noiseKernel?: NoiseKernel } = {},
): StageExecutor {
  return async (job, stage, input, hooks) => {
    try {
      const model = stage.model === "refiner" ? (models.refiner ?? models.base) : models.base;
      if (!model) throw new Error(`this worker has no model loaded for a ${stage.kind} stage`);
      const source = await readSource(job, stage, options.blobs);
      hooks.signal?.throwIfAborted();
      return await runPipelineStage(
        model,
        { jobId: job.id, plan: job.plan, stage, source, noiseKernel: options.noiseKernel },
        input,
        hooks,
      );
    } finally {
      // A hand-over stage's last GPU call was its last step; a failed stage gives its turn back here too.
      hooks.gpu?.release();
      // A stage that failed before denoising no longer holds up its batching group.
      hooks.group?.leave();
    }
  };
}

/**
 * The job's picture (and mask) at the render's size, for the stage that starts from it and for every stage of an
 * inpaint/outpaint. Every stage and retry reads the same stored bytes.
 */
async function readSource(
  job: JobRecord,
  stage: StagePlan,
  blobs: BlobStore | undefined,
): Promise<PreparedSource | undefined> {
  const source = job.plan.source;
  const mode = job.plan.mode;
  if (!source || (mode !== "img2img" && mode !== "inpaint" && mode !== "outpaint")) return undefined;
  // Every stage of an inpaint/outpaint reads it: the first starts from it, later ones blend it in outside the mask
  // and the last composites onto it.
  const masked = mode !== "img2img";
  if (stage.start !== "image" && !masked) return undefined;
  if (!blobs)
    throw new KilnError("input_unavailable", "This worker has no blob store to read the job's input picture from.");
  const read = async (key: string) => {
    const bytes = await blobs.get(key);
    if (!bytes)
      throw new KilnError(
        "input_missing",
        `The job's input ${key} is missing from the blob store; submit the render again.`,
        {
          retryable: false,
        },
      );
    return bytes;
  };
  const image = await read(source.image);
  const mask = source.mask ? await read(source.mask) : undefined;
  return prepareSource(source, mode, image, mask, job.plan.seed);
}
