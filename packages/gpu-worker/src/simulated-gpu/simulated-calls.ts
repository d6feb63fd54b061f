import type { GpuProfile } from "./gpu-profiles.js";

/**
 * What one simulated UNet or VAE-decoder call costs and returns, for both places a simulated call runs: the device
 * thread (where it blocks that thread, as onnxruntime-node's synchronous `run` does) and, with
 * `KILN_GPU_THREAD=false`, the worker's main thread (where it blocks the event loop, as the real call would there).
 */
export type SimulatedPart = "unet" | "vae_decoder";

/** A plain tensor as it crosses threads: onnxruntime-node's `Tensor` is rebuilt on each side. */
export interface PlainTensor {
  type: string;
  dims: readonly number[];
  data: Float32Array;
}

/**
 * Busy accounting shared by every thread that runs a simulated call for one GPU: [busy seconds, first call's start,
 * last call's end], times in ms since the epoch (`performance.timeOrigin + now()`, comparable across threads).
 */
export const GPU_STATS_SLOTS = 3;

function simulatedCall(
  part: SimulatedPart,
  dims: readonly number[],
  profile: GpuProfile,
): { seconds: number; output: PlainTensor; name: string } {
  if (part === "unet") {
    const [batch, , h, w] = dims as number[];
    // onnxruntime-node returns a fresh output buffer, written by the device-to-host copy inside `run`: made and
    // written here, inside the call's time (left untouched, its page faults would land on the loop's first read).
    const data = new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(0);
    // The CFG batch is 2n: the profile's step time is for one image's CFG pair.
    const images = batch! / 2 || 1;
    const seconds = profile.stepSeconds * pixelScale(h! * 8 * w! * 8) * (1 + profile.batchMarginal * (images - 1));
    return { seconds, output: { type: "float32", dims, data }, name: "out_sample" };
  }
  const [n, , h, w] = dims as number[];
  const out = [n!, 3, h! * 8, w! * 8];
  const data = picture(out.reduce((a, b) => a * b, 1));
  return {
    seconds: profile.vaeSeconds * pixelScale(h! * 8 * w! * 8) * n!,
    output: { type: "float32", dims: out, data },
    name: "sample",
  };
}

/**
 * Holds the calling thread until `end` (ms since the epoch): blocked without using the CPU, like a thread inside a
 * GPU call, then for its last `SPIN_MS` watching the clock. A real call returns within microseconds of the GPU
 * finishing (CUDA's default synchronisation spins while there are more cores than GPU contexts); a timed wait
 * alone is woken late by the OS timer, ~0.2 ms per call here on an idle machine (more under load), which would be
 * charged to the worker as GPU idle time it does not cause.
 */
function blockUntil(end: number, now: () => number): void {
  const sleep = end - SPIN_MS - now();
  if (sleep > 0) Atomics.wait(sleeper, 0, 0, sleep);
  while (now() < end) {
    // the last fraction of a millisecond: the host thread polls the GPU for completion
  }
}
/** The end of a simulated call that is polled, not slept (see `blockUntil`). */
const SPIN_MS = 0.5;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Runs one simulated call on this thread: blocks for the profile's time (after any call still "on the GPU"). */
export function runSimulatedCall(
  part: SimulatedPart,
  dims: readonly number[],
  profile: GpuProfile,
  stats: Float64Array,
): { output: PlainTensor; name: string } {
  const now = () => performance.timeOrigin + performance.now();
  const start = now();
  const { seconds, output, name } = simulatedCall(part, dims, profile);
  stats[0]! += seconds;
  if (stats[1] === 0) stats[1] = start;
  // The end is start + the profile's time: a thread that gets a core only after it (on a loaded machine) is idle
  // time, charged to the worker as it would be with a real GPU.
  const end = start + seconds * 1000;
  stats[2] = end;
  blockUntil(end, now);
  return { output, name };
}

const pictures = new Map<number, Float32Array>();
/**
 * A decoded "image" that compresses like a real one (PNG of zeros would be nearly free and flatter the CPU side):
 * fixed pseudo-random values, made once per size (inside the first VAE call's time) so making them costs nothing
 * per call. A copy per call: the caller may own it (it crosses threads, or is watermarked in place in-line).
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
  return p.slice();
}

/** Step cost grows with pixels^1.1 relative to 1024² (attention is superlinear); see gpu-profiles.ts. */
export function pixelScale(pixels: number): number {
  return Math.pow(pixels / (1024 * 1024), 1.1);
}
