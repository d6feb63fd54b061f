/**
 * SDXL's fixed numbers, in one place: the model-folder checks, the tiny models, the pipeline and the VAE
 * read them from here, so an inpainting UNet or a TensorRT shape profile does not copy them again.
 * Sources: diffusers' SDXL pipelines and the stabilityai/stable-diffusion-xl-{base,refiner}-1.0 configs.
 */

/** Token positions per prompt window of both CLIP text encoders (`max_position_embeddings`), BOS and EOS included. */
export const SDXL_TOKEN_LENGTH = 77;

/** Per-token embedding width of CLIP ViT-L (`text_encoder`, base only). */
export const SDXL_CLIP_L_WIDTH = 768;
/** Per-token embedding width of OpenCLIP bigG (`text_encoder_2`). */
export const SDXL_BIGG_WIDTH = 1280;
/** Width of the pooled prompt embedding (`text_embeds`, bigG's projection). */
export const SDXL_POOLED_WIDTH = 1280;

/** Latent channels of the VAE and the (non-inpainting) UNet. */
export const SDXL_LATENT_CHANNELS = 4;
/** Input channels of an inpainting UNet: latents ‖ mask ‖ masked-image latents (4 + 1 + 4). */
export const SDXL_INPAINT_CHANNELS = 9;
/** Pixels per latent cell on each side: the VAE down- and upsamples by 8. */
export const SDXL_VAE_FACTOR = 8;
/** SDXL's VAE scaling factor (`vae/config.json` `scaling_factor`), used when the export has no config. */
export const SDXL_VAE_SCALING_FACTOR = 0.13025;

/** The UNet's inputs per role: token-embedding width (`cross_attention_dim`) and `time_ids` width. */
export const SDXL_ROLE_WIDTHS = {
  /** CLIP-L ‖ bigG = 768 + 1280; time ids [orig_h, orig_w, crop_top, crop_left, target_h, target_w]. */
  base: { embedWidth: 2048, timeIdsWidth: 6 },
  /** bigG alone; time ids [orig_h, orig_w, crop_top, crop_left, aesthetic_score]. */
  refiner: { embedWidth: 1280, timeIdsWidth: 5 },
} as const;

export type SdxlEmbedWidth = (typeof SDXL_ROLE_WIDTHS)[keyof typeof SDXL_ROLE_WIDTHS]["embedWidth"];
export type SdxlTimeIdsWidth = (typeof SDXL_ROLE_WIDTHS)[keyof typeof SDXL_ROLE_WIDTHS]["timeIdsWidth"];

/** The latents' shape for `n` images of `width`×`height` pixels: [n, 4, height/8, width/8]. */
export function sdxlLatentShape(n: number, width: number, height: number): number[] {
  return [n, SDXL_LATENT_CHANNELS, height / SDXL_VAE_FACTOR, width / SDXL_VAE_FACTOR];
}
