import { type BlobStore, decodeLatents, type Latents } from "@kiln/shared";
import { encodeBase64 } from "hono/utils/encode";

import { encodePng } from "./png.js";

/**
 * SDXL's well-known linear latent → RGB approximation (ComfyUI's `latent_formats.SDXL`): one
 * pixel per 8×8 block, no VAE, microseconds per image. Rows are the 4 latent channels, columns
 * R, G, B; the result is in [-1, 1].
 */
export const SDXL_LATENT_RGB_FACTORS = [
  [0.3651, 0.4232, 0.4341],
  [-0.2533, -0.0042, 0.1068],
  [0.1076, 0.1111, -0.0362],
  [-0.3165, -0.2492, -0.2188],
] as const;
export const SDXL_LATENT_RGB_BIAS = [0.1084, -0.0175, -0.0011] as const;

/**
 * RGB bytes of batch item `index` of the latents. DPM-solver/DDIM latents (`vp`) are scaled back
 * to the `x0 + σε` form the factors expect. Hand-over latents of an ensemble render still carry
 * noise (σ ≈ 0.5 at the default cut), and the preview shows it.
 */
export function latentsToRgb(latents: Latents, index = 0): { width: number; height: number; rgb: Uint8Array } {
  const [batch, channels, height, width] = latents.shape as [number, number, number, number];
  if (latents.shape.length !== 4 || channels !== 4 || index >= batch) {
    throw new RangeError(`expected latents [batch, 4, h, w] with item ${index}, got [${latents.shape.join(", ")}]`);
  }
  const scale = latents.meta.latentSpace === "vp" ? Math.sqrt(latents.meta.sigma ** 2 + 1) : 1;
  const plane = width * height;
  const base = index * channels * plane;
  const rgb = new Uint8Array(plane * 3);
  for (let p = 0; p < plane; p++) {
    for (let k = 0; k < 3; k++) {
      let v = SDXL_LATENT_RGB_BIAS[k]!;
      for (let ch = 0; ch < 4; ch++)
        v += latents.data[base + ch * plane + p]! * scale * SDXL_LATENT_RGB_FACTORS[ch]![k]!;
      rgb[p * 3 + k] = Math.round(Math.min(1, Math.max(0, (v + 1) / 2)) * 255);
    }
  }
  return { width, height, rgb };
}

export interface LatentPreview {
  /** The stage whose output latents these are (the hand-over into the next stage). */
  stage: number;
  sigma: number;
  step_index: number;
  steps: number;
  width: number;
  height: number;
  /** One `data:image/png;base64,…` per image of the job. */
  images: string[];
}

/** A preview of the hand-over latents stored at `key`, or undefined when there are none (yet). */
export async function latentPreview(blobs: BlobStore, key: string): Promise<LatentPreview | undefined> {
  const bytes = await blobs.get(key);
  if (!bytes) return undefined;
  const latents = await decodeLatents(bytes);
  const images: string[] = [];
  let size = { width: 0, height: 0 };
  for (let i = 0; i < (latents.shape[0] ?? 0); i++) {
    const { width, height, rgb } = latentsToRgb(latents, i);
    size = { width, height };
    images.push(`data:image/png;base64,${encodeBase64((await encodePng(width, height, rgb)).buffer as ArrayBuffer)}`);
  }
  return {
    stage: latents.meta.stage,
    sigma: latents.meta.sigma,
    step_index: latents.meta.stepIndex,
    steps: latents.meta.steps,
    ...size,
    images,
  };
}
