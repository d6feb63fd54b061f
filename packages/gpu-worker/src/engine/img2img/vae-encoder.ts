import { KilnError } from "@kiln/shared";
import * as ort from "onnxruntime-node";

import { floatTensor, type LoadedSession, outputAsFloat32 } from "../../onnx/tensors.js";
import { firstNonFinite } from "../latent-ops.js";
import type { NoiseSource } from "../noise.js";

const f32 = Math.fround;

/**
 * RGB bytes (HWC) to the VAE's input, as diffusers' `VaeImageProcessor.preprocess` does it in float32:
 * `x/255` (numpy), then `2·x − 1` (torch), laid out CHW.
 */
export function rgb8ToVaeInput(rgb: Uint8Array, width: number, height: number): Float32Array {
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) out[c * plane + p] = f32(2 * f32(rgb[p * 3 + c]! / 255) - 1);
  }
  return out;
}

/**
 * A sample of the encoder's diagonal Gaussian, times the scaling factor (diffusers' `DiagonalGaussianDistribution`
 * then `_encode_vae_image`): `params` is [2c, h, w] = mean ‖ logvar; `logvar` is clamped to [−30, 20],
 * `std = exp(0.5·logvar)`, `x = mean + std·ε`, and the result is `x · scalingFactor`, all in float32. `noise`
 * holds ε: c·h·w values, drawn by the caller from the image's generator (`randn_tensor(mean.shape, generator)`).
 */
export function sampleLatentDistribution(
  params: Float32Array,
  noise: Float32Array,
  scalingFactor: number,
  out = new Float32Array(params.length / 2),
): Float32Array {
  const half = params.length / 2;
  if (noise.length !== half) throw new RangeError(`${noise.length} noise values for ${half} latents`);
  const factor = f32(scalingFactor);
  for (let i = 0; i < half; i++) {
    const logvar = Math.min(Math.max(params[half + i]!, -30), 20);
    const std = f32(Math.exp(f32(0.5 * logvar)));
    const x = f32(params[i]! + f32(std * noise[i]!));
    out[i] = f32(x * factor);
  }
  return out;
}

/**
 * Encodes one image (CHW in [−1, 1]) with optimum's `vae_encoder` (`sample` → `latent_parameters`) and samples
 * its latents with `generator`, as diffusers' `retrieve_latents(vae.encode(image), generator)` in sample mode.
 */
export async function encodeImageLatents(
  vae: LoadedSession,
  pixels: Float32Array,
  width: number,
  height: number,
  generator: NoiseSource,
  scalingFactor: number,
): Promise<{ latents: Float32Array; shape: [number, number, number] }> {
  const out = await vae.session.run({ sample: floatTensor(vae, "sample", pixels, [1, 3, height, width]) });
  const tensor = out.latent_parameters as ort.Tensor;
  const params = outputAsFloat32(tensor);
  const bad = firstNonFinite(params);
  if (bad >= 0) {
    throw new KilnError(
      "vae_non_finite",
      `The VAE encoder produced ${params[bad]}: the stock SDXL VAE overflows in fp16. Use an fp32 VAE or an fp16-fixed one (madebyollin/sdxl-vae-fp16-fix).`,
    );
  }
  const [, c2, h, w] = tensor.dims as [number, number, number, number];
  const c = c2 / 2;
  const noise = generator.randn(c * h * w);
  return { latents: sampleLatentDistribution(params, noise, scalingFactor), shape: [c, h, w] };
}
