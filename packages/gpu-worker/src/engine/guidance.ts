import { divideInto, scaleRange } from "./latent-ops.js";

/**
 * The UNet's sample input for one step: the latents divided by the scheduler's input divisor (`scale_model_input`)
 * in the first `latents.length` values of `out`, copied into the second half when `out` is twice as long (CFG: the
 * [negative, positive] halves see the same latents). The copies are native `set`s; only a divisor other than 1
 * costs a pass in JavaScript.
 */
export function fillModelInput(latents: Float32Array, divisor: number, out: Float32Array): Float32Array {
  const per = latents.length;
  if (out.length !== per && out.length !== 2 * per)
    throw new RangeError(`a model input of ${out.length} values for ${per} latents`);
  if (divisor === 1) out.set(latents);
  else divideInto(out, latents, divisor);
  if (out.length === 2 * per) out.copyWithin(per, 0, per);
  return out;
}

/**
 * Classifier-free guidance over a UNet batch laid out as [negative × n, positive × n]:
 * `noise = u + g·(c − u)`, then diffusers' `rescale_noise_cfg` when `rescale` > 0
 * (std over every axis but batch, unbiased; `out = φ·cfg·(std_c/std_cfg) + (1−φ)·cfg`).
 * Writes into `out` ([n, …]) so the denoise loop allocates nothing per step.
 */
export function applyGuidance(
  modelOutput: Float32Array,
  n: number,
  scale: number,
  rescale: number,
  out: Float32Array,
): Float32Array {
  const per = out.length / n;
  const half = per * n;
  guideInto(out, modelOutput, half, scale);
  if (rescale > 0) {
    for (let b = 0; b < n; b++) {
      const start = b * per;
      const stdPos = std(modelOutput, half + start, per);
      const stdCfg = std(out, start, per);
      const factor = stdCfg > 0 ? rescale * (stdPos / stdCfg) + (1 - rescale) : 1;
      scaleRange(out, start, start + per, factor);
    }
  }
  return out;
}

/** out[i] = u + g·(c − u) over the first `half` values, u = output[i], c = output[half + i] (a kernel: see latent-ops.ts). */
function guideInto(out: Float32Array, output: Float32Array, half: number, scale: number): void {
  for (let i = 0; i < half; i++) {
    const u = output[i]!;
    out[i] = u + scale * (output[half + i]! - u);
  }
}

function std(x: Float32Array, start: number, count: number): number {
  let mean = 0;
  for (let i = start; i < start + count; i++) mean += x[i]!;
  mean /= count;
  let sq = 0;
  for (let i = start; i < start + count; i++) {
    const d = x[i]! - mean;
    sq += d * d;
  }
  return Math.sqrt(sq / (count - 1));
}
