import { defaultWorkerConcurrency } from "@kiln/shared";

import { UsageError } from "../cli/args.js";
import { runSaturatedWorker, simulatedH100 } from "./saturated-worker.js";
import { type AwsStandins, openStandinNamespace, startStandinsProcess } from "./standins-process.js";
import { fmt, percentile, table } from "./stats.js";

export type Family = "local" | "aws";

export interface Case {
  /** local: SQLite + files (default); aws: SQS + S3 (fauxqs) and DynamoDB (dynalite) stand-ins on loopback. */
  family?: Family;
  mode: "base" | "ensemble" | "sdedit";
  n: number;
  renders: number;
  /** KILN_WORKER_PIPELINE: off is the worker before issue 15 (each stage from claim to acknowledgement). */
  pipelined: boolean;
  /**
   * KILN_WORKER_CONCURRENCY: pipelined, the stages on the GPU at once (2: one's CPU step overlaps the other's UNet
   * call). Default: a GPU worker's default (`defaultWorkerConcurrency` with the image's providers).
   */
  gpuSlots?: number;
  /** False: images finished on the worker's event loop, as before the finishing threads (KILN_FINISHING_THREADS=0). */
  finishingThreads?: boolean;
  /** False: UNet and VAE sessions on the worker's main thread (KILN_GPU_THREAD=false), each call holding its event loop. */
  gpuThread?: boolean;
}

// Enough renders that the worker's start (first prompt encoding) and tail (last image's finishing and
// acknowledgement) are a small share of the wall time: ~25 s of simulated GPU per case, and ~94 s for the headline's
// ensemble n = 1, where 16 renders left ~1.6 points of the wall to that start and tail (a saturated worker runs for
// hours).
const SHAPES: Omit<Case, "pipelined">[] = [
  { mode: "ensemble", n: 1, renders: 64 },
  { mode: "ensemble", n: 4, renders: 4 },
  { mode: "base", n: 1, renders: 16 },
  { mode: "sdedit", n: 1, renders: 12 },
];
const CASES: Case[] = [
  ...SHAPES.flatMap((c) => [false, true].map((pipelined) => ({ ...c, pipelined }))),
  { ...SHAPES[0]!, pipelined: true, finishingThreads: false },
  { ...SHAPES[0]!, pipelined: true, gpuSlots: 1 },
  // Before the device thread: the UNet and VAE calls on the event loop, as onnxruntime-node runs them there.
  { ...SHAPES[0]!, pipelined: false, gpuThread: false },
  { ...SHAPES[0]!, pipelined: true, gpuThread: false, gpuSlots: 1 },
  // Both families: the same worker on the AWS family, its stand-ins in a process of their own.
  ...[false, true].map((pipelined) => ({ ...SHAPES[0]!, family: "aws" as const, pipelined })),
  { ...SHAPES[0]!, family: "aws", pipelined: true, gpuSlots: 1 },
];

/** The stages on the GPU at once of a case: its own, else what a GPU worker (the image's providers) defaults to. */
const slotsOf = (c: Case) => c.gpuSlots ?? defaultWorkerConcurrency(["tensorrt", "cuda", "cpu"], c.pipelined);

/**
 * `kiln bench duty-cycle --family aws --renders 4`: a subset of the cases, e.g. while working on one family.
 * `family`: only this family's cases; `mode`: only this mode's (`ensemble1`: the headline's ensemble n = 1); `renders`: renders per case instead of each case's own (fewer: a quick
 * look, not a figure for the docs).
 */
function selectCases(options: Record<string, unknown>): Case[] {
  const { family, renders, mode } = options;
  if (family !== undefined && family !== "local" && family !== "aws")
    throw new UsageError(`--family must be local or aws, not "${family}"`);
  if (mode !== undefined && mode !== "ensemble" && mode !== "base" && mode !== "sdedit" && mode !== "ensemble1")
    throw new UsageError(`--mode must be base, ensemble, ensemble1 (n = 1 only) or sdedit, not "${String(mode)}"`);
  const count = typeof renders === "string" ? Number(renders) : undefined;
  if (count !== undefined && !(Number.isInteger(count) && count >= 1 && count <= 1000))
    throw new UsageError(`--renders must be a whole number from 1 to 1000, not "${String(renders)}"`);
  return CASES.filter(
    (c) =>
      (!family || (c.family ?? "local") === family) &&
      (!mode || (mode === "ensemble1" ? c.mode === "ensemble" && c.n === 1 : c.mode === mode)),
  ).map((c) => (count === undefined ? c : { ...c, renders: count }));
}

/**
 * Issue 15's figure: the duty cycle of one saturated worker — simulated-GPU busy time / wall time —
 * on the local family and, for ensemble n = 1, the AWS family (stand-ins on loopback), with the real runtime, queue, stores, tiny text encoders, hand-over and PNG
 * encoding, and the UNet and VAE replaced by waits of the H100 TensorRT profile (1.47 s per 1024²
 * ensemble render). The renders are queued before the worker starts, so it never waits for work.
 */
export async function run(options: Record<string, unknown> = {}): Promise<string> {
  const cases = selectCases(options);
  const h100 = await simulatedH100();
  const { profile } = h100;
  // The same models with their images finished on the event loop (sessions shared, so still simulated).
  const inline = {
    base: { ...h100.models.base, finishing: undefined },
    refiner: { ...h100.models.refiner, finishing: undefined },
  };
  const rows: string[][] = [];
  const summary: string[] = [];
  let standins: AwsStandins | undefined;
  try {
    for (const [i, c] of cases.entries()) {
      const { models, gpu } = c.gpuThread === false ? h100.mainThread : h100;
      const family = c.family ?? "local";
      // A fresh namespace per case (queues, bucket, table), as the local family's fresh data directory.
      standins ??= family === "aws" ? await startStandinsProcess() : undefined;
      const aws =
        family === "aws"
          ? await openStandinNamespace(standins!, `duty${i}`, { maxReceives: 5, visibilitySeconds: 60 })
          : undefined;
      const name = `${family}-${c.mode}-${c.n}-${c.pipelined ? "pipelined" : "serial"}-${slotsOf(c)}-${i}`;
      const config = h100.config(name, {
        KILN_WORKER_PIPELINE: String(c.pipelined),
        KILN_WORKER_CONCURRENCY: String(slotsOf(c)),
        ...aws?.env,
      });
      const bodies = Array.from({ length: c.renders }, (_, i) => ({
        prompt: "a red circle",
        mode: c.mode,
        n: c.n,
        width: 1024,
        height: 1024,
        seed: i,
      }));
      const measured = await runSaturatedWorker(
        config,
        c.finishingThreads === false ? inline : models,
        bodies,
        { ...h100, gpu },
        aws?.ports,
      );
      const wall = measured.wallSeconds;
      const finished = measured.timeToImageMs;
      const used = measured.cpu;
      const duty = gpu.busySeconds() / wall;
      const steady = gpu.busySeconds() / gpu.spanSeconds();
      const p50 = percentile(finished, 50) / 1000;
      const p99 = percentile(finished, 99) / 1000;
      const slots = slotsOf(c);
      const gpuDefault = c.gpuSlots === undefined;
      if (c.mode === "ensemble" && c.n === 1 && c.pipelined) {
        const figures = `${fmt(duty * 100, 1)} % (steady ${fmt(steady * 100, 1)} %; time to image p50 ${fmt(p50, 2)} s, p99 ${fmt(p99, 2)} s)`;
        const setting = gpuDefault
          ? `${slots} stages on the GPU, a GPU worker's default`
          : `${slots} stage${slots > 1 ? "s" : ""} on the GPU (KILN_WORKER_CONCURRENCY=${slots})`;
        // The one `duty cycle: NN.N %` line: 1024² ensemble n = 1, local, a GPU worker's defaults (pipelined, two
        // stages on the GPU, finishing threads, device thread).
        if (c.gpuThread === false)
          summary.push(`sessions on the main thread (KILN_GPU_THREAD=false), ${setting}: ${figures}`);
        else if (family === "aws") summary.push(`aws family, ${setting}: ${figures}`);
        else if (gpuDefault && c.finishingThreads !== false)
          summary.unshift(`duty cycle: ${fmt(duty * 100, 1)} %`, `  local family, ${setting}: ${figures}`);
        else if (c.finishingThreads === false)
          summary.push(`finishing in-line (KILN_FINISHING_THREADS=0), ${setting}: ${figures}`);
        else summary.push(`local family, ${setting}: ${figures}`);
      }
      rows.push([
        family,
        `${c.mode}, n = ${c.n}`,
        (c.pipelined ? `on${slots > 1 ? `, ${slots} on the GPU` : ""}` : "off") +
          (c.gpuThread === false ? ", sessions on the main thread" : ""),
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
    await standins?.stop();
    await h100.close();
  }
  return [
    `One worker, 1024², 30 steps, renders queued before it starts; UNet and VAE simulated with the ${profile.name} profile (${fmt(profile.stepSeconds * 1000, 1)} ms per UNet step, ${fmt(profile.vaeSeconds * 1000, 0)} ms per VAE decode; see gpu-profiles.ts). Everything else is Kiln's real code on this CPU. Family local: SQLite queue and records, files; aws: SQS + S3 (fauxqs) and DynamoDB (dynalite) stand-ins on 127.0.0.1 in a process of their own, a fresh namespace per case.`,
    "",
    table(
      [
        "family",
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
    "Duty cycle: GPU busy / wall from the worker's start to the last `succeeded`. Steady: GPU busy / time from the first GPU call's start to the last one's end (without the first prompt encoding and the last image's finishing). CPU s per render: this process's CPU time (all threads: event loop, finishing thread, PNG encoding, ONNX text encoders) per render; the aws stand-ins' process is not counted. Finishing: where the decoded image is checked, watermarked, rounded and encoded (`thread`: KILN_FINISHING_THREADS=1, the default). Time to image: from submission to `succeeded`, all renders submitted at once (queue wait included).",
    "",
    ...summary,
  ].join("\n");
}
