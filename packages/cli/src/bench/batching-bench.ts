import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { GPU_PROFILES, loadSdxlModel, simulateGpu, writeTinyModels } from "@kiln/gpu-worker";
import { createApiKey, loadConfig } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";

import { startApiService, startWorkerService } from "../services.js";
import { openPorts } from "../stack.js";
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
  const profile = GPU_PROFILES.h100!;
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-batching-"));
  const dirs = writeTinyModels(path.join(root, "models"));
  const logger = createLogger({ level: "silent" });
  const options = { providers: ["cpu" as const], logger };
  const models = {
    base: await loadSdxlModel(dirs.base, "base", options),
    refiner: await loadSdxlModel(dirs.refiner, "refiner", options),
  };
  const gpu = simulateGpu(models, profile);
  const rows: string[][] = [];
  try {
    for (const c of cases) {
      const config = loadConfig({
        KILN_DATA_DIR: path.join(root, `data-${c.mode}-${c.n}-${c.batch}`),
        PORT: String(19000 + Math.floor(Math.random() * 1000)),
        KILN_WORKER_PIPELINE: "true",
        KILN_WORKER_BATCH: String(c.batch),
        KILN_WORKER_PORT: "0",
        KILN_MAX_SIDE: "1024",
      });
      const ports = openPorts(config);
      const api = await startApiService(config, ports, logger);
      const { key } = await createApiKey(ports.keys, { name: "bench", scopes: ["render"] });
      const ids: string[] = [];
      for (let i = 0; i < c.renders; i++) {
        const res = await fetch(`${config.publicUrl}/v1/renders`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          // Other prompts and seeds per render: a batch of jobs, not one job's images.
          body: JSON.stringify({
            prompt: `a red circle, variation ${i}`,
            mode: c.mode,
            n: c.n,
            width: 1024,
            height: 1024,
            seed: i,
          }),
        });
        if (res.status !== 202) throw new Error(`submit failed: ${res.status} ${await res.text()}`);
        ids.push(((await res.json()) as { id: string }).id);
      }
      gpu.reset();
      const started = Date.now();
      const worker = await startWorkerService(config, ports, logger, models);
      const finished: number[] = [];
      let last = started;
      for (;;) {
        const jobs = await Promise.all(ids.map((id) => ports.jobs.get(id)));
        const bad = jobs.find((j) => j && (j.status === "failed" || j.status === "canceled"));
        if (bad) throw new Error(`bench render ${bad.id} ${bad.status}: ${JSON.stringify(bad.error)}`);
        if (jobs.every((j) => j?.status === "succeeded")) {
          for (const j of jobs) finished.push(Date.parse(j!.finishedAt!) - Date.parse(j!.createdAt));
          last = Math.max(...jobs.map((j) => Date.parse(j!.finishedAt!)));
          break;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      const wall = (last - started) / 1000;
      await worker.stop();
      await api.stop();
      await ports.close();
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
    for (const m of Object.values(models)) await m.release();
    fs.rmSync(root, { recursive: true, force: true });
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
