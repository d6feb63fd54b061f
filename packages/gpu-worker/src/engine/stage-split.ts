import { KilnError } from "@kiln/shared";

import { roundHalfEven } from "./schedulers/noise-schedule.js";

/**
 * Ensemble of experts (diffusers' `denoising_end` on the base, `denoising_start` on the refiner), over one
 * scheduler's descending `timesteps`:
 * - `cutoff = int(round(T − frac·T))` (Python rounds halves to even);
 * - the base runs the first `base` timesteps, those `>= cutoff`;
 * - the refiner runs the last `refinerSteps`: the count of timesteps `< cutoff`, plus one when the scheduler's
 *   `order` is 2 and that count is even (its timesteps come in pairs after the first, and the cut must not split
 *   one); it starts at index `refinerStartIndex = len(timesteps) − refinerSteps` (diffusers' `t_start`, passed to
 *   `set_begin_index`).
 */
export function ensembleSplit(
  timesteps: Float64Array,
  frac: number,
  order: number,
  numTrainTimesteps = 1000,
): { base: number; refinerStartIndex: number; refinerSteps: number; cutoff: number } {
  if (!(frac > 0 && frac < 1)) {
    throw new KilnError(
      "stage_split_invalid",
      `The ensemble split fraction must be strictly between 0 and 1, got ${frac}.`,
      { status: 422 },
    );
  }
  const cutoff = Math.trunc(roundHalfEven(numTrainTimesteps - frac * numTrainTimesteps));
  let base = 0;
  let below = 0;
  for (const t of timesteps) {
    if (t >= cutoff) base++;
    else below++;
  }
  const refinerSteps = order === 2 && below % 2 === 0 ? below + 1 : below;
  return { base, refinerStartIndex: timesteps.length - refinerSteps, refinerSteps, cutoff };
}

/**
 * SDEdit / img2img start (diffusers' `get_timesteps` with `strength`): `init = min(int(N·strength), N)`,
 * `tStart = max(N − init, 0)`; the stage runs `timesteps[initTimestepIndex:]` with `initTimestepIndex = tStart·order`,
 * after `add_noise` at that index. `steps` is diffusers' returned step count, N − tStart.
 */
export function sdeditStart(
  numInferenceSteps: number,
  strength: number,
  order: number,
): { tStart: number; initTimestepIndex: number; steps: number } {
  if (!(strength >= 0 && strength <= 1)) {
    throw new KilnError("stage_split_invalid", `SDEdit strength must be between 0 and 1, got ${strength}.`, {
      status: 422,
    });
  }
  const n = numInferenceSteps;
  const init = Math.min(Math.trunc(n * strength), n);
  const tStart = Math.max(n - init, 0);
  const steps = n - tStart;
  if (steps < 1) {
    throw new KilnError(
      "stage_split_invalid",
      `SDEdit strength ${strength} over ${n} steps leaves no step to run; raise the strength or the step count (strength × steps must reach 1).`,
      { status: 422 },
    );
  }
  return { tStart, initTimestepIndex: tStart * order, steps };
}
