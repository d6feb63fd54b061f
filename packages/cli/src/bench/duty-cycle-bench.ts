import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { GPU_PROFILES, loadSdxlModel, simulateGpu, writeTinyModels } from "@kiln/gpu-worker";
import { createApiKey, loadConfig } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";

import { startApiService, startWorkerService } from "../services.js";
import { openPorts } from "../stack.js";
import { fmt, percentile, table } from "./stats.js";

export interface Case {
  mode: "base" | "ensemble" | "sdedit";
  n: number;
  renders: number;
  /** KILN_WORKER_PIPELINE: off is the worker before issue 15 (each stage from claim to acknowledgement). */
  pipelined: boolean;
  /** KILN_WORKER_CONCURRENCY: pipelined, the stages on the GPU at once (2: one's CPU step overlaps the other's UNet call). */
  gpuSlots?: number;
  /** False: images finished on the worker's event loop, as before the finishing threads (KILN_FINISHING_THREADS=0). */
  finishingThreads?: boolean;
}

// Enough renders that the worker's start (first prompt encoding) and tail (last image's finishing and
// acknowledgement) are a small share of the wall time (~25 s of simulated GPU per case).
const SHAPES: Omit<Case, "pipelined">[] = [
  { mode: "ensemble", n: 1, renders: 16 },
  { mode: "ensemble", n: 4, renders: 4 },
  { mode: "base", n: 1, renders: 16 },
  { mode: "sdedit", n: 1, renders: 12 },
];
const CASES: Case[] = [
  ...SHAPES.flatMap((c) => [false, true].map((pipelined) => ({ ...c, pipelined }))),
  { ...SHAPES[0]!, pipelined: true, finishingThreads: false },
  { ...SHAPES[0]!, pipelined: true, gpuSlots: 2 },
];

/**
 * Issue 15's figure: the duty cycle of one saturated worker — simulated-GPU busy time / wall time —
 * on the local family, with the real runtime, queue, stores, tiny text encoders, hand-over and PNG
 * encoding, and the UNet and VAE replaced by waits of the H100 TensorRT profile (1.47 s per 1024²
 * ensemble render). The renders are queued before the worker starts, so it never waits for work.
 */
export async function run(cases: Case[] = CASES): Promise<string> {
  const profile = GPU_PROFILES.h100!;
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-duty-"));
  const dirs = writeTinyModels(path.join(root, "models"));
  const logger = createLogger({ level: "silent" });
  const options = { providers: ["cpu" as const], logger };
  const models = {
    base: await loadSdxlModel(dirs.base, "base", options),
    refiner: await loadSdxlModel(dirs.refiner, "refiner", options),
  };
  const gpu = simulateGpu(models, profile);
  // The same models with their images finished on the event loop (sessions shared, so still simulated).
  const inline = {
    base: { ...models.base, finishing: undefined },
    refiner: { ...models.refiner, finishing: undefined },
  };
  const rows: string[][] = [];
  const summary: string[] = [];
  try {
    for (const c of cases) {
      const port = 18000 + Math.floor(Math.random() * 1000);
      const config = loadConfig({
        KILN_DATA_DIR: path.join(
          root,
          `data-${c.mode}-${c.n}-${c.pipelined ? "pipelined" : "serial"}-${c.gpuSlots ?? 1}`,
        ),
        PORT: String(port),
        KILN_WORKER_PIPELINE: String(c.pipelined),
        KILN_WORKER_CONCURRENCY: String(c.gpuSlots ?? 1),
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
          body: JSON.stringify({ prompt: "a red circle", mode: c.mode, n: c.n, width: 1024, height: 1024, seed: i }),
        });
        if (res.status !== 202) throw new Error(`submit failed: ${res.status} ${await res.text()}`);
        ids.push(((await res.json()) as { id: string }).id);
      }
      gpu.reset();
      const started = Date.now();
      const cpu = process.cpuUsage();
      const worker = await startWorkerService(config, ports, logger, c.finishingThreads === false ? inline : models);
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
        // The end is the last `finishedAt`, so this poll can be slow: it shares the worker's event loop.
        await new Promise((r) => setTimeout(r, 200));
      }
      const wall = (last - started) / 1000;
      const used = process.cpuUsage(cpu);
      await worker.stop();
      await api.stop();
      await ports.close();
      const duty = gpu.busySeconds() / wall;
      const steady = gpu.busySeconds() / gpu.spanSeconds();
      const p50 = percentile(finished, 50) / 1000;
      const p99 = percentile(finished, 99) / 1000;
      const slots = c.gpuSlots ?? 1;
      if (c.mode === "ensemble" && c.n === 1 && c.pipelined) {
        const figures = `${fmt(duty * 100, 1)} % (steady ${fmt(steady * 100, 1)} %; time to image p50 ${fmt(p50, 2)} s, p99 ${fmt(p99, 2)} s)`;
        // The one `duty cycle: NN.N %` line: 1024² ensemble n = 1, pipelined, one stage on the GPU, finishing threads.
        if (slots === 1 && c.finishingThreads !== false)
          summary.unshift(`duty cycle: ${fmt(duty * 100, 1)} %`, `  ${figures}`);
        else if (slots === 1) summary.push(`finishing in-line (KILN_FINISHING_THREADS=0): ${figures}`);
        else summary.push(`${slots} stages on the GPU (KILN_WORKER_CONCURRENCY=${slots}): ${figures}`);
      }
      rows.push([
        `${c.mode}, n = ${c.n}`,
        c.pipelined ? `on${slots > 1 ? `, ${slots} on the GPU` : ""}` : "off",
        c.finishingThreads === false ? "in-line" : "thread",
        String(c.renders),
        fmt(wall, 2),
        fmt(gpu.busySeconds(), 2),
        fmt(duty * 100, 1) + " %",
        fmt(steady * 100, 1) + " %",
        fmt((used.user + used.system) / 1e6 / c.renders, 2),
        fmt((3600 / wall) * c.renders * c.n, 0),
        fmt(p50, 2),
        fmt(p99, 2),
      ]);
    }
  } finally {
    for (const m of Object.values(models)) await m.release();
    fs.rmSync(root, { recursive: true, force: true });
  }
  return [
    `One worker (concurrency 1) on the local family, 1024², 30 steps, renders queued before it starts; UNet and VAE simulated with the ${profile.name} profile (${fmt(profile.stepSeconds * 1000, 1)} ms per UNet step, ${fmt(profile.vaeSeconds * 1000, 0)} ms per VAE decode; see gpu-profiles.ts). Everything else is Kiln's real code on this CPU.`,
    "",
    table(
      [
        "case",
        "pipelined",
        "finishing",
        "renders",
        "wall (s)",
        "GPU busy (s)",
        "duty cycle",
        "steady duty cycle",
        "CPU s per render",
        "images per GPU-hour",
        "time to image p50 (s)",
        "p99 (s)",
      ],
      rows,
    ),
    "",
    "Duty cycle: GPU busy / wall from the worker's start to the last `succeeded`. Steady: GPU busy / time from the first GPU call's start to the last one's end (without the first prompt encoding and the last image's finishing). CPU s per render: this process's CPU time (all threads: event loop, finishing thread, PNG encoding, ONNX text encoders) per render. Finishing: where the decoded image is checked, watermarked, rounded and encoded (`thread`: KILN_FINISHING_THREADS=1, the default). Time to image: from submission to `succeeded`, all renders submitted at once (queue wait included).",
    "",
    ...summary,
  ].join("\n");
}
