import { runSaturatedWorker, simulatedH100 } from "./saturated-worker.js";
import { fmt, percentile, table } from "./stats.js";

interface Case {
  mode: "base" | "ensemble";
  n: number;
  renders: number;
  /** KILN_WORKER_BATCH */
  batch: number;
}

const RENDERS = 12;
const CASES: Case[] = (["ensemble", "base"] as const).flatMap((mode) =>
  [1, 2, 4].map((batch) => ({ mode, n: 1, renders: RENDERS, batch })),
);

/**
 * Batching (issue 15): one saturated worker (pipelined, concurrency 1) on the local family with the simulated
 * H100 — the real runtime, SQLite queue and stores, tiny text encoders, hand-over, VAE output conversion,
 * watermark and PNG encoding; UNet and VAE calls are waits of the profile's time, a UNet call of k images costing
 * `1 + batchMarginal·(k − 1)` steps (gpu-profiles.ts) — over the same renders queued before it starts, with
 * KILN_WORKER_BATCH 1, 2 and 4.
 */
export async function run(cases: Case[] = CASES): Promise<string> {
  const h100 = await simulatedH100();
  const { profile, models, gpu } = h100;
  const rows: string[][] = [];
  try {
    for (const c of cases) {
      const config = h100.config(`${c.mode}-${c.n}-${c.batch}`, {
        KILN_WORKER_PIPELINE: "true",
        KILN_WORKER_BATCH: String(c.batch),
      });
      // Other prompts and seeds per render: a batch of jobs, not one job's images.
      const bodies = Array.from({ length: c.renders }, (_, i) => ({
        prompt: `a red circle, variation ${i}`,
        mode: c.mode,
        n: c.n,
        width: 1024,
        height: 1024,
        seed: i,
      }));
      const { wallSeconds: wall, timeToImageMs: finished } = await runSaturatedWorker(config, models, bodies, h100);
      rows.push([
        `${c.mode}, n = ${c.n}`,
        String(c.batch),
        String(c.renders),
        fmt(wall, 2),
        fmt(gpu.busySeconds(), 2),
        fmt((gpu.busySeconds() / wall) * 100, 1) + " %",
        fmt((3600 / wall) * c.renders * c.n, 0),
        fmt((3600 / gpu.busySeconds()) * c.renders * c.n, 0),
        fmt(percentile(finished, 50) / 1000, 2),
        fmt(percentile(finished, 99) / 1000, 2),
      ]);
    }
  } finally {
    await h100.close();
  }
  return [
    `One pipelined worker (concurrency 1) on the local family, 1024², 30 steps, ${RENDERS} renders (other prompts and seeds) queued before it starts; UNet and VAE simulated with the ${profile.name} profile (${fmt(profile.stepSeconds * 1000, 1)} ms per UNet step for one image's CFG pair, each further image in the batch ${fmt(profile.batchMarginal * 100, 0)} % of that; ${fmt(profile.vaeSeconds * 1000, 0)} ms per VAE decode per image). Everything else is Kiln's real code on this CPU.`,
    "",
    table(
      [
        "case",
        "KILN_WORKER_BATCH",
        "renders",
        "wall (s)",
        "GPU busy (s)",
        "duty cycle",
        "images per GPU-hour",
        "images per busy GPU-hour",
        "time to image p50 (s)",
        "p99 (s)",
      ],
      rows,
    ),
    "",
    "Images per GPU-hour: images / wall of the one worker (its GPU's hour). Per busy GPU-hour: images / the simulated GPU's busy time, the ceiling once the CPU side keeps up (the cost curve's own gain). Time to image: from submission to `succeeded`, all renders submitted at once (queue wait included). GPU busy: the simulated GPU's busy time — less with batching, as the profile's cost curve says.",
  ].join("\n");
}
