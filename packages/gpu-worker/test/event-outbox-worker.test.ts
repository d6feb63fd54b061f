/**
 * The event outbox as the worker drives it, on the local family with the tiny models: the fault tests'
 * `event:before-tell` point is reached only between a stored transition and the event that transition
 * stored (never for a progress update, which is not in the outbox), and a job that ended leaves nothing
 * due for the sweep to tell a second time.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import {
  DEFAULT_RENDER_LIMITS,
  enqueueStage,
  type JobEvent,
  type JobEventType,
  type JobRecord,
  type PausePoint,
  planRender,
  type Ports,
  renderRequestSchema,
  stageMessage,
} from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import { openTempLocalPorts, type TempLocalPorts } from "@kiln/shared/testing";

import { loadSdxlModel, type ModelSet, sdxlExecutor, Worker, writeTinyModels } from "../src/index.js";

const logger = createLogger({ level: (process.env.KILN_TEST_LOG as "silent") ?? "silent" });

async function submit(ports: Ports, body: Record<string, unknown>): Promise<JobRecord> {
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
    webhook: { url: "https://hooks.example.com/kiln" },
  };
  await ports.jobs.create(job);
  await enqueueStage(ports.queue, stageMessage(job.id, plan, 0));
  return job;
}

async function until<T>(probe: () => Promise<T | undefined | null | false>, what: string, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("the worker and the event outbox", { timeout: 120_000 }, () => {
  let models: ModelSet;
  let modelDir: string;
  let local: TempLocalPorts;

  before(async () => {
    modelDir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-outbox-models-"));
    const dirs = writeTinyModels(modelDir);
    const options = { providers: ["cpu" as const], logger };
    models = {
      base: await loadSdxlModel(dirs.base, "base", options),
      refiner: await loadSdxlModel(dirs.refiner, "refiner", options),
    };
    local = openTempLocalPorts({ prefix: "kiln-outbox-", maxReceives: 3 });
  });
  after(async () => {
    await local?.close();
    for (const m of Object.values(models ?? {})) await m?.release();
    fs.rmSync(modelDir, { recursive: true, force: true });
  });

  for (const mode of ["base", "ensemble"] as const) {
    it(`${mode}: every event:before-tell holds an event its transition stored; nothing stays due once the job ended`, async () => {
      const { ports } = local;
      const told: JobEvent[] = [];
      // What the record held each time a process could be held (and killed) before telling an event.
      const atPoint: { event: JobEventType; due: JobEventType[] | undefined }[] = [];
      const pause: PausePoint = async (point, info = {}) => {
        if (point !== "event:before-tell") return;
        const stored = await ports.jobs.get(String(info.jobId));
        atPoint.push({ event: info.event as JobEventType, due: stored?.eventsDue });
      };
      const worker = new Worker({
        ports,
        execute: sdxlExecutor(models, { blobs: ports.blobs }),
        logger,
        stages: ["base", "refine"],
        concurrency: 1,
        visibilitySeconds: 30,
        maxReceives: 3,
        pollWaitSeconds: 1,
        deadLetterSweepMs: 600_000,
        events: async (e) => void told.push(e),
        pause,
      });
      worker.start();
      try {
        const job = await submit(ports, { prompt: `an outbox, ${mode}`, mode, width: 64, height: 64, steps: 6 });
        const ended = await until(async () => {
          const j = await ports.jobs.get(job.id);
          return j?.status === "succeeded" || j?.status === "failed" ? j : undefined;
        }, `job ${job.id} to end`);
        assert.equal(ended.status, "succeeded", JSON.stringify(ended.error));
        // Step 1 and the last step always tell progress.
        assert.ok(
          told.some((e) => e.type === "progress" && e.job.id === job.id),
          "progress events were told",
        );
        for (const { event, due } of atPoint)
          assert.ok(
            due?.includes(event),
            `held before telling "${event}" while the record held ${JSON.stringify(due)}`,
          );
        assert.deepEqual(
          atPoint.map((p) => p.event),
          ["started", "succeeded"],
          "the point is reached once per stored transition event",
        );
        // Drained, the worker has told (and cleared) everything it was going to.
        await worker.drain(5);
        const final = (await ports.jobs.get(job.id))!;
        assert.equal(final.eventsDue, undefined, "nothing left due for the sweep to tell again");
      } finally {
        await worker.drain(5);
      }
    });
  }
});
