/**
 * What the in-process worker tests share: a job submitted as the API would (record, then stage 0 on its queue),
 * a poll until a condition holds, in-process pause points, and the tiny base and refiner loaded on the CPU.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import {
  DEFAULT_RENDER_LIMITS,
  enqueueStage,
  type JobRecord,
  type PausePoint,
  planRender,
  type Ports,
  renderRequestSchema,
  stageMessage,
} from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";

import { loadSdxlModel, type ModelSet, writeTinyModels } from "../../src/index.js";

export const testLogger = createLogger({ level: (process.env.KILN_TEST_LOG as "silent") ?? "silent" });

/** Stores a queued job for `body` (validated and planned as the API does) and sends its stage 0. */
export async function submit(
  ports: Ports,
  body: Record<string, unknown>,
  extra: Partial<JobRecord> = {},
): Promise<JobRecord> {
  const plan = planRender(renderRequestSchema(DEFAULT_RENDER_LIMITS).parse(body), 3);
  const at = new Date().toISOString();
  const job: JobRecord = {
    id: `job_${Math.random().toString(36).slice(2)}`,
    ownerKeyId: "k",
    status: "queued",
    version: 1,
    createdAt: at,
    updatedAt: at,
    plan,
    images: [],
    stageTimings: [],
    ...extra,
  };
  await ports.jobs.create(job);
  await enqueueStage(ports.queue, stageMessage(job.id, plan, 0));
  return job;
}

/** Polls `probe` until it gives a value; the bound only turns a hang into a failure that says what it waited for. */
export async function until<T>(
  probe: () => Promise<T | undefined | null | false>,
  what: string,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** In-process pause points: a stage held at an armed point waits until the test lets it go; every call is recorded. */
export class Holds {
  readonly seen: { point: string; jobId: string }[] = [];
  private readonly armed = new Map<string, { reached: (info: Record<string, unknown>) => void; gate: Promise<void> }>();

  arm(point: string): { reached: Promise<Record<string, unknown>>; release(): void } {
    let reached!: (info: Record<string, unknown>) => void;
    let release!: () => void;
    const at = new Promise<Record<string, unknown>>((r) => (reached = r));
    const gate = new Promise<void>((r) => (release = r));
    this.armed.set(point, { reached, gate });
    return { reached: at, release };
  }

  readonly pause: PausePoint = async (point, info = {}, prepare) => {
    this.seen.push({ point, jobId: String(info.jobId) });
    const hold = this.armed.get(point);
    if (!hold) return;
    this.armed.delete(point);
    await prepare?.();
    hold.reached(info);
    await hold.gate;
  };
}

/** The tiny base and refiner, written to a temporary folder and loaded on the CPU provider. */
export async function loadTinyModelSet(prefix: string): Promise<{ models: ModelSet; release(): Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const dirs = writeTinyModels(dir);
  const options = { providers: ["cpu" as const], logger: testLogger };
  const models: ModelSet = {
    base: await loadSdxlModel(dirs.base, "base", options),
    refiner: await loadSdxlModel(dirs.refiner, "refiner", options),
  };
  return {
    models,
    async release() {
      for (const m of Object.values(models)) await m?.release();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
