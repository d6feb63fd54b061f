import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { loadSdxlModel, runPipelineStage, type SdxlModel, writeTinyModel } from "@kiln/gpu-worker";
import { planRender, type RenderPlan, renderRequestSchema, SCHEDULER_NAMES, type SchedulerName } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import type * as ort from "onnxruntime-node";

import { fmt, percentile, table } from "./stats.js";

const STEPS = 20;
const RUNS = 5;
const SIZE = 1024;
const GPU_STEP_MS = 30;

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
    const model = await loadSdxlModel(path.join(root, "base"), "base", {
      providers: ["cpu"],
      logger,
      intraOpThreads: 1,
    });
    const rows: (string | number)[][] = [];
    const padded: (string | number)[][] = [];
    try {
      for (const n of [1, 4]) {
        for (const scheduler of SCHEDULER_NAMES) {
          const { overhead, run } = await measure(model, scheduler, n);
          const [o10, o50, o90, r50] = [
            percentile(overhead, 10),
            percentile(overhead, 50),
            percentile(overhead, 90),
            percentile(run, 50),
          ];
          rows.push([
            scheduler,
            n,
            2 * n,
            fmt(o50, 3),
            fmt(o10, 3),
            fmt(o90, 3),
            fmt(o50 / n, 3),
            fmt(r50, 3),
            fmt(o50 / r50, 2),
          ]);
        }
      }
      // A real UNet step takes tens of milliseconds: pad the trivial one to 30 ms to see what the
      // ancestral noise costs the main thread once the helper has that long to draw it.
      // euler runs padded too: idle gaps let other processes evict the caches, which costs the step after.
      for (const n of [1, 4]) {
        for (const scheduler of ["euler", "euler_a"] as const) {
          const { overhead, run } = await measure(model, scheduler, n, GPU_STEP_MS);
          padded.push([
            scheduler,
            n,
            2 * n,
            fmt(percentile(overhead, 50), 3),
            fmt(percentile(overhead, 10), 3),
            fmt(percentile(overhead, 90), 3),
            fmt(percentile(run, 50), 3),
          ]);
        }
      }
    } finally {
      await model.release();
    }
    return [
      `Tiny base model with SDXL's real tensor sizes on the CPU provider (one intra-op thread, so ONNX Runtime's pool does not spin on the other cores while JavaScript runs, as a GPU session's would not), ${SIZE}×${SIZE}, guidance 5 (UNet batch 2n), ${STEPS} steps per render, ${RUNS} renders after one warm-up per row. A sample is one step: the time between two consecutive step callbacks minus the \`session.run\` inside it; percentiles are over the ${RUNS * (STEPS - 1)} steps of a row.`,
      "",
      "`session.run` here is measured from JavaScript around `await session.run(...)`: it includes onnxruntime-node's feed checks, its `setImmediate` hop, wrapping the inputs, the (trivial) graph, and copying the 4×128×128×batch output into a new JavaScript array. The overhead is everything else in the loop: scaling the latents into the batched UNet input, the timestep, CFG (and rescale), the scheduler step, and for euler_a waiting for the step noise drawn on a helper thread while the UNet ran.",
      "",
      table(
        [
          "scheduler",
          "n",
          "UNet batch",
          "overhead ms/step p50",
          "p10",
          "p90",
          "p50 per image",
          "session.run ms/step p50",
          "overhead / session.run",
        ],
        rows,
      ),
      "",
      `The same with each \`session.run\` padded to ${GPU_STEP_MS} ms (a sleep after the trivial run, standing in for an H100 UNet step): the helper thread draws euler_a's next noise within that time, so the main thread no longer waits for it; euler is the reference without noise.`,
      "",
      table(
        ["scheduler", "n", "UNet batch", "overhead ms/step p50", "p10", "p90", "padded session.run ms/step p50"],
        padded,
      ),
    ].join("\n");
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

interface StepSamples {
  overhead: number[];
  run: number[];
}

/**
 * Per-step samples: the time between two consecutive `onStep` calls minus the `session.run` inside it. The
 * first step of each render is left out (its interval would start before the loop). Per-step samples rather
 * than per-render means keep a burst of contention on this machine from smearing over whole renders.
 */
async function measure(model: SdxlModel, scheduler: SchedulerName, n: number, unetFloorMs = 0): Promise<StepSamples> {
  const request = renderRequestSchema().parse({
    prompt: "a lighthouse on a cliff at dusk",
    mode: "base",
    width: SIZE,
    height: SIZE,
    steps: STEPS,
    n,
    scheduler,
  });
  const session = model.unet.session;
  const original = session.run.bind(session) as (...args: unknown[]) => Promise<ort.InferenceSession.ReturnType>;
  let runMs = 0;
  // Bench-only instrument: the service never runs a wrapped session.
  (session as { run: unknown }).run = async (...args: unknown[]) => {
    const t = performance.now();
    try {
      const out = await original(...args);
      const left = unetFloorMs - (performance.now() - t);
      if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
      return out;
    } finally {
      runMs = performance.now() - t;
    }
  };
  const samples: StepSamples = { overhead: [], run: [] };
  try {
    for (let r = 0; r <= RUNS; r++) {
      const planned = planRender(request, 1000 + r);
      // One stage that hands its latents over, so no VAE decode or PNG encode at 1024² runs between loops.
      const plan: RenderPlan = { ...planned, stages: [{ index: 0, kind: "base", model: "base", output: "latents" }] };
      let last = 0;
      const onStep = (step: number) => {
        const now = performance.now();
        if (r > 0 && step > 1) {
          samples.overhead.push(now - last - runMs);
          samples.run.push(runMs);
        }
        last = now;
      };
      await runPipelineStage(model, { jobId: `bench_${r}`, plan, stage: plan.stages[0]! }, undefined, { onStep });
    }
  } finally {
    (session as { run: unknown }).run = original;
  }
  return samples;
}
