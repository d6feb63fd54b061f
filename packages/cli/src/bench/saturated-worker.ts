import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { GPU_PROFILES, loadSdxlModel, type ModelSet, simulateGpu, writeTinyModels } from "@kiln/gpu-worker";
import { createApiKey, type JobRecord, type KilnConfig, loadConfig, type Ports } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";

import { startApiService, startWorkerService } from "../services.js";
import { openPorts } from "../stack.js";

/**
 * The tiny models on the CPU with their UNet and VAE replaced by the H100 profile's waits, in a scratch folder:
 * `models` on the device thread (KILN_GPU_THREAD, the default), `mainThread` with the sessions on the worker's main
 * thread (KILN_GPU_THREAD=false), each set with its own simulated GPU.
 */
export async function simulatedH100() {
  const profile = GPU_PROFILES.h100!;
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-saturated-"));
  const dirs = writeTinyModels(path.join(root, "models"));
  const logger = createLogger({ level: "silent" });
  const load = async (gpuThread: boolean) => {
    const options = { providers: ["cpu" as const], logger, gpuThread };
    const models = {
      base: await loadSdxlModel(dirs.base, "base", options),
      refiner: await loadSdxlModel(dirs.refiner, "refiner", options),
    };
    const gpu = simulateGpu(models, profile);
    await gpu.ready;
    return { models, gpu };
  };
  const { models, gpu } = await load(true);
  const mainThread = await load(false);
  return {
    profile,
    models,
    gpu,
    mainThread,
    logger,
    /** A fresh data directory per run, so one run's queue and records never meet another's. */
    config(name: string, env: Record<string, string>): KilnConfig {
      return loadConfig({
        KILN_DATA_DIR: path.join(root, `data-${name}`),
        PORT: String(18000 + Math.floor(Math.random() * 2000)),
        KILN_WORKER_PORT: "0",
        KILN_MAX_SIDE: "1024",
        ...env,
      });
    },
    async close() {
      for (const m of [...Object.values(models), ...Object.values(mainThread.models)]) await m.release();
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface SaturatedRun {
  /** From the worker's start to the last `succeeded`. */
  wallSeconds: number;
  /** Each render's submission to `succeeded`. */
  timeToImageMs: number[];
  /** This process's CPU time while the worker ran (all threads). */
  cpu: NodeJS.CpuUsage;
}

/**
 * One saturated worker: the API takes `bodies` over HTTP, then a worker starts with all of them queued (so it never
 * waits for work) and runs until every one has succeeded. `gpu.reset()` runs before the worker starts.
 * `ports`: the family to run on (default: the one `config` names); closed at the end.
 */
export async function runSaturatedWorker(
  config: KilnConfig,
  models: ModelSet,
  bodies: Record<string, unknown>[],
  setup: { gpu: { reset(): void }; logger: ReturnType<typeof createLogger> },
  ports: Ports = openPorts(config),
): Promise<SaturatedRun> {
  const api = await startApiService(config, ports, setup.logger);
  try {
    const { key } = await createApiKey(ports.keys, { name: "bench", scopes: ["render"] });
    const ids: string[] = [];
    for (const body of bodies) {
      const res = await fetch(`${config.publicUrl}/v1/renders`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      if (res.status !== 202) throw new Error(`submit failed: ${res.status} ${await res.text()}`);
      ids.push(((await res.json()) as { id: string }).id);
    }
    setup.gpu.reset();
    const started = Date.now();
    const cpu = process.cpuUsage();
    const worker = await startWorkerService(config, ports, setup.logger, models);
    try {
      const jobs: JobRecord[] = [];
      for (;;) {
        // Reads from the oldest render not yet seen succeeded only (they finish in about submission order): reading
        // every render each round is a burst of requests on the worker's event loop (16 DynamoDB calls on aws).
        while (jobs.length < ids.length) {
          const j = await ports.jobs.get(ids[jobs.length]!);
          if (j && (j.status === "failed" || j.status === "canceled"))
            throw new Error(`bench render ${j.id} ${j.status}: ${JSON.stringify(j.error)}`);
          if (j?.status !== "succeeded") break;
          jobs.push(j);
        }
        if (jobs.length === ids.length) {
          const used = process.cpuUsage(cpu);
          const last = Math.max(...jobs.map((j) => Date.parse(j.finishedAt!)));
          return {
            wallSeconds: (last - started) / 1000,
            timeToImageMs: jobs.map((j) => Date.parse(j.finishedAt!) - Date.parse(j.createdAt)),
            cpu: used,
          };
        }
        // The end is the last `finishedAt`, so this poll can be slow: it shares the worker's event loop.
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await worker.stop();
    }
  } finally {
    await api.stop();
    await ports.close();
  }
}
