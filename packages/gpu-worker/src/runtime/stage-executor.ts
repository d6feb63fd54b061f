import type { JobRecord, Latents, StagePlan } from "@kiln/shared";

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
 */
export function sdxlExecutor(models: ModelSet): StageExecutor {
  return (job, stage, input, hooks) => {
    const model = stage.model === "refiner" ? (models.refiner ?? models.base) : models.base;
    if (!model) throw new Error(`this worker has no model loaded for a ${stage.kind} stage`);
    return runPipelineStage(model, { jobId: job.id, plan: job.plan, stage }, input, hooks);
  };
}
