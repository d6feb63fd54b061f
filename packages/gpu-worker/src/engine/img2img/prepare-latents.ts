import { KilnError, type RenderPlan } from "@kiln/shared";

import type { NoiseSource } from "../noise.js";
import type { Scheduler } from "../schedulers/scheduler.js";
import type { SdxlModel } from "../sdxl-model.js";
import { binariseMask, downsampleMaskNearest, inpaintConditioning, maskedImage } from "./mask.js";
import type { PreparedSource } from "./source-image.js";
import { encodeImageLatents, rgb8ToVaeInput } from "./vae-encoder.js";

/** Inpainting with a 4-channel UNet: the picture's latents, re-noised with `noise`, go back in where `mask` is 0. */
export interface LatentBlend {
  /** The latent-grid mask ([h, w]), 1 = repaint. */
  mask: Float32Array;
  imageLatents: Float32Array;
  noise: Float32Array;
}

/** How a stage that starts from a picture begins, and what its denoising loop needs besides the latents. */
export interface ImageStart {
  shape: [number, number, number, number];
  latents: Float32Array;
  /** Inpainting with a 4-channel UNet: re-noised image latents are blended in outside the mask after each step. */
  blend?: LatentBlend;
  /** Inpainting with a 9-channel UNet: per image, the mask ‖ masked-image latents appended to its UNet input. */
  conditioning?: Float32Array[];
}

/**
 * Prepare latents from the user's picture, as diffusers' SDXL img2img and inpaint pipelines do with one
 * generator per image. Per image, from its generator in this order: the picture's latents sampled from the VAE
 * encoder's distribution (× scaling factor), the noise, then (9-channel UNet) the masked picture's latents.
 * The start is `add_noise(image_latents, noise, timesteps[begin])`, except inpainting at strength 1, which starts
 * from pure noise × `init_noise_sigma` (and a 9-channel UNet then does not encode the picture at all).
 */
export async function prepareImageStart(
  model: SdxlModel,
  plan: RenderPlan,
  strength: number,
  scheduler: Scheduler,
  begin: number,
  generators: readonly NoiseSource[],
  source: PreparedSource,
): Promise<ImageStart> {
  const vae = model.vaeEncoder;
  if (!vae) {
    throw new KilnError(
      "model_without_vae_encoder",
      `${model.dir} has no vae_encoder/ folder, which img2img, inpaint and outpaint need; export the model with its VAE encoder (optimum exports it by default).`,
    );
  }
  const { width: W, height: H, rgb, mask } = source;
  if (W !== plan.width || H !== plan.height) {
    throw new KilnError(
      "input_size_mismatch",
      `The prepared picture is ${W}×${H}; the plan renders ${plan.width}×${plan.height}.`,
    );
  }
  const inpaint = mask !== undefined;
  const nineChannel = model.unetInChannels === 9;
  if (nineChannel && !inpaint) {
    throw new KilnError(
      "model_is_inpainting",
      `${model.dir} has a 9-channel inpainting UNet, which needs a mask; use it for inpaint and outpaint, and a standard SDXL model for ${plan.mode}.`,
    );
  }
  const n = generators.length;
  const h = H / 8;
  const w = W / 8;
  const per = 4 * h * w;
  const pixels = rgb8ToVaeInput(rgb, W, H);
  const fullMask = inpaint ? binariseMask(mask) : undefined;
  const gridMask = fullMask ? downsampleMaskNearest(fullMask, W, H, w, h) : undefined;
  // diffusers' `is_strength_max` (inpaint pipeline only; img2img always noises the picture).
  const fromNoise = inpaint && strength >= 1;
  const encodePicture = !(nineChannel && fromNoise);

  const latents = new Float32Array(n * per);
  const imageLatents = new Float32Array(n * per);
  const noise = new Float32Array(n * per);
  const conditioning: Float32Array[] = [];
  const masked = nineChannel ? maskedImage(pixels, fullMask!) : undefined;
  for (let i = 0; i < n; i++) {
    const g = generators[i]!;
    if (encodePicture) {
      const encoded = await encodeImageLatents(vae, pixels, W, H, g, model.vaeScalingFactor);
      if (encoded.latents.length !== per) {
        throw new KilnError(
          "model_mismatch",
          `${model.dir}'s vae_encoder gives latents of shape [${encoded.shape.join(", ")}] for a ${W}×${H} picture; expected [4, ${h}, ${w}].`,
        );
      }
      imageLatents.set(encoded.latents, i * per);
    }
    const eps = g.randn(per);
    noise.set(eps, i * per);
    if (fromNoise) {
      for (let j = 0; j < per; j++) latents[i * per + j] = eps[j]! * scheduler.initNoiseSigma;
    } else {
      latents.set(scheduler.addNoise(imageLatents.subarray(i * per, (i + 1) * per), eps, begin), i * per);
    }
    if (masked) {
      const encoded = await encodeImageLatents(vae, masked, W, H, g, model.vaeScalingFactor);
      conditioning.push(inpaintConditioning(gridMask!, encoded.latents));
    }
  }
  return {
    shape: [n, 4, h, w],
    latents,
    ...(inpaint && !nineChannel ? { blend: { mask: gridMask!, imageLatents, noise } satisfies LatentBlend } : {}),
    ...(nineChannel ? { conditioning } : {}),
  };
}

/**
 * The blend of a refine stage after an inpaint/outpaint base (ensemble from `denoising_start`, or SDEdit at the
 * refiner's strength), as diffusers' inpaint pipeline keeps blending in its refiner call: per image, from the
 * stage's generator, the picture's latents sampled from this model's VAE encoder, then the noise (which an SDEdit
 * stage also re-noises its input with). diffusers' refiner, handed the base's latents as `image`, would re-noise
 * those; Kiln blends the picture itself, so the unmasked area converges on the user's picture, not on the base's
 * hand-over.
 */
export async function prepareRefineBlend(
  model: SdxlModel,
  source: PreparedSource,
  generators: readonly NoiseSource[],
): Promise<LatentBlend> {
  const vae = model.vaeEncoder;
  if (!vae) {
    throw new KilnError(
      "model_without_vae_encoder",
      `${model.dir} has no vae_encoder/ folder, which a refine stage after inpaint or outpaint needs to keep the picture outside the mask; export the model with its VAE encoder (optimum exports it by default).`,
    );
  }
  const { width: W, height: H, rgb, mask } = source;
  const h = H / 8;
  const w = W / 8;
  const per = 4 * h * w;
  const pixels = rgb8ToVaeInput(rgb, W, H);
  const n = generators.length;
  const imageLatents = new Float32Array(n * per);
  const noise = new Float32Array(n * per);
  for (let i = 0; i < n; i++) {
    const g = generators[i]!;
    const encoded = await encodeImageLatents(vae, pixels, W, H, g, model.vaeScalingFactor);
    if (encoded.latents.length !== per) {
      throw new KilnError(
        "model_mismatch",
        `${model.dir}'s vae_encoder gives latents of shape [${encoded.shape.join(", ")}] for a ${W}×${H} picture; expected [4, ${h}, ${w}].`,
      );
    }
    imageLatents.set(encoded.latents, i * per);
    noise.set(g.randn(per), i * per);
  }
  return { mask: downsampleMaskNearest(binariseMask(mask!), W, H, w, h), imageLatents, noise };
}
