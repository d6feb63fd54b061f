import { NoiseSource } from "@kiln/gpu-worker";

import { fmt, percentile, table } from "./stats.js";

const LATENT_VALUES = 4 * 128 * 128; // one 1024² image's latents (and one euler_a step's noise)
const RUNS = 40;

/**
 * Torch-exact noise: milliseconds to draw one 1024² image's 65,536 normals with each Box–Muller kernel
 * (`KILN_NOISE_KERNEL`), after warm-up. The AVX2 kernel evaluates ATen's float32 polynomials with an
 * emulated FMA, so it costs more than the scalar one's libm calls; euler_a draws this on a helper thread
 * while the UNet runs.
 */
export async function run(): Promise<string> {
  const rows: (string | number)[][] = [];
  for (const kernel of ["avx2", "scalar"] as const) {
    const source = new NoiseSource(1, kernel);
    const out = new Float32Array(LATENT_VALUES);
    for (let i = 0; i < 10; i++) source.randnInto(out); // warm-up
    const ms: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t = performance.now();
      source.randnInto(out);
      ms.push(performance.now() - t);
    }
    rows.push([kernel, fmt(percentile(ms, 50)), fmt(percentile(ms, 10)), fmt(percentile(ms, 90))]);
  }
  return table(["kernel", "ms per 65,536 p50", "p10", "p90"], rows);
}
