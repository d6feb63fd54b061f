import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { planRender, renderRequestSchema, SCHEDULER_NAMES, type RenderPlan, type SchedulerName } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import { loadSdxlModel, runStage, writeTinyModel, type SdxlModel } from "@kiln/gpu-worker";
import { fmt, percentile, table } from "./stats.js";

const STEPS = 20;
const RUNS = 5;
const SIZE = 1024;

/**
 * Issue 3's figure: the CPU-side cost of one denoising step — everything in the loop except
 * `session.run` (tensor preparation, CFG, the scheduler step, waiting for prefetched noise) — at
 * SDXL's real tensor sizes (1024×1024: latents 4×128×128, embeddings 77×2048, pooled 1280), per
 * scheduler, for n = 1 and n = 4 (UNet batch 2 and 8 with guidance). The tiny base model has those
 * widths but trivial compute, so its `session.run` is the floor of what the binding itself costs.
 */
export async function run(): Promise<string> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-step-"));
  const logger = createLogger({ level: "silent" });
  try {
    writeTinyModel(path.join(root, "base"), { role: "base" });
    const model = await loadSdxlModel(path.join(root, "base"), "base", { providers: ["cpu"], logger });
    const rows: (string | number)[][] = [];
    try {
      for (const n of [1, 4]) {
        for (const scheduler of SCHEDULER_NAMES) {
          const r = await measure(model, scheduler, n);
          rows.push([scheduler, n, 2 * n, fmt(r.overhead50, 3), fmt(r.overhead90, 3), fmt(r.run50, 3), fmt(r.overhead50 / r.run50, 2)]);
        }
      }
    } finally {
      await model.release();
    }
    return [
      `Tiny base model with SDXL's real tensor sizes on the CPU provider, ${SIZE}×${SIZE}, guidance 5 (UNet batch 2n), ${STEPS} steps per render, ${RUNS} renders after one warm-up per row; each render's loop time minus its time in \`session.run\`, divided by its steps. Percentiles are over the renders.`,
      "",
      "`session.run` here is measured from JavaScript around `await session.run(...)`: it includes onnxruntime-node's feed checks, its `setImmediate` hop, wrapping the inputs, the (trivial) graph, and copying the 4×128×128×batch output into a new JavaScript array. The overhead is everything else in the loop: scaling the latents into the batched UNet input, the timestep, CFG (and rescale), the scheduler step, and for euler_a waiting for the step noise drawn on a helper thread while the UNet ran.",
      "",
      table(["scheduler", "n", "UNet batch", "overhead ms/step p50", "p90", "session.run ms/step p50", "overhead / session.run"], rows),
    ].join("\n");
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

async function measure(model: SdxlModel, scheduler: SchedulerName, n: number): Promise<{ overhead50: number; overhead90: number; run50: number }> {
  const request = renderRequestSchema().parse({ prompt: "a lighthouse on a cliff at dusk", mode: "base", width: SIZE, height: SIZE, steps: STEPS, n, scheduler });
  const overhead: number[] = [];
  const runMs: number[] = [];
  for (let i = 0; i <= RUNS; i++) {
    const planned = planRender(request, 1000 + i);
    // One stage that hands its latents over, so no VAE decode or PNG encode at 1024² runs between loops.
    const plan: RenderPlan = { ...planned, stages: [{ index: 0, kind: "base", model: "base", output: "latents" }] };
    const result = await runStage(model, { jobId: `bench_${i}`, plan, stage: plan.stages[0]! }, undefined);
    if (i === 0) continue;
    overhead.push(((result.denoiseSeconds - result.unetSeconds) * 1000) / result.steps);
    runMs.push((result.unetSeconds * 1000) / result.steps);
  }
  return { overhead50: percentile(overhead, 50), overhead90: percentile(overhead, 90), run50: percentile(runMs, 50) };
}
