import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { compositeOverOriginal } from "../../src/engine/img2img/mask.js";
import { cropAndFill, cropRegion, pasteCropBack } from "../../src/engine/img2img/mask-crop.js";

/** A w×h grey mask with the box [x0, x1) × [y0, y1) at 255. */
function boxMask(w: number, h: number, x0: number, x1: number, y0: number, y1: number) {
  const m = new Uint8Array(w * h);
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) m[y * w + x] = 255;
  return m;
}

describe("padding_mask_crop: VaeImageProcessor.get_crop_region (constants from diffusers' formulas)", () => {
  it("grows a wide box to the aspect ratio around its centre", () => {
    // 512×512, box x ∈ [100, 150), y ∈ [300, 320): crop_left 100, crop_right 362, crop_top 300, crop_bottom 192.
    // pad 32 → (x1, y1, x2, y2) = (68, 268, 182, 352): 114 × 84, ratio 1.357 > 512/512.
    // desired_height = 114 / 1 = 114, diff = int(114 − 84) = 30 → y1 = 268 − 15 = 253, y2 = 352 + 15 = 367.
    assert.deepEqual(cropRegion(boxMask(512, 512, 100, 150, 300, 320), 512, 512, 512, 512, 32), [68, 253, 182, 367]);
  });

  it("shifts a region that runs past the bottom back inside", () => {
    // 512×384, box x ∈ [400, 500), y ∈ [370, 384): crop_left 400, crop_right 12, crop_top 370, crop_bottom 0.
    // pad 9 → (391, 361, min(509, 512), min(393, 384)) = (391, 361, 509, 384): 118 × 23, ratio 5.13 > 4/3.
    // desired_height = 118 / (512/384) = 88.5, diff = int(88.5 − 23) = 65 → y1 = 361 − 32 = 329, y2 = 384 + 33 = 417;
    // y2 ≥ 384: diff 33 → y2 = 384, y1 = 296.
    assert.deepEqual(cropRegion(boxMask(512, 384, 400, 500, 370, 384), 512, 384, 512, 384, 9), [391, 296, 509, 384]);
  });

  it("grows a tall box sideways and moves it off the left edge", () => {
    // 512×384, box x ∈ [0, 10), y ∈ [100, 300): crop_left 0, crop_right 502, crop_top 100, crop_bottom 84.
    // pad 6 → (0, 94, 16, 306): 16 × 212, ratio 0.075 ≤ 4/3. desired_width = 212 · 4/3 = 282.67,
    // diff = int(282.67 − 16) = 266 → x1 = 0 − 133 = −133, x2 = 16 + 133 = 149; x1 < 0 → x2 = 149 + 133 = 282, x1 = 0.
    assert.deepEqual(cropRegion(boxMask(512, 384, 0, 10, 100, 300), 512, 384, 512, 384, 6), [0, 94, 282, 306]);
  });

  it("counts any non-zero mask value (a blurred edge) as masked", () => {
    const m = boxMask(64, 64, 20, 30, 20, 30);
    m[5 * 64 + 40] = 1;
    // Box x ∈ [20, 41), y ∈ [5, 30), pad 0 → 21 × 25, ratio 0.84 ≤ 1: desired_width = 25, diff = int(25 − 21) = 4
    // → x1 = 18, x2 = 43.
    assert.deepEqual(cropRegion(m, 64, 64, 64, 64, 0), [18, 5, 43, 30]);
  });
});

describe("padding_mask_crop: crop → render size → paste back (apply_overlay)", () => {
  it("brings the crop to the render size as resize_mode 'fill' (118×88 → 512×381 centred, edges stretched)", async () => {
    const w = 512;
    const h = 384;
    const rgb = new Uint8Array(w * h * 3).map((_, i) => (i * 7 + (i >> 9)) & 255);
    const out = await cropAndFill(rgb, w, h, 3, [391, 296, 509, 384], w, h);
    assert.equal(out.length, w * h * 3);
    // _resize_and_fill: 512/384 < 118/88 → src_w = 512, src_h = 88·512 // 118 = 381, pasted at y = 192 − 190 = 2;
    // rows 0–1 repeat row 2 and row 383 repeats row 382.
    const row = (y: number) => [...out.subarray(y * w * 3, (y + 1) * w * 3)];
    assert.deepEqual(row(0), row(2));
    assert.deepEqual(row(1), row(2));
    assert.deepEqual(row(383), row(382));
    assert.notDeepEqual(row(2), row(3));
  });

  it("pastes back only through the mask: outside it every byte is the picture's", async () => {
    const w = 256;
    const h = 192;
    const picture = new Uint8Array(w * h * 3).map((_, i) => (i * 13 + (i >> 8) * 5) & 255);
    const mask = boxMask(w, h, 150, 190, 40, 70);
    const region = cropRegion(mask, w, h, w, h, 16);
    // A "generated" crop that differs everywhere from the picture.
    const generated = new Uint8Array(w * h * 3).fill(7);
    const out = await pasteCropBack(generated, w, h, region, { width: w, height: h, rgb: picture, mask });
    for (let p = 0; p < w * h; p++)
      for (let c = 0; c < 3; c++) {
        if (mask[p] === 0) assert.equal(out[p * 3 + c], picture[p * 3 + c], `pixel ${p}`);
        else assert.equal(out[p * 3 + c], 7, `masked pixel ${p}`);
      }
    // Same as compositing the placed crop directly.
    assert.deepEqual(out, compositeOverOriginal(new Uint8Array(w * h * 3).fill(7), picture, mask));
  });
});
