import * as ort from "onnxruntime-node";

import type { ModelSet } from "../runtime/stage-executor.js";
import type { GpuProfile } from "./gpu-profiles.js";

/**
 * A simulated GPU for measurement: the worker runs for real — queues, stores, text encoders, the
 * hand-over, image encoding — but each UNet and VAE `session.run` is replaced by an asynchronous wait
 * of the profile's time for that call, and returns zeros of the right shape. While "on the GPU" it uses
 * no CPU, as a real GPU call does not, so the CPU work between calls shows as GPU idle time.
 *
 * `busySeconds()` is the time the simulated GPU was busy; with wall time it gives the duty cycle.
 * Zeros in, zeros out: the images are black. Not for serving.
 */
export interface SimulatedGpu {
  busySeconds(): number;
  /** Seconds from the first call's start to the last call's end since `reset` (0 before any call). */
  spanSeconds(): number;
  reset(): void;
}

export function simulateGpu(models: ModelSet, profile: GpuProfile): SimulatedGpu {
  let busy = 0;
  let firstStart: number | undefined;
  /** Calls overlap only if the worker runs two stages at once; the GPU still does one at a time. */
  let freeAt = 0;
  /** `calledAt`: when `session.run` was called (work the call did before waiting is part of the call). */
  const occupy = async (seconds: number, calledAt: number) => {
    const start = Math.max(calledAt, freeAt);
    firstStart ??= start;
    freeAt = start + seconds * 1000;
    busy += seconds;
    await new Promise((resolve) => setTimeout(resolve, freeAt - performance.now()));
  };
  const seen = new Set<unknown>();
  for (const model of Object.values(models)) {
    if (!model) continue;
    const { unet, vaeDecoder } = model.folder.sessions;
    if (!seen.has(unet.session)) {
      seen.add(unet.session);
      (unet.session as { run: unknown }).run = async (feeds: Record<string, ort.Tensor>) => {
        const calledAt = performance.now();
        const sample = feeds.sample!;
        // onnxruntime-node returns a fresh output buffer, written by the device-to-host copy inside `run`. Made and
        // written here, inside the call's time: left untouched, its page faults would land on the loop's first
        // read of it (guidance), which a real call has already paid for.
        const output = new Float32Array(sample.size).fill(0);
        const [batch, , h, w] = sample.dims as number[];
        const pixels = h! * 8 * w! * 8;
        // The CFG batch is 2n: the profile's step time is for one image's CFG pair.
        const images = batch! / 2 || 1;
        await occupy(profile.stepSeconds * pixelScale(pixels) * (1 + profile.batchMarginal * (images - 1)), calledAt);
        return { out_sample: new ort.Tensor("float32", output, sample.dims) };
      };
    }
    if (!seen.has(vaeDecoder.session)) {
      seen.add(vaeDecoder.session);
      (vaeDecoder.session as { run: unknown }).run = async (feeds: Record<string, ort.Tensor>) => {
        const calledAt = performance.now();
        const latent = feeds.latent_sample!;
        const [n, , h, w] = latent.dims as number[];
        const dims = [n!, 3, h! * 8, w! * 8];
        const output = picture(dims.reduce((a, b) => a * b, 1));
        await occupy(profile.vaeSeconds * pixelScale(h! * 8 * w! * 8) * n!, calledAt);
        return { sample: new ort.Tensor("float32", output, dims) };
      };
    }
  }
  return {
    busySeconds: () => busy,
    spanSeconds: () => (firstStart === undefined ? 0 : (freeAt - firstStart) / 1000),
    reset: () => {
      busy = 0;
      firstStart = undefined;
    },
  };
}

const pictures = new Map<number, Float32Array>();
/**
 * A decoded "image" that compresses like a real one (PNG of zeros would be nearly free and flatter the
 * CPU side): fixed pseudo-random values, made once per size so making them costs nothing per call.
 */
function picture(size: number): Float32Array {
  let p = pictures.get(size);
  if (!p) {
    p = new Float32Array(size);
    let x = 0x9e3779b9;
    for (let i = 0; i < size; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      p[i] = ((x >>> 0) / 4294967296) * 2 - 1;
    }
    pictures.set(size, p);
  }
  // Shared, not copied: a finishing thread marks its own copy; finished in-line (KILN_FINISHING_THREADS=0) the
  // watermark marks this one in place, which changes only the simulated picture, not the work done on it.
  // Made inside the first VAE call's time (once per size), so making it is not charged as GPU idle time.
  return p;
}

/** Step cost grows with pixels^1.1 relative to 1024² (attention is superlinear); see gpu-profiles.ts. */
export function pixelScale(pixels: number): number {
  return Math.pow(pixels / (1024 * 1024), 1.1);
}
