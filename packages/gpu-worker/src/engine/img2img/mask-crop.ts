import sharp from "sharp";

import { compositeOverOriginal } from "./mask.js";

/** `(x1, y1, x2, y2)`: left/top inclusive, right/bottom exclusive, as PIL's `crop` box. */
export type CropRegion = [number, number, number, number];

const floorDiv = (a: number, b: number) => Math.floor(a / b);

/**
 * diffusers' `VaeImageProcessor.get_crop_region(mask, width, height, pad)`: the smallest box holding every non-zero
 * mask pixel, grown by `pad` on each side (within the picture), then grown to the aspect ratio `width / height`
 * around its centre and shifted back inside the picture (clipped if it still does not fit). Integer steps as the
 * Python code takes them (`int()` truncates, `//` floors).
 */
export function cropRegion(
  mask: Uint8Array,
  w: number,
  h: number,
  width: number,
  height: number,
  pad: number,
): CropRegion {
  const columnEmpty = (x: number) => {
    for (let y = 0; y < h; y++) if (mask[y * w + x] !== 0) return false;
    return true;
  };
  const rowEmpty = (y: number) => {
    for (let x = 0; x < w; x++) if (mask[y * w + x] !== 0) return false;
    return true;
  };
  let left = 0;
  while (left < w && columnEmpty(left)) left++;
  let right = 0;
  while (right < w && columnEmpty(w - 1 - right)) right++;
  let top = 0;
  while (top < h && rowEmpty(top)) top++;
  let bottom = 0;
  while (bottom < h && rowEmpty(h - 1 - bottom)) bottom++;

  let x1 = Math.max(left - pad, 0);
  let y1 = Math.max(top - pad, 0);
  let x2 = Math.min(w - right + pad, w);
  let y2 = Math.min(h - bottom + pad, h);

  const ratioCrop = (x2 - x1) / (y2 - y1);
  const ratio = width / height;
  if (ratioCrop > ratio) {
    const diff = Math.trunc((x2 - x1) / ratio - (y2 - y1));
    y1 -= floorDiv(diff, 2);
    y2 += diff - floorDiv(diff, 2);
    if (y2 >= h) {
      const over = y2 - h;
      y2 -= over;
      y1 -= over;
    }
    if (y1 < 0) {
      y2 -= y1;
      y1 = 0;
    }
    if (y2 >= h) y2 = h;
  } else {
    const diff = Math.trunc((y2 - y1) * ratio - (x2 - x1));
    x1 -= floorDiv(diff, 2);
    x2 += diff - floorDiv(diff, 2);
    if (x2 >= w) {
      const over = x2 - w;
      x2 -= over;
      x1 -= over;
    }
    if (x1 < 0) {
      x2 -= x1;
      x1 = 0;
    }
    if (x2 >= w) x2 = w;
  }
  return [x1, y1, x2, y2];
}

const asBytes = (b: Buffer) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);

/**
 * The crop of a picture (`channels` 3 = RGB, 1 = grey), brought to `width × height` as diffusers' preprocess does
 * with `crops_coords` and `resize_mode="fill"`: scaled (Lanczos) to fit inside, centred, the rest filled by
 * stretching its edges. The crop already has (almost) the render's aspect, so the fill is at most a pixel or two.
 */
export async function cropAndFill(
  pixels: Uint8Array,
  w: number,
  h: number,
  channels: 1 | 3,
  region: CropRegion,
  width: number,
  height: number,
): Promise<Uint8Array> {
  const [x1, y1, x2, y2] = region;
  const cw = x2 - x1;
  const ch = y2 - y1;
  const ratio = width / height;
  const srcRatio = cw / ch;
  // diffusers' `_resize_and_fill`.
  const srcW = ratio < srcRatio ? width : floorDiv(cw * height, ch);
  const srcH = ratio >= srcRatio ? height : floorDiv(ch * width, cw);
  const resized = await sharp(pixels, { raw: { width: w, height: h, channels } })
    .extract({ left: x1, top: y1, width: cw, height: ch })
    .resize(srcW, srcH, { fit: "fill", kernel: "lanczos3" })
    .raw()
    .toBuffer();
  if (srcW === width && srcH === height) return asBytes(resized);
  const left = floorDiv(width, 2) - floorDiv(srcW, 2);
  const top = floorDiv(height, 2) - floorDiv(srcH, 2);
  const filled = await sharp(resized, { raw: { width: srcW, height: srcH, channels } })
    .extend({ left, top, right: width - srcW - left, bottom: height - srcH - top, extendWith: "copy" })
    .raw()
    .toBuffer();
  return asBytes(filled);
}

/**
 * diffusers' `apply_overlay(mask, init_image, image, crop_coords)`: the generated crop is resized to the region
 * (`resize_mode="crop"`: cover, centred), placed on a blank canvas of the picture's size at the region, and the
 * picture pasted over it through the inverted mask, so outside the mask (and so outside the region) the picture's
 * bytes come back unchanged.
 */
export async function pasteCropBack(
  generated: Uint8Array,
  width: number,
  height: number,
  region: CropRegion,
  original: { width: number; height: number; rgb: Uint8Array; mask: Uint8Array },
): Promise<Uint8Array> {
  const [x1, y1, x2, y2] = region;
  const cw = x2 - x1;
  const ch = y2 - y1;
  const ratio = cw / ch;
  const srcRatio = width / height;
  // diffusers' `_resize_and_crop`.
  const srcW = ratio > srcRatio ? cw : floorDiv(width * ch, height);
  const srcH = ratio <= srcRatio ? ch : floorDiv(height * cw, width);
  const resized = asBytes(
    await sharp(generated, { raw: { width, height, channels: 3 } })
      .resize(srcW, srcH, { fit: "fill", kernel: "lanczos3" })
      .raw()
      .toBuffer(),
  );
  const canvas = new Uint8Array(original.width * original.height * 3);
  const offX = floorDiv(cw, 2) - floorDiv(srcW, 2);
  const offY = floorDiv(ch, 2) - floorDiv(srcH, 2);
  for (let y = 0; y < ch; y++) {
    const sy = y - offY;
    if (sy < 0 || sy >= srcH) continue;
    for (let x = 0; x < cw; x++) {
      const sx = x - offX;
      if (sx < 0 || sx >= srcW) continue;
      const to = ((y1 + y) * original.width + x1 + x) * 3;
      const from = (sy * srcW + sx) * 3;
      canvas[to] = resized[from]!;
      canvas[to + 1] = resized[from + 1]!;
      canvas[to + 2] = resized[from + 2]!;
    }
  }
  return compositeOverOriginal(canvas, original.rgb, original.mask);
}
