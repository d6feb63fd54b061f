import type { OutputFormat } from "@kiln/shared";
import type * as ort from "onnxruntime-node";

import { floatTensor, type LoadedSession, outputAsFloat32 } from "../../onnx/tensors.js";
import type { EncodedImage } from "../image-files.js";
import { divideInto } from "../latent-ops.js";
import { type FinishComposite, finishImage, type FinishRequest } from "./finish-image.js";
import type { FinishingPool } from "./finishing-threads.js";

export interface DecodeAndFinishOptions {
  scalingFactor: number;
  watermark: boolean;
  composite?: FinishComposite;
  format: OutputFormat;
  quality: number;
  /** The A1111 `parameters` text of image `i`. */
  parameters(i: number): string;
  /** Finishing threads; absent, or when none can run, images are finished on this thread. */
  pool?: FinishingPool;
  /** Called right after the last VAE call: the GPU's part of the stage is done (the pipelined worker's turn). */
  afterLastRun?(): void;
  signal?: AbortSignal;
}

/**
 * Step 7 of a stage that outputs images: decodes the latents image by image (a 1024² SDXL VAE decode is memory
 * hungry, and batching buys little) and hands each decoded image to `finishImage` as soon as it comes out, so an
 * image is watermarked and encoded on a finishing thread while the next one decodes and, after the last decode,
 * while the next stage denoises.
 */
export async function decodeAndFinish(
  vae: LoadedSession,
  latents: Float32Array,
  shape: readonly number[],
  options: DecodeAndFinishOptions,
): Promise<EncodedImage[]> {
  const [n, c, h, w] = shape as [number, number, number, number];
  const per = c * h * w;
  // torch divides a float32 tensor by a Python float in float32.
  const factor = Math.fround(options.scalingFactor);
  const finishing: Promise<EncodedImage>[] = [];
  try {
    for (let b = 0; b < n; b++) {
      const scaled = new Float32Array(per);
      divideInto(scaled, latents.subarray(b * per, (b + 1) * per), factor);
      const out = await vae.session.run({ latent_sample: floatTensor(vae, "latent_sample", scaled, [1, c, h, w]) });
      if (b === n - 1) options.afterLastRun?.();
      const sample = out.sample as ort.Tensor;
      const [, , H, W] = sample.dims as [number, number, number, number];
      const request: FinishRequest = {
        pixels: outputAsFloat32(sample),
        height: H,
        width: W,
        index: b,
        watermark: options.watermark,
        composite: options.composite,
        format: options.format,
        quality: options.quality,
        parameters: options.parameters(b),
      };
      const pool = options.pool;
      // The decoder's output is this stage's alone (a device thread's is transferred to us, a session's is new per
      // call): the pool may hand the buffer itself to a thread.
      finishing.push(
        pool
          ? pool.finish(request, { owned: true }).then((image) => image ?? finishImage(request))
          : finishImage(request),
      );
      // In-line, an image finishes before the next decode, as it always did: a failure stops the stage early.
      if (!pool) await finishing[b];
    }
    options.signal?.throwIfAborted();
    return await Promise.all(finishing);
  } finally {
    // A stage that stops early leaves no unobserved rejections behind.
    for (const f of finishing) f.catch(() => undefined);
  }
}
