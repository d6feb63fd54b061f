import os from "node:os";
import type { ParseArgsConfig } from "node:util";

import { parseFlags, UsageError } from "../cli/args.js";

/**
 * `kiln bench [name …]` — Kiln's benchmarks. Each prints its figures as a Markdown table, with the
 * machine and date, ready for docs/benchmarks.md. Speed is measured here, never asserted in tests.
 */
type Bench =
  | { summary: string; flags?: undefined; load: () => Promise<{ run(): Promise<string> }> }
  | {
      summary: string;
      /** Options the bench takes after its name (`kiln bench duty-cycle --family aws`), checked by its `run`. */
      flags: NonNullable<ParseArgsConfig["options"]>;
      load: () => Promise<{ run(options?: Record<string, unknown>): Promise<string> }>;
    };

const BENCHES: Record<string, Bench> = {
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
      "GPU busy time / wall time of one saturated worker with a simulated H100 (real runtime, stores and PNG encoding), per mode and family (`--family local|aws`, `--mode base|ensemble|ensemble1|sdedit`, `--renders N`)",
    // Both families: a subset of the cases.
    flags: { family: { type: "string" }, mode: { type: "string" }, renders: { type: "string" } },
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
  // Names first, then the options of the one bench named (`kiln bench duty-cycle --family aws`).
  const flagAt = argv.findIndex((a) => a.startsWith("-"));
  const named = flagAt === -1 ? argv : argv.slice(0, flagAt);
  const names = named.length ? named : Object.keys(BENCHES);
  for (const name of names) {
    if (!BENCHES[name])
      throw new UsageError(`unknown benchmark "${name}"; choose from ${Object.keys(BENCHES).join(", ")}`);
  }
  let options: Record<string, unknown> | undefined;
  if (flagAt !== -1) {
    const flags = named.length === 1 ? BENCHES[named[0]!]!.flags : undefined;
    if (!flags) {
      const taking = Object.keys(BENCHES).filter((n) => BENCHES[n]!.flags);
      throw new UsageError(
        `${argv[flagAt]}: options go after the one benchmark that takes them (${taking.join(", ")})`,
      );
    }
    options = parseFlags(argv.slice(flagAt), flags).values;
  }
  console.log(
    `Machine: ${os.cpus()[0]?.model ?? "unknown CPU"}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${os.platform()} ${os.arch()}. Date: ${new Date().toISOString().slice(0, 10)}.\n`,
  );
  for (const name of names) {
    console.error(`running ${name} …`);
    const bench = BENCHES[name]!;
    const figures = bench.flags ? await (await bench.load()).run(options) : await (await bench.load()).run();
    console.log(`## ${name}\n\n${figures}\n`);
  }
}
