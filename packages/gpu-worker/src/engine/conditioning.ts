import type { RenderPlan } from "@kiln/shared";

import { SDXL_ROLE_WIDTHS, type SdxlTimeIdsWidth } from "../models/sdxl-spec.js";

/** What SDXL's micro-conditioning reads from a render; sizes are (height, width) as diffusers orders them. */
export type TimeIdInputs = Pick<
  RenderPlan,
  "originalSize" | "cropsCoordsTopLeft" | "targetSize" | "aestheticScore" | "negativeAestheticScore"
>;

/**
 * The micro-conditioning of a stage whose image is `imageSize` (height, width). SDEdit with a latent upscale
 * works on a larger image than the plan's: diffusers' img2img defaults `original_size` and `target_size` to the
 * size of the image it is given, as A1111's hires pass does, so sizes left at their default (the plan's own
 * height × width) follow the upscaled size. A size the request set to exactly the base size cannot be told
 * from the default and follows it too.
 */
export function stageTimeIdInputs(
  plan: TimeIdInputs & Pick<RenderPlan, "width" | "height">,
  imageSize: readonly [number, number],
): TimeIdInputs {
  const resized = imageSize[0] !== plan.height || imageSize[1] !== plan.width;
  const follow = (size: [number, number]): [number, number] =>
    resized && size[0] === plan.height && size[1] === plan.width ? [imageSize[0], imageSize[1]] : size;
  return { ...pickTimeIdInputs(plan), originalSize: follow(plan.originalSize), targetSize: follow(plan.targetSize) };
}

const pickTimeIdInputs = (p: TimeIdInputs): TimeIdInputs => ({
  originalSize: p.originalSize,
  cropsCoordsTopLeft: p.cropsCoordsTopLeft,
  targetSize: p.targetSize,
  aestheticScore: p.aestheticScore,
  negativeAestheticScore: p.negativeAestheticScore,
});

/**
 * SDXL's micro-conditioning ("add_time_ids"), one row per UNet batch entry, as diffusers builds it:
 * - base (6 wide): [orig_h, orig_w, crop_top, crop_left, target_h, target_w], the same for negative rows;
 * - refiner (6 → 5 wide, `requires_aesthetics_score`): [orig_h, orig_w, crop_top, crop_left, aesthetic_score];
 *   negative rows use `negative_aesthetic_score` and `negative_crops_coords_top_left`, which Kiln leaves at
 *   diffusers' default (0, 0).
 * Rows are laid out [negative × n, positive × n] when guidance is on, else [positive × n].
 */
export function timeIds(inputs: TimeIdInputs, width: SdxlTimeIdsWidth, n: number, guided: boolean): Float32Array {
  const [oh, ow] = inputs.originalSize;
  const [ct, cl] = inputs.cropsCoordsTopLeft;
  const [th, tw] = inputs.targetSize;
  const positive =
    width === SDXL_ROLE_WIDTHS.base.timeIdsWidth ? [oh, ow, ct, cl, th, tw] : [oh, ow, ct, cl, inputs.aestheticScore];
  const negative =
    width === SDXL_ROLE_WIDTHS.base.timeIdsWidth ? positive : [oh, ow, 0, 0, inputs.negativeAestheticScore];
  const rows = guided
    ? [...Array<number[]>(n).fill(negative), ...Array<number[]>(n).fill(positive)]
    : Array<number[]>(n).fill(positive);
  return Float32Array.from(rows.flat());
}
