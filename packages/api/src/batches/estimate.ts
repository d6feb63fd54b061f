import { planRender } from "@kiln/shared";

import { type StageTimingBook, stageWork } from "../renders/eta.js";
import type { BatchItem } from "./expand.js";

export interface BatchEstimate {
  images: number;
  /** Estimated GPU seconds of the renders this run would make. */
  gpu_seconds: number;
  /** Where the per-step rate came from: stages this API has seen finish, or configuration. */
  source: "measured" | "config";
  /** The configured fallback: seconds per denoising step per megapixel per image. */
  seconds_per_step_megapixel: number;
}

/**
 * GPU seconds for `items`: per stage, measured seconds per step-megapixel from recent finished
 * stages (the ETA book) when there are any, else `KILN_BATCH_STEP_SECONDS` per step-megapixel.
 */
export function estimateBatch(
  items: readonly BatchItem[],
  options: { book?: StageTimingBook; stepSeconds: number },
): BatchEstimate {
  let seconds = 0;
  let measured = false;
  let images = 0;
  for (const item of items) {
    const plan = planRender(item.request, item.seed);
    images += plan.n;
    for (const stage of plan.stages) {
      const fromBook = options.book?.stageSeconds(plan, stage);
      if (fromBook !== undefined) measured = true;
      seconds += fromBook ?? stageWork(plan, stage) * options.stepSeconds;
    }
  }
  return {
    images,
    gpu_seconds: Math.round(seconds * 1000) / 1000,
    source: measured ? "measured" : "config",
    seconds_per_step_megapixel: options.stepSeconds,
  };
}
