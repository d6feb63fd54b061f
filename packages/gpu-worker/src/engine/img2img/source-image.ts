import { type ImageSource, KilnError } from "@kiln/shared";
import sharp from "sharp";

import { NoiseSource } from "../noise.js";
import { cropAndFill, type CropRegion, cropRegion } from "./mask-crop.js";

/** An RGB picture at the render's size, with its mask (white = repaint) when the mode has one. */
export interface PreparedSource {
  width: number;
  height: number;
  /** HWC RGB bytes: what the VAE encodes and what the final composite pastes back. */
  rgb: Uint8Array;
  /** Grey bytes, white = repaint, after `mask_blur` (used for the final composite). */
  mask?: Uint8Array;
  /**
   * `padding_mask_crop`: `rgb` and `mask` above are the crop around the mask brought to the render's size; the
   * region and the whole picture (same size) are kept for pasting the result back.
   */
  crop?: { region: CropRegion; rgb: Uint8Array; mask: Uint8Array };
}

/** Pictures bigger than this are refused by the decoder itself (the API checks the header first). */
const DECODE_PIXEL_LIMIT = 64 * 1024 * 1024;

function unreadable(field: string, e: unknown): KilnError {
  return new KilnError(
    "input_image_invalid",
    `The ${field} could not be decoded (${e instanceof Error ? e.message : String(e)}); send a PNG, JPEG or WebP file.`,
    { status: 400, retryable: false },
  );
}

const open = (bytes: Uint8Array) =>
  sharp(bytes, { failOn: "error", limitInputPixels: DECODE_PIXEL_LIMIT, animated: false }).rotate();

/**
 * Decodes, turns upright (EXIF orientation) and resizes to `width × height`:
 * - `fit`: scaled to exactly that size (diffusers' default resize; with the size taken from the picture, its
 *   aspect is kept);
 * - `fill`: kept whole inside the size, the borders filled with its stretched edges (diffusers' "fill");
 * - `crop`: covering the size, centred, the overflow cut (diffusers' "crop").
 * A picture already at the size is not resampled, so its bytes come back as sent. Returns RGB (alpha dropped,
 * as PIL's `convert("RGB")`) and, with `alphaChannel`, the alpha bytes resized the same way.
 */
async function resized(
  bytes: Uint8Array,
  field: string,
  width: number,
  height: number,
  resize: ImageSource["resize"],
  channels: "rgb" | "alpha" | "grey",
): Promise<Uint8Array> {
  try {
    const meta = await open(bytes).metadata();
    const swapped = (meta.orientation ?? 1) >= 5;
    const w0 = swapped ? meta.height! : meta.width!;
    const h0 = swapped ? meta.width! : meta.height!;
    let img = open(bytes);
    if (channels === "alpha") img = img.ensureAlpha().extractChannel(3);
    else if (channels === "grey") img = img.removeAlpha().toColourspace("b-w");
    else img = img.removeAlpha();
    if (w0 !== width || h0 !== height) {
      if (resize === "crop") img = img.resize(width, height, { fit: "cover", position: "centre" });
      else if (resize === "fill") {
        const scale = Math.min(width / w0, height / h0);
        const w = Math.max(1, Math.round(w0 * scale));
        const h = Math.max(1, Math.round(h0 * scale));
        const inner = await img.resize(w, h, { fit: "fill" }).raw().toBuffer({ resolveWithObject: true });
        const left = Math.floor((width - w) / 2);
        const top = Math.floor((height - h) / 2);
        img = sharp(inner.data, { raw: { width: w, height: h, channels: inner.info.channels } }).extend({
          left,
          top,
          right: width - w - left,
          bottom: height - h - top,
          extendWith: "copy",
        });
      } else img = img.resize(width, height, { fit: "fill" });
    }
    const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
    const want = channels === "rgb" ? 3 : 1;
    if (info.channels === want) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    // libvips may keep 3 bands for a b-w conversion of some inputs: take the first.
    const out = new Uint8Array(info.width * info.height * want);
    for (let p = 0; p < info.width * info.height; p++)
      for (let c = 0; c < want; c++) out[p * want + c] = data[p * info.channels + c]!;
    return out;
  } catch (e) {
    if (e instanceof KilnError) throw e;
    throw unreadable(field, e);
  }
}

/** Gaussian blur of a grey mask (A1111's and diffusers' `mask_blur`, σ in pixels). */
async function blurred(mask: Uint8Array, width: number, height: number, sigma: number): Promise<Uint8Array> {
  if (sigma <= 0) return mask;
  const data = await sharp(mask, { raw: { width, height, channels: 1 } })
    .blur(Math.max(0.3, sigma))
    .raw()
    .toBuffer();
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * The picture (and mask) a render starts from, at the plan's size. `imageBytes`/`maskBytes` are the stored
 * inputs; for `outpaint` the picture is placed on a larger canvas (`expand`), the new border filled by
 * stretching its edges plus seeded noise, and the border is the mask.
 */
export async function prepareSource(
  source: ImageSource,
  mode: "img2img" | "inpaint" | "outpaint",
  imageBytes: Uint8Array,
  maskBytes: Uint8Array | undefined,
  seed: number,
): Promise<PreparedSource> {
  const whole = await preparedWhole(source, mode, imageBytes, maskBytes, seed);
  const pad = source.paddingMaskCrop;
  if (pad === undefined || !whole.mask || !whole.mask.some((m) => m !== 0)) return whole;
  // diffusers' `padding_mask_crop`, on the mask as the pipeline is given it (blurred): outside the region the mask
  // is 0, so the final composite returns the picture's own bytes there.
  const { width, height, rgb, mask } = whole;
  const region = cropRegion(mask, width, height, width, height, pad);
  return {
    width,
    height,
    rgb: await cropAndFill(rgb, width, height, 3, region, width, height),
    mask: await cropAndFill(mask, width, height, 1, region, width, height),
    crop: { region, rgb, mask },
  };
}

async function preparedWhole(
  source: ImageSource,
  mode: "img2img" | "inpaint" | "outpaint",
  imageBytes: Uint8Array,
  maskBytes: Uint8Array | undefined,
  seed: number,
): Promise<PreparedSource> {
  const { width, height, resize } = source;
  const rgb = await resized(imageBytes, "image", width, height, resize, "rgb");
  if (mode === "img2img") return { width, height, rgb };
  if (mode === "inpaint") {
    let mask: Uint8Array;
    if (source.maskFrom === "alpha") {
      // OpenAI's convention: the fully transparent pixels (of the mask, else of the picture) are the area to edit.
      const alpha = await resized(
        maskBytes ?? imageBytes,
        maskBytes ? "mask" : "image",
        width,
        height,
        resize,
        "alpha",
      );
      mask = alpha.map((a) => (a === 0 ? 255 : 0));
    } else {
      if (!maskBytes)
        throw new KilnError("input_mask_missing", "inpaint needs a mask (white = repaint).", { status: 400 });
      mask = await resized(maskBytes, "mask", width, height, resize, "grey");
    }
    return { width, height, rgb, mask: await blurred(mask, width, height, source.maskBlur) };
  }
  const e = source.expand ?? { left: 0, right: 0, top: 0, bottom: 0 };
  const W = width + e.left + e.right;
  const H = height + e.top + e.bottom;
  const extended = await sharp(rgb, { raw: { width, height, channels: 3 } })
    .extend({ ...e, extendWith: "copy" })
    .raw()
    .toBuffer();
  const canvas = new Uint8Array(extended.buffer, extended.byteOffset, extended.byteLength);
  const mask = new Uint8Array(W * H);
  // Noise on the stretched edges gives the denoiser texture to work from instead of streaks.
  const noise = new NoiseSource((seed ^ 0x0c7a1e55) >>> 0).randn(W * H * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const inside = x >= e.left && x < e.left + width && y >= e.top && y < e.top + height;
      if (inside) continue;
      const p = y * W + x;
      mask[p] = 255;
      for (let c = 0; c < 3; c++) {
        const v = canvas[p * 3 + c]! + 32 * noise[p * 3 + c]!;
        canvas[p * 3 + c] = v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
      }
    }
  }
  return { width: W, height: H, rgb: canvas, mask: await blurred(mask, W, H, source.maskBlur) };
}
