/**
 * The event outbox as the worker drives it, on the local family with the tiny models: the fault tests'
 * `event:before-tell` point is reached only between a stored transition and the event that transition
 * stored (never for a progress update, which is not in the outbox), and a job that ended leaves nothing
 * due for the sweep to tell a second time.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { type JobEvent, type JobEventType, type PausePoint } from "@kiln/shared";
import { openTempLocalPorts, type TempLocalPorts } from "@kiln/shared/testing";

import { type ModelSet, sdxlExecutor, Worker } from "../src/index.js";
import { loadTinyModelSet, submit, testLogger as logger, until } from "./support/worker-harness.js";

describe("the worker and the event outbox", { timeout: 120_000 }, () => {
  let models: ModelSet;
  let tiny: Awaited<ReturnType<typeof loadTinyModelSet>>;
  let local: TempLocalPorts;

  before(async () => {
    tiny = await loadTinyModelSet("kiln-outbox-models-");
    models = tiny.models;
    local = openTempLocalPorts({ prefix: "kiln-outbox-", maxReceives: 3 });
  });
  after(async () => {
    await local?.close();
    await tiny?.release();
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
        // A webhook, so every transition stores an event for the outbox.
        const job = await submit(
          ports,
          { prompt: `an outbox, ${mode}`, mode, width: 64, height: 64, steps: 6 },
          { webhook: { url: "https://hooks.example.com/kiln" } },
        );
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
