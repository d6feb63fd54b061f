import type { RenderPlan } from "@kiln/shared";

/**
 * SDXL's micro-conditioning ("add_time_ids"), one row per UNet batch entry.
 * Base (6 wide): [orig_h, orig_w, crop_top, crop_left, target_h, target_w].
 * Refiner (5 wide): [orig_h, orig_w, crop_top, crop_left, aesthetic_score], with the
 * negative rows using `negative_aesthetic_score` (6.0 / 2.5 by default, as diffusers).
 * Rows are laid out [negative × n, positive × n] when guidance is on, else [positive × n].
 */
export function timeIds(
  plan: Pick<RenderPlan, "originalSize" | "cropsCoordsTopLeft" | "targetSize" | "aestheticScore" | "negativeAestheticScore">,
  width: 5 | 6,
  n: number,
  guided: boolean,
  targetOverride?: [number, number],
): Float32Array {
  const [oh, ow] = plan.originalSize;
  const [ct, cl] = plan.cropsCoordsTopLeft;
  const [th, tw] = targetOverride ?? plan.targetSize;
  const positive = width === 6 ? [oh, ow, ct, cl, th, tw] : [oh, ow, ct, cl, plan.aestheticScore];
  const negative = width === 6 ? positive : [oh, ow, ct, cl, plan.negativeAestheticScore];
  const rows = guided ? [...Array(n).fill(negative), ...Array(n).fill(positive)] : Array(n).fill(positive);
  return Float32Array.from(rows.flat());
}
