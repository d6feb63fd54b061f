import { KilnError, type OutputFormat } from "@kiln/shared";

import { type EncodedImage, encodeImageFile } from "../image-files.js";
import { compositeOverOriginal } from "../img2img/mask.js";
import { type CropRegion, pasteCropBack } from "../img2img/mask-crop.js";
import { firstNonFinite } from "../latent-ops.js";
import { chwToRgb8 } from "../vae-decoder.js";
import { watermarkDecoded } from "../watermark/sdxl-watermark.js";

/** The picture an inpaint or outpaint is composited onto (diffusers' `apply_overlay`), from `PreparedSource`. */
export interface FinishComposite {
  width: number;
  height: number;
  rgb: Uint8Array;
  mask: Uint8Array;
  crop?: { region: CropRegion; rgb: Uint8Array; mask: Uint8Array };
}

/** One decoded image and what to do with it: all plain data, so it can cross to a finishing thread. */
export interface FinishRequest {
  /** The VAE's CHW float output, [−1, 1]; marked in place. */
  pixels: Float32Array;
  height: number;
  width: number;
  /** The image's index in its stage (for the error message). */
  index: number;
  watermark: boolean;
  composite?: FinishComposite;
  format: OutputFormat;
  quality: number;
  /** The A1111 `parameters` text written into the file. */
  parameters: string;
}

/**
 * Everything after one image's VAE decode, in diffusers' order: the non-finite check, the invisible watermark
 * on the floats, rounding to bytes (`postprocess`), the composite onto the original (`apply_overlay`), then the
 * image file. The same code runs in-line and on a finishing thread, so the bytes do not depend on where.
 */
export async function finishImage(r: FinishRequest): Promise<EncodedImage> {
  const bad = firstNonFinite(r.pixels);
  if (bad >= 0) {
    throw new KilnError(
      "vae_non_finite",
      `The VAE decoder produced ${r.pixels[bad]} at value ${bad} of image ${r.index}: the stock SDXL VAE overflows in fp16. Use an fp32 VAE or an fp16-fixed one (madebyollin/sdxl-vae-fp16-fix).`,
    );
  }
  if (r.watermark) watermarkDecoded(r.pixels, r.height, r.width);
  let rgb = chwToRgb8(r.pixels, r.height, r.width);
  const c = r.composite;
  if (c) {
    rgb = c.crop
      ? await pasteCropBack(rgb, r.width, r.height, c.crop.region, {
          width: c.width,
          height: c.height,
          rgb: c.crop.rgb,
          mask: c.crop.mask,
        })
      : compositeOverOriginal(rgb, c.rgb, c.mask);
  }
  return encodeImageFile({ width: r.width, height: r.height, rgb }, r.format, r.quality, r.parameters);
}
