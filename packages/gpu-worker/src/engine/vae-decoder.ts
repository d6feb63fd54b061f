import { KilnError } from "@kiln/shared";
import * as ort from "onnxruntime-node";

import { floatTensor, type LoadedSession, outputAsFloat32 } from "../onnx/tensors.js";
import { firstNonFinite } from "./latent-ops.js";

export interface DecodedImage {
  width: number;
  height: number;
  /** RGB, 8 bits per channel, row-major (HWC). */
  rgb: Uint8Array;
}

/**
 * Decodes latents image by image (a 1024² SDXL VAE decode is memory hungry, and batching buys little).
 * Output in [−1, 1] → `round((x/2 + 0.5)·255)` clamped. A NaN or Inf — the stock SDXL VAE overflows in
 * fp16 — fails the job with `vae_non_finite` instead of returning a black image.
 */
export async function decodeLatentsToImages(
  vae: LoadedSession,
  latents: Float32Array,
  shape: readonly number[],
  scalingFactor: number,
  /** Runs on each image's CHW floats before they are rounded to bytes (diffusers' watermark step). */
  beforeRounding?: (pixels: Float32Array, height: number, width: number) => void,
  /** Called after the last image's VAE call, before its watermark and rounding (the pipelined worker's GPU turn ends there). */
  afterLastRun?: () => void,
): Promise<DecodedImage[]> {
  const [n, c, h, w] = shape as [number, number, number, number];
  const per = c * h * w;
  // torch divides a float32 tensor by a Python float in float32.
  const factor = Math.fround(scalingFactor);
  const images: DecodedImage[] = [];
  for (let b = 0; b < n; b++) {
    const scaled = new Float32Array(per);
    for (let i = 0; i < per; i++) scaled[i] = latents[b * per + i]! / factor;
    const out = await vae.session.run({ latent_sample: floatTensor(vae, "latent_sample", scaled, [1, c, h, w]) });
    if (b === n - 1) afterLastRun?.();
    const sample = out.sample as ort.Tensor;
    const pixels = outputAsFloat32(sample);
    const bad = firstNonFinite(pixels);
    if (bad >= 0) {
      throw new KilnError(
        "vae_non_finite",
        `The VAE decoder produced ${pixels[bad]} at value ${bad} of image ${b}: the stock SDXL VAE overflows in fp16. Use an fp32 VAE or an fp16-fixed one (madebyollin/sdxl-vae-fp16-fix).`,
      );
    }
    const [, , H, W] = sample.dims as [number, number, number, number];
    beforeRounding?.(pixels, H, W);
    images.push({ width: W, height: H, rgb: chwToRgb8(pixels, H, W) });
  }
  return images;
}

/**
 * CHW floats in [−1, 1] to HWC bytes as diffusers' image processor does it, in float32:
 * `(x/2 + 0.5).clamp(0, 1)`, then numpy's `(x·255).round()` — halves to even.
 */
export function chwToRgb8(x: Float32Array, h: number, w: number): Uint8Array {
  const f32 = Math.fround;
  const plane = h * w;
  const rgb = new Uint8Array(plane * 3);
  for (let p = 0; p < plane; p++) {
    for (let ch = 0; ch < 3; ch++) {
      const unit = f32(x[ch * plane + p]! / 2 + 0.5);
      const scaled = f32((unit < 0 ? 0 : unit > 1 ? 1 : unit) * 255);
      let v = Math.round(scaled);
      if (v - scaled === 0.5 && v % 2 === 1) v -= 1;
      rgb[p * 3 + ch] = v;
    }
  }
  return rgb;
}
