/**
 * Inpainting's mask arithmetic, after diffusers' SDXL inpaint pipeline (`prepare_mask_latents` and the blend in
 * its denoising loop) and `VaeImageProcessor`'s mask handling. Masks are white = repaint.
 */

import { divideInto } from "../latent-ops.js";

const f32 = Math.fround;

/** Grey bytes to diffusers' binarised mask (`do_binarize`: `x/255 < 0.5 → 0`, else 1). */
export function binariseMask(grey: Uint8Array): Float32Array {
  const out = new Float32Array(grey.length);
  for (let i = 0; i < grey.length; i++) out[i] = f32(grey[i]! / 255) < 0.5 ? 0 : 1;
  return out;
}

/**
 * `torch.nn.functional.interpolate(mask, size=(outH, outW))` (mode "nearest"): output cell (y, x) takes input
 * `(min(⌊y·inH/outH⌋, inH−1), min(⌊x·inW/outW⌋, inW−1))`, the scale computed in float32 as ATen does.
 */
export function downsampleMaskNearest(
  mask: Float32Array,
  inW: number,
  inH: number,
  outW: number,
  outH: number,
): Float32Array {
  const out = new Float32Array(outW * outH);
  const sy = f32(inH / outH);
  const sx = f32(inW / outW);
  for (let y = 0; y < outH; y++) {
    const iy = Math.min(Math.floor(f32(y * sy)), inH - 1);
    for (let x = 0; x < outW; x++) {
      const ix = Math.min(Math.floor(f32(x * sx)), inW - 1);
      out[y * outW + x] = mask[iy * inW + ix]!;
    }
  }
  return out;
}

/**
 * The 4-channel UNet's inpainting step, in place on `latents` ([n, c, h, w]):
 * `latents = (1 − mask)·known + mask·latents`, where `known` is the image's latents re-noised to the next step's
 * level (its clean latents after the last step) and `mask` is the [h, w] latent-grid mask, shared by every image
 * and channel.
 */
export function blendKnownLatents(latents: Float32Array, known: Float32Array, mask: Float32Array): Float32Array {
  const plane = mask.length;
  for (let i = 0; i < latents.length; i++) {
    const m = mask[i % plane]!;
    latents[i] = f32(f32(f32(1 - m) * known[i]!) + f32(m * latents[i]!));
  }
  return latents;
}

/** diffusers' `masked_image = image · (mask < 0.5)`: the VAE input with the area to repaint set to 0 (grey). */
export function maskedImage(pixels: Float32Array, mask: Float32Array): Float32Array {
  const plane = mask.length;
  const out = new Float32Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) out[i] = mask[i % plane]! < 0.5 ? pixels[i]! : 0;
  return out;
}

/**
 * The 9-channel UNet's extra input per image: [1 + c, h, w] = latent-grid mask ‖ masked-image latents, which the
 * loop appends after the scaled latents (`torch.cat([latents, mask, masked_image_latents], dim=1)`).
 */
export function inpaintConditioning(mask: Float32Array, maskedLatents: Float32Array): Float32Array {
  const out = new Float32Array(mask.length + maskedLatents.length);
  out.set(mask, 0);
  out.set(maskedLatents, mask.length);
  return out;
}

/**
 * The UNet input for a 9-channel UNet: per batch row, the scaled latents of its image, then that image's
 * conditioning ([negative × n, positive × n] rows share image i's latents and conditioning).
 */
export function fillInpaintModelInput(
  latents: Float32Array,
  divisor: number,
  conditioning: readonly Float32Array[],
  out: Float32Array,
): Float32Array {
  const n = conditioning.length;
  const per = latents.length / n;
  const rows = out.length / (per + conditioning[0]!.length);
  for (let r = 0; r < rows; r++) {
    const i = r % n;
    const base = r * (per + conditioning[i]!.length);
    if (divisor === 1) out.set(latents.subarray(i * per, (i + 1) * per), base);
    else divideInto(out.subarray(base, base + per), latents.subarray(i * per, (i + 1) * per), divisor);
    out.set(conditioning[i]!, base + per);
  }
  return out;
}

/**
 * diffusers' `apply_overlay`: the original image pasted over the generated one through the inverted mask, so a
 * pixel whose mask byte is 0 comes back exactly as sent and one at 255 is all generated; between, a linear blend
 * rounded to the nearest byte.
 */
export function compositeOverOriginal(generated: Uint8Array, original: Uint8Array, mask: Uint8Array): Uint8Array {
  const out = new Uint8Array(generated.length);
  for (let p = 0; p < mask.length; p++) {
    const m = mask[p]!;
    for (let c = 0; c < 3; c++) {
      const i = p * 3 + c;
      out[i] =
        m === 0
          ? original[i]!
          : m === 255
            ? generated[i]!
            : Math.round((original[i]! * (255 - m) + generated[i]! * m) / 255);
    }
  }
  return out;
}
