/**
 * GPU profiles for the capacity simulator and the simulated-GPU executor.
 *
 * Step times are derived from stabilityai/stable-diffusion-xl-1.0-tensorrt's published SDXL figures
 * (30 steps, 1024², base + refiner, TensorRT): A10 8.16 s, A100 2.74 s, H100 1.47 s. We take the VAE
 * decode as a fixed share of that (A10 0.5 s, A100 0.2 s, H100 0.1 s), split the rest evenly over the
 * 30 UNet steps (the refiner UNet is close to the base in cost), and scale a step with pixels^1.1
 * (attention grows faster than linearly). Prices are approximate on-demand list prices per GPU-hour in
 * us-east-1 (g5.xlarge; p4d.24xlarge / 8; p5.48xlarge / 8) — pass your own with --price.
 * Boot is instance launch + container start; model load is reading SDXL (and engines) from disk.
 */
export interface GpuProfile {
  name: string;
  /** Seconds per UNet step at 1024², batch 1 (CFG pair included). */
  stepSeconds: number;
  /** Seconds per VAE decode of one 1024² image. */
  vaeSeconds: number;
  /** Per stage: CPU work the GPU waits for today (prompt encoding, PNG, store, record). */
  stageOverheadSeconds: number;
  /** Cost of each extra image in one UNet batch relative to the first (1 = no gain from batching). */
  batchMarginal: number;
  bootSeconds: number;
  modelLoadSeconds: number;
  pricePerHour: number;
  spotPricePerHour: number;
  /** Spot interruptions per instance-hour. */
  spotInterruptionsPerHour: number;
}

export const GPU_PROFILES: Record<string, GpuProfile> = {
  a10: {
    name: "a10",
    stepSeconds: (8.16 - 0.5) / 30,
    vaeSeconds: 0.5,
    stageOverheadSeconds: 0.1,
    batchMarginal: 0.95,
    bootSeconds: 120,
    modelLoadSeconds: 40,
    pricePerHour: 1.006,
    spotPricePerHour: 0.45,
    spotInterruptionsPerHour: 0.02,
  },
  a100: {
    name: "a100",
    stepSeconds: (2.74 - 0.2) / 30,
    vaeSeconds: 0.2,
    stageOverheadSeconds: 0.1,
    batchMarginal: 0.85,
    bootSeconds: 150,
    modelLoadSeconds: 25,
    pricePerHour: 4.1,
    spotPricePerHour: 1.8,
    spotInterruptionsPerHour: 0.03,
  },
  h100: {
    name: "h100",
    stepSeconds: (1.47 - 0.1) / 30,
    vaeSeconds: 0.1,
    stageOverheadSeconds: 0.1,
    batchMarginal: 0.8,
    bootSeconds: 150,
    modelLoadSeconds: 20,
    pricePerHour: 6.88,
    spotPricePerHour: 3.0,
    spotInterruptionsPerHour: 0.05,
  },
};

/** What a render asks of a GPU. */
export interface RenderShape {
  width: number;
  height: number;
  steps: number;
  mode: "base" | "ensemble" | "sdedit";
  n: number;
  /** ensemble hand-over point / sdedit strength */
  highNoiseFrac?: number;
  strength?: number;
}

export const DEFAULT_SHAPE: RenderShape = { width: 1024, height: 1024, steps: 30, mode: "ensemble", n: 1 };

/** UNet steps per stage, as Kiln's stage planner splits them (diffusers' rules, rounded). */
export function stageSteps(shape: RenderShape): number[] {
  if (shape.mode === "base") return [shape.steps];
  if (shape.mode === "ensemble") {
    const cut = Math.round(shape.steps * (shape.highNoiseFrac ?? 0.8));
    return [cut, shape.steps - cut];
  }
  return [shape.steps, Math.max(1, Math.floor(shape.steps * (shape.strength ?? 0.3)))];
}

/** GPU seconds of one stage of a batch of `batch` compatible renders (the VAE runs on the last stage). */
export function stageSeconds(profile: GpuProfile, shape: RenderShape, stage: number, batch = 1): number {
  const steps = stageSteps(shape);
  const scale = Math.pow((shape.width * shape.height) / (1024 * 1024), 1.1); // as pixelScale in simulated-gpu.ts
  const images = shape.n * batch;
  const batchFactor = 1 + profile.batchMarginal * (images - 1);
  let seconds = steps[stage]! * profile.stepSeconds * scale * batchFactor;
  if (stage === steps.length - 1) seconds += profile.vaeSeconds * scale * images;
  return seconds;
}

/** GPU seconds of a whole render (all its stages) and the CPU overhead around them. */
export function renderSeconds(profile: GpuProfile, shape: RenderShape, batch = 1, overhead = true): number {
  const stages = stageSteps(shape).length;
  let total = 0;
  for (let s = 0; s < stages; s++) total += stageSeconds(profile, shape, s, batch);
  return total + (overhead ? profile.stageOverheadSeconds * stages : 0);
}
