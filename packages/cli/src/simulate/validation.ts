import fs from "node:fs";
import path from "node:path";

import {
  type GpuProfile,
  loadSdxlModel,
  type ModelSet,
  renderSeconds,
  type RenderShape,
  type SimulatedGpu,
  simulateGpu,
  stageSteps,
  writeTinyModels,
} from "@kiln/gpu-worker";
import { createApiKey, type KilnConfig, loadConfig } from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";

import { type Service, startApiService, startWorkerService } from "../services.js";
import { openPorts } from "../stack.js";
import { makePolicy } from "./policies.js";
import { exponential, seededRandom } from "./random.js";
import { simulate, type SimulationResult } from "./simulator.js";
import { type Arrival, fileTrace, makeTrace } from "./traces.js";

/**
 * Validation of `kiln simulate` against the real runtime: the local stack (API, SQLite queue and job
 * store, file blob store, N in-process workers with their own simulated GPU, tiny text encoders, the
 * hand-over and PNG encoding) under a trace, each job's time to image taken from its record
 * (`finishedAt − createdAt`), and the simulator run on the same arrivals (written in its FILE format),
 * the same profile and the `fixed` policy with N instances.
 */

/** A GPU profile compressed in time for a validation run: instances already up, GPU calls `scale` as long. */
export function validationProfile(base: GpuProfile, scale: number, stageOverheadSeconds: number): GpuProfile {
  return {
    ...base,
    name: `${base.name}×${scale}`,
    stepSeconds: base.stepSeconds * scale,
    vaeSeconds: base.vaeSeconds * scale,
    stageOverheadSeconds,
    // The workers are started before the trace begins, as the fixed policy's instances are at t = 0.
    bootSeconds: 0,
    modelLoadSeconds: 0,
    spotInterruptionsPerHour: 0,
  };
}

/** A mix of request shapes, drawn per arrival, so the comparison is not of one shape only. */
export interface ShapeMix {
  shape: RenderShape;
  weight: number;
}

/**
 * Arrival times of a named trace (poisson, bursty, …) at `ratePerMinute` for `seconds`, capped at
 * `maxJobs`, with shapes drawn from `mix`: the trace the real stack is driven with and the simulator reads.
 */
export function validationTrace(
  name: string,
  o: { ratePerMinute: number; seconds: number; seed: number; mix: ShapeMix[]; maxJobs: number },
): Arrival[] {
  const random = seededRandom(o.seed ^ 0x51a9e);
  const total = o.mix.reduce((s, m) => s + m.weight, 0);
  const out: Arrival[] = [];
  const times =
    name === "bursts"
      ? burstArrivals(o.ratePerMinute, o.seconds, o.seed)
      : makeTrace(name, { ratePerMinute: o.ratePerMinute, hours: o.seconds / 3600, seed: o.seed });
  for (const a of times) {
    if (out.length >= o.maxJobs) break;
    let pick = random() * total;
    const m = o.mix.find((x) => (pick -= x.weight) < 0) ?? o.mix[o.mix.length - 1]!;
    out.push({ t: a.t, shape: m.shape });
  }
  return out;
}

/**
 * Bursts compressed for a validation run (the `bursty` trace's bursts last minutes): bursts arrive as a
 * Poisson process at `burstsPerMinute`, each 2–6 renders sent within a few tens of milliseconds — a channel
 * asking for several images at once — so that a worker finds several compatible renders queued together.
 */
export function* burstArrivals(burstsPerMinute: number, seconds: number, seed: number): Generator<{ t: number }> {
  const random = seededRandom(seed);
  for (let t = exponential(random, burstsPerMinute / 60); t < seconds; t += exponential(random, burstsPerMinute / 60)) {
    const size = 2 + Math.floor(random() * 5);
    for (let i = 0, at = t; i < size; i++, at += 0.005 + 0.02 * random()) yield { t: at };
  }
}

/** The FILE trace format of `kiln simulate --trace FILE`: `seconds,WxH,mode,steps,n` per line. */
export function writeTraceFile(file: string, arrivals: readonly Arrival[]): void {
  const lines = arrivals.map(
    (a) => `${a.t.toFixed(4)},${a.shape.width}x${a.shape.height},${a.shape.mode},${a.shape.steps},${a.shape.n}`,
  );
  fs.writeFileSync(file, `# seconds,WxH,mode,steps,n\n${lines.join("\n")}\n`);
}

export interface MeasuredJob {
  id: string;
  /** Position in the trace. */
  index: number;
  shape: RenderShape;
  /** Seconds from the start of the run to the job's `createdAt` (when the API accepted it). */
  arrival: number;
  /** Seconds from the start of the run to its `finishedAt`. */
  done: number;
  timeToImage: number;
  /** Simulated-GPU seconds this render's shape costs (profile), for the overhead figure. */
  gpuSeconds: number;
  /** The worker that ran each stage. */
  stageWorkers: string[];
  /** Each stage's start and end, seconds from the job's `createdAt`. */
  stageTimes: [number, number][];
}

export interface RealRun {
  jobs: MeasuredJob[];
  /** Sum of the simulated GPUs' busy seconds (what the runtime actually asked of them). */
  gpuBusySeconds: number;
  wallSeconds: number;
}

export interface RealStack {
  /** The configuration the workers run with (`workerPipeline`, `workerBatch`: what the simulator is given). */
  config: KilnConfig;
  /** Submits the arrivals on their schedule (seconds from now) and waits for every job to succeed. */
  run(arrivals: readonly Arrival[]): Promise<RealRun>;
  stop(): Promise<void>;
}

/** The worker's long poll on the interactive base queue (worker.ts: 1 s when it serves several queues). */
export const WORKER_IDLE_POLL_SECONDS = 1;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/**
 * Starts the local stack with `workers` in-process workers, each on its own simulated GPU. The workers are
 * `kiln worker`'s (`startWorkerService`) configured from `env` as it is from the environment — so
 * `KILN_WORKER_PIPELINE` and `KILN_WORKER_BATCH` take their defaults unless set — with only the poll cycle
 * compressed like the trace.
 */
export async function startRealStack(o: {
  root: string;
  workers: number;
  profile: GpuProfile;
  logger: Logger;
  /** The workers' long poll on their last queue (the runtime's default is WORKER_IDLE_POLL_SECONDS). */
  pollSeconds: number;
  /** `KILN_*` variables for the workers, as `kiln worker` reads them (e.g. `KILN_WORKER_PIPELINE: "false"`). */
  env?: Record<string, string>;
}): Promise<RealStack> {
  const dirs = writeTinyModels(path.join(o.root, "models"));
  const gpus: SimulatedGpu[] = [];
  const modelSets: ModelSet[] = [];
  for (let i = 0; i < o.workers; i++) {
    // One model set per worker: each worker has its own GPU — its own device thread (deviceId), as one process per
    // GPU has in a fleet — whose calls do not wait for another's.
    const options = { providers: ["cpu" as const], logger: o.logger, deviceId: i };
    const models = {
      base: await loadSdxlModel(dirs.base, "base", options),
      refiner: await loadSdxlModel(dirs.refiner, "refiner", options),
    };
    const gpu = simulateGpu(models, o.profile);
    await gpu.ready;
    gpus.push(gpu);
    modelSets.push(models);
  }
  const config = loadConfig({
    KILN_DATA_DIR: path.join(o.root, "data"),
    PORT: "0",
    KILN_WORKER_PORT: "0",
    KILN_MAX_SIDE: "1024",
    KILN_WORKER_CONCURRENCY: "1",
    ...o.env,
  });
  const ports = openPorts(config);
  const api = await startApiService(config, ports, o.logger);
  const url = `http://127.0.0.1:${api.port}`;
  const { key } = await createApiKey(ports.keys, { name: "simulate-validate", scopes: ["render"] });
  const workers: Service[] = [];
  for (const [i, models] of modelSets.entries()) {
    workers.push(
      await startWorkerService(config, ports, o.logger, models, {
        workerId: `validate-${i}`,
        pollWaitSeconds: o.pollSeconds,
      }),
    );
  }

  const submit = async (shape: RenderShape, seed: number): Promise<string> => {
    const res = await fetch(`${url}/v1/renders`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({
        prompt: "a red circle",
        mode: shape.mode,
        n: shape.n,
        width: shape.width,
        height: shape.height,
        steps: shape.steps,
        seed,
      }),
    });
    if (res.status !== 202) throw new Error(`submit failed: ${res.status} ${await res.text()}`);
    return ((await res.json()) as { id: string }).id;
  };

  return {
    async run(arrivals) {
      for (const g of gpus) g.reset();
      const t0 = Date.now();
      const started = performance.now();
      const submitted: Promise<string>[] = [];
      for (const [i, a] of arrivals.entries()) {
        await sleep(started + a.t * 1000 - performance.now());
        submitted.push(submit(a.shape, i));
      }
      const ids = await Promise.all(submitted);
      for (;;) {
        const jobs = await Promise.all(ids.map((id) => ports.jobs.get(id)));
        const bad = jobs.find((j) => j && (j.status === "failed" || j.status === "canceled" || j.status === "expired"));
        if (bad) throw new Error(`render ${bad.id} ${bad.status}: ${JSON.stringify(bad.error)}`);
        if (jobs.every((j) => j?.status === "succeeded")) {
          const wallSeconds = (performance.now() - started) / 1000;
          return {
            wallSeconds,
            gpuBusySeconds: gpus.reduce((s, g) => s + g.busySeconds(), 0),
            jobs: jobs.map((j, index) => {
              const created = Date.parse(j!.createdAt);
              const finished = Date.parse(j!.finishedAt!);
              const shape = arrivals[index]!.shape;
              return {
                id: j!.id,
                index,
                shape,
                arrival: (created - t0) / 1000,
                done: (finished - t0) / 1000,
                timeToImage: (finished - created) / 1000,
                gpuSeconds: renderSeconds(o.profile, shape, 1, false),
                stageWorkers: j!.stageTimings.map((s) => s.worker ?? "?"),
                stageTimes: j!.stageTimings.map((s): [number, number] => [
                  (Date.parse(s.startedAt) - created) / 1000,
                  (Date.parse(s.finishedAt ?? s.startedAt) - created) / 1000,
                ]),
              };
            }),
          };
        }
        await sleep(50);
      }
    },
    config,
    async stop() {
      for (const w of workers) await w.stop();
      await api.stop();
      await ports.close();
      for (const models of modelSets) for (const m of Object.values(models)) await m?.release();
    },
  };
}

/**
 * CPU seconds per stage the GPU waits for, measured on finished jobs: each one's time from its first
 * stage's start to its image (the wait for a worker is modelled on its own), less its GPU time, over
 * its stages; the median. Calibrate on a run other than the one being predicted.
 */
export function overheadPerStage(jobs: readonly MeasuredJob[]): number {
  const samples = jobs.map((j) => (j.timeToImage - j.stageTimes[0]![0] - j.gpuSeconds) / stageSteps(j.shape).length);
  const sorted = samples.sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

export interface Prediction {
  result: SimulationResult;
  /** Simulated completion time of each arrival, by trace index. */
  done: number[];
}

/** How the simulator models a worker with this configuration (`--pipelined`, `--batch`). */
export interface WorkerModel {
  pipelined: boolean;
  maxBatch: number;
}

/** The simulator's model of the workers a configuration starts: pipelined or not, and the batch they claim. */
export function workerModel(config: Pick<KilnConfig, "workerPipeline" | "workerBatch">): WorkerModel {
  return { pipelined: config.workerPipeline, maxBatch: config.workerBatch };
}

/**
 * What `kiln simulate --trace FILE --policy fixed --max N` predicts for the measured arrivals: the
 * arrivals as the API recorded them, written to and read back from the FILE format.
 */
export function predict(
  file: string,
  arrivals: readonly Arrival[],
  profile: GpuProfile,
  workers: number,
  idlePollSeconds = WORKER_IDLE_POLL_SECONDS,
  model: WorkerModel = { pipelined: false, maxBatch: 1 },
): Prediction {
  // Written in time order (the file reader sorts, stably), and mapped back to the callers' indices.
  const order = arrivals.map((_, i) => i).sort((x, y) => arrivals[x]!.t - arrivals[y]!.t);
  writeTraceFile(
    file,
    order.map((i) => arrivals[i]!),
  );
  const trace = fileTrace(file) as Arrival[];
  const index = new Map(trace.map((a, k) => [a, order[k]!]));
  const done: number[] = new Array<number>(trace.length).fill(NaN);
  const result = simulate(trace, {
    profile,
    policy: makePolicy("fixed", { targetBacklog: 1, maxInstances: workers, idleSeconds: 0 }),
    maxBatch: model.maxBatch,
    pipelined: model.pipelined,
    spotShare: 0,
    seed: 1,
    hours: Math.max(0.01, (trace.at(-1)?.t ?? 0) / 3600 + 0.01),
    idlePollSeconds,
    onDone: (a, t) => void (done[index.get(a)!] = t),
  });
  return { result, done };
}

/** The simulator's percentile rule (nearest rank below), so measured and predicted are read alike. */
export function simPercentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

/**
 * The validation scenario the benchmark and the CI test share: two workers; 256² renders of 30 steps
 * (three in five ensemble n = 1, one base, one ensemble n = 2); the A10 profile with GPU calls 2.5× as
 * long at 256² (≈ 0.97 s of GPU per ensemble render, 8.4× shorter than a real 1024² A10 render), and
 * the workers' poll cycle compressed alike (1 s / 8), so that queueing, hand-over and CPU work keep
 * roughly their production proportions while a trace of dozens of renders takes half a minute.
 */
export const SCENARIO = {
  workers: 2,
  gpu: "a10",
  timeScale: 2.5,
  pollSeconds: WORKER_IDLE_POLL_SECONDS / 8,
  mix(): ShapeMix[] {
    const shape: RenderShape = { width: 256, height: 256, steps: 30, mode: "ensemble", n: 1 };
    return [
      { shape, weight: 3 },
      { shape: { ...shape, mode: "base" }, weight: 1 },
      { shape: { ...shape, n: 2 }, weight: 1 },
    ];
  },
  /** The batching trace's one shape, so every render queued behind another can share its UNet batch. */
  burstMix(): ShapeMix[] {
    return [{ shape: { width: 256, height: 256, steps: 30, mode: "ensemble", n: 1 }, weight: 1 }];
  },
} as const;

/** The profile file `kiln simulate --profile FILE` reads for a validation prediction. */
export function writeProfileFile(file: string, profile: GpuProfile): void {
  fs.writeFileSync(file, JSON.stringify(profile, null, 2) + "\n");
}
