import { sdxlLatentShape } from "../models/sdxl-spec.js";
import type { StageExecutor } from "./stage-executor.js";

/**
 * A stage executor with no model: a hand-over stage returns zero latents of the plan's shape at
 * once, an image stage returns no images. With it the worker runtime's own cost — claims, job
 * transitions, the latents hand-over through the blob store — can be measured and tested alone
 * (`kiln bench handoff`).
 */
export function nullExecutor(
  hooks: { onStage?(jobId: string, stage: number, phase: "start" | "end"): void } = {},
): StageExecutor {
  return async (job, stage, input) => {
    hooks.onStage?.(job.id, stage.index, "start");
    try {
      if (stage.output === "images") return { kind: "images", images: [], unetSeconds: 0, denoiseSeconds: 0, steps: 0 };
      const shape = input?.shape ?? sdxlLatentShape(job.plan.n, job.plan.width, job.plan.height);
      return {
        kind: "latents",
        unetSeconds: 0,
        denoiseSeconds: 0,
        steps: 0,
        latents: {
          shape,
          data: new Float32Array(shape.reduce((a, b) => a * b, 1)),
          meta: {
            jobId: job.id,
            stage: stage.index,
            scheduler: job.plan.scheduler ?? "euler",
            schedulerConfigHash: "null",
            latentSpace: "ve",
            stepIndex: 0,
            steps: job.plan.steps,
            timestep: 0,
            sigma: 0,
            seed: job.plan.seed,
          },
        },
      };
    } finally {
      hooks.onStage?.(job.id, stage.index, "end");
    }
  };
}
