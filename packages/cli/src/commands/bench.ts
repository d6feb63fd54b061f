import os from "node:os";

import { UsageError } from "../cli/args.js";

/**
 * `kiln bench [name …]` — Kiln's benchmarks. Each prints its figures as a Markdown table, with the
 * machine and date, ready for docs/benchmarks.md. Speed is measured here, never asserted in tests.
 */
const BENCHES: Record<string, { summary: string; load: () => Promise<{ run(): Promise<string> }> }> = {
  handoff: {
    summary:
      "per-hand-over overhead of the worker runtime with a null model, local and AWS (stand-ins on loopback), as a ratio to the raw queue+blob floor",
    load: () => import("../bench/handoff-bench.js"),
  },
  api: {
    summary: "authenticated POST /v1/renders on the local family vs a bare Hono GET, 50 connections (autocannon)",
    load: () => import("../bench/api-bench.js"),
  },
  render: {
    summary: "time to image, 256×256 ensemble on the tiny models, and the share outside session.run",
    load: () => import("../bench/render-bench.js"),
  },
  "duty-cycle": {
    summary:
      "GPU busy time / wall time of one saturated worker with a simulated H100 (real runtime, stores and PNG encoding), per mode",
    load: () => import("../bench/duty-cycle-bench.js"),
  },
  // Image inputs.
  img2img: {
    summary: "VAE encode, and img2img at strength 0.3 vs text-to-image time to image, 1024², tiny models",
    load: () => import("../bench/img2img-bench.js"),
  },
  "step-overhead": {
    summary: "CPU cost per denoising step outside session.run at 1024² (real tensor sizes), per scheduler, n = 1 and 4",
    load: () => import("../bench/step-overhead-bench.js"),
  },
  // Cold start: model sync from S3.
  "model-sync": {
    summary:
      "a 1 GiB synthetic model file from the S3 stand-in to disk: Kiln's parallel ranged sync vs one GetObject stream",
    load: () => import("../bench/model-sync-bench.js"),
  },
  // Capacity simulator validation (issue 15).
  "simulate-validate": {
    summary:
      "the real local stack with two simulated-GPU workers under time-compressed traces vs `kiln simulate` on the same arrivals: p50/p95 time to image",
    load: () => import("../bench/simulate-validate-bench.js"),
  },
  // One worker setup of it: the pipelined default, or pipelined with KILN_WORKER_BATCH=4 on bursts.
  ...Object.fromEntries(
    (["unpipelined", "pipelined", "batched"] as const).map((mode) => [
      `simulate-validate-${mode}`,
      {
        summary: `simulate-validate for the ${mode} worker only`,
        load: async () => {
          const bench = await import("../bench/simulate-validate-bench.js");
          return { run: () => bench.runMode(mode) };
        },
      },
    ]),
  ),
  // Batching of compatible jobs into one UNet batch (issue 15).
  batching: {
    summary:
      "one saturated simulated-H100 worker over the same queued 1024² renders with KILN_WORKER_BATCH 1, 2 and 4: images per GPU-hour, wall, time to image p50/p99",
    load: () => import("../bench/batching-bench.js"),
  },
  // Torch-exact noise.
  noise: {
    summary: "ms to draw one 1024² image's 65,536 torch-exact normals, AVX2 and scalar Box–Muller kernels",
    load: () => import("../bench/noise-bench.js"),
  },
  // Deployment: the API's Lambda bundle.
  "lambda-bundle": {
    summary: "the API's esbuild Lambda bundle: size, and cold init (import + first request) in a fresh node",
    load: () => import("../bench/lambda-bundle-bench.js"),
  },
};

export async function run(argv: string[]): Promise<void> {
  const names = argv.length ? argv : Object.keys(BENCHES);
  for (const name of names) {
    if (!BENCHES[name])
      throw new UsageError(`unknown benchmark "${name}"; choose from ${Object.keys(BENCHES).join(", ")}`);
  }
  console.log(
    `Machine: ${os.cpus()[0]?.model ?? "unknown CPU"}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${os.platform()} ${os.arch()}. Date: ${new Date().toISOString().slice(0, 10)}.\n`,
  );
  for (const name of names) {
    console.error(`running ${name} …`);
    console.log(`## ${name}\n\n${await (await BENCHES[name]!.load()).run()}\n`);
  }
}
