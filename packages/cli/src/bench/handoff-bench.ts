import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { nullExecutor, Worker } from "@kiln/gpu-worker";
import {
  DEFAULT_RENDER_LIMITS,
  enqueueStage,
  type JobRecord,
  loadConfig,
  planRender,
  type Ports,
  renderRequestSchema,
  stageMessage,
  stageQueues,
} from "@kiln/shared";
import { openLocalPorts } from "@kiln/shared/local";
import { createLogger } from "@kiln/shared/node";

import { openStandinPorts, startStandinsProcess } from "./standins-process.js";
import { fmt, percentile, table } from "./stats.js";

/** 1024² latents: 4×128×128 fp16 = 128 KiB of payload, the size a real SDXL hand-over carries. */
const REQUEST = { prompt: "handoff", mode: "ensemble", width: 1024, height: 1024, steps: 30, seed: 1 } as const;
const LATENTS_BYTES = 128 * 1024;
const WARMUP = 10;

interface Floor {
  name: string;
  label: string;
  /** One round of the raw floor, in ms. */
  round(i: number): Promise<number>;
}

interface Family {
  name: string;
  ports: Ports;
  floors: Floor[];
  close(): Promise<void>;
}

/**
 * Issue 4's figure: the worker runtime's cost per hand-over with a null model — from the base
 * stage's executor returning zero latents to the refine stage's executor being called with them
 * decoded (encode + checksum, put, job update, enqueue next, ack; claim, job read + transition,
 * get + verify) — on both families over loopback, as a ratio to the raw floor measured in the
 * same run. Two in-process workers (one per stage kind) long-poll their queues, as a fleet does.
 */
export async function run(): Promise<string> {
  const rounds = loadConfig().bench.handoffs;
  const rows: (string | number)[][] = [];
  const notes: string[] = [];
  for (const open of [openLocal, openAws]) {
    const family = await open();
    try {
      const floors = [];
      for (const floor of family.floors) {
        const samples: number[] = [];
        for (let i = 0; i < WARMUP + rounds; i++) {
          const ms = await floor.round(i);
          if (i >= WARMUP) samples.push(ms);
        }
        floors.push({ floor, samples });
      }
      const handoff = await measureHandoffs(family.ports, rounds);
      const [h50, h99] = [percentile(handoff, 50), percentile(handoff, 99)];
      for (const { floor, samples } of floors) {
        const [f50, f99] = [percentile(samples, 50), percentile(samples, 99)];
        rows.push([
          family.name,
          floor.name,
          fmt(f50, 2),
          fmt(f99, 2),
          fmt(h50, 2),
          fmt(h99, 2),
          `${fmt(h50 / f50, 2)}×`,
          `${fmt(h99 / f99, 2)}×`,
        ]);
        notes.push(`- ${family.name}, floor "${floor.name}": ${floor.label}.`);
      }
    } finally {
      await family.close();
    }
  }
  return [
    `${rounds} hand-overs per family after ${WARMUP} warm-ups, one job at a time; 1024×1024 ensemble with a null model (zero latents, ${LATENTS_BYTES / 1024} KiB fp16 payload). Hand-over = base executor returns → refine executor called with the verified latents. Raw floor measured in the same run:`,
    ...notes,
    "",
    table(
      [
        "family",
        "floor",
        "floor p50 (ms)",
        "floor p99 (ms)",
        "hand-over p50 (ms)",
        "hand-over p99 (ms)",
        "ratio p50",
        "ratio p99",
      ],
      rows,
    ),
  ].join("\n");
}

async function measureHandoffs(ports: Ports, rounds: number): Promise<number[]> {
  const logger = createLogger({ level: "silent" });
  const ended = new Map<string, number>();
  const handoffs = new Map<string, number>();
  const refined = new Map<string, () => void>();
  const execute = nullExecutor({
    onStage(jobId, stage, phase) {
      if (stage === 0 && phase === "end") ended.set(jobId, performance.now());
      if (stage === 1 && phase === "start") handoffs.set(jobId, performance.now() - ended.get(jobId)!);
      if (stage === 1 && phase === "end") refined.get(jobId)?.();
    },
  });
  const common = {
    ports,
    execute,
    logger,
    concurrency: 1,
    visibilitySeconds: 60,
    maxReceives: 5,
    pollWaitSeconds: 10,
    deadLetterSweepMs: 3_600_000,
  };
  const workers = [
    new Worker({ ...common, stages: ["base"], workerId: "bench-base" }),
    new Worker({ ...common, stages: ["refine"], workerId: "bench-refine" }),
  ];
  for (const w of workers) w.start();
  try {
    const samples: number[] = [];
    for (let i = 0; i < WARMUP + rounds; i++) {
      const job = await submit(ports, i);
      // Wait on the executor, not by polling the store: polls would compete with the hand-over measured.
      await Promise.race([
        new Promise<void>((resolve) => refined.set(job.id, resolve)),
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error(`bench job ${job.id} was not refined within 30 s`)), 30_000).unref(),
        ),
      ]);
      const deadline = Date.now() + 30_000;
      for (;;) {
        const current = await ports.jobs.get(job.id);
        if (current?.status === "succeeded") break;
        if (current && ["failed", "canceled", "expired"].includes(current.status))
          throw new Error(`bench job ${job.id} ${current.status}: ${current.error?.message}`);
        if (Date.now() > deadline) throw new Error(`bench job ${job.id} still ${current?.status} after 30 s`);
        await new Promise((r) => setTimeout(r, 2));
      }
      if (i >= WARMUP) samples.push(handoffs.get(job.id)!);
    }
    return samples;
  } finally {
    for (const w of workers) await w.drain(5);
  }
}

async function submit(ports: Ports, i: number): Promise<JobRecord> {
  const plan = planRender(renderRequestSchema(DEFAULT_RENDER_LIMITS).parse(REQUEST), i);
  const at = new Date().toISOString();
  const job: JobRecord = {
    id: `job_bench_${i}_${Date.now()}`,
    ownerKeyId: "bench",
    status: "queued",
    version: 1,
    createdAt: at,
    updatedAt: at,
    plan,
    images: [],
    stageTimings: [],
  };
  await ports.jobs.create(job);
  await enqueueStage(ports.queue, stageMessage(job.id, plan, 0));
  return job;
}

async function openLocal(): Promise<Family> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-handoff-"));
  const ports = openLocalPorts({
    dataDir: dir,
    publicBaseUrl: "http://127.0.0.1:9",
    urlSecret: "bench-handoff-secret-0123456789",
    maxReceives: 5,
  });
  const body = stageMessage("job_floor", planRender(renderRequestSchema(DEFAULT_RENDER_LIMITS).parse(REQUEST), 1), 1);
  const latents = new Uint8Array(LATENTS_BYTES).map((_, i) => i % 251);
  const enqueueClaim = async () => {
    await ports.queue.send("floor", body);
    const [m] = await ports.queue.receive("floor", { visibilitySeconds: 60 });
    return m!;
  };
  return {
    name: "local (SQLite + files)",
    ports,
    floors: [
      {
        name: "queue",
        label: "bare SQLite enqueue + claim of a stage-sized message (`send` then `receive`) on the same queue table",
        async round() {
          const t = performance.now();
          const m = await enqueueClaim();
          const ms = performance.now() - t;
          await ports.queue.ack("floor", m.receipt);
          return ms;
        },
      },
      {
        name: "queue + blob",
        label: "the same plus a file-store put + get of 128 KiB (what the AWS floor includes)",
        async round(i) {
          const t = performance.now();
          const m = await enqueueClaim();
          await ports.blobs.put(`floor/${i}.bin`, latents);
          await ports.blobs.get(`floor/${i}.bin`);
          const ms = performance.now() - t;
          await ports.queue.ack("floor", m.receipt);
          return ms;
        },
      },
    ],
    async close() {
      await ports.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The AWS family on the stand-ins, which run in a process of their own (standins-process.ts). */
async function openAws(): Promise<Family> {
  const standins = await startStandinsProcess();
  const { ports } = await openStandinPorts(standins, {
    queues: [...stageQueues(), "floor"],
    maxReceives: 5,
    visibilitySeconds: 60,
  });
  const body = stageMessage("job_floor", planRender(renderRequestSchema(DEFAULT_RENDER_LIMITS).parse(REQUEST), 1), 1);
  const latents = new Uint8Array(LATENTS_BYTES).map((_, i) => i % 251);
  return {
    name: "aws (fauxqs SQS+S3, dynalite DynamoDB, loopback)",
    ports,
    floors: [
      {
        name: "queue + blob",
        label:
          "bare SQS send → receive of a stage-sized message plus S3 put + get of 128 KiB, through the same SDK clients",
        async round(i) {
          const t = performance.now();
          await ports.queue.send("floor", body);
          const [m] = await ports.queue.receive("floor", { visibilitySeconds: 60, waitSeconds: 1 });
          await ports.blobs.put(`floor/${i}.bin`, latents);
          await ports.blobs.get(`floor/${i}.bin`);
          const ms = performance.now() - t;
          await ports.queue.ack("floor", m!.receipt);
          return ms;
        },
      },
    ],
    async close() {
      await ports.close();
      await standins.stop();
    },
  };
}
