/**
 * The lane rule: with a batch of 200 renders queued in the batch lane, an interactive render
 * submitted while a batch stage runs starts right after that stage — it waits for at most one
 * stage. Asserted on the order in which the worker starts stages, not on wall-clock time.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { nullExecutor, type StageExecutor, Worker } from "@kiln/gpu-worker";
import { createApiKey, DEFAULT_RENDER_LIMITS, type Ports, renderRequestSchema } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";

import { cancelRun, getRun, pumpKey, startRun } from "../../packages/api/src/batches/batch-service.js";
import { manifestSchema } from "../../packages/api/src/batches/manifest.js";
import { submitRender } from "../../packages/api/src/renders/render-service.js";
import { batchTestDeps, openLocalBatchPorts } from "../support/batch-fixture.js";

describe("batch lane", () => {
  let local: ReturnType<typeof openLocalBatchPorts>;
  let ports: Ports;
  let worker: Worker | undefined;

  before(() => {
    local = openLocalBatchPorts("lane");
    ports = local.ports;
  });
  after(async () => {
    await worker?.drain(5);
    await local.close();
  });

  it("an interactive render starts within one stage while 200 batch renders wait", async () => {
    const { record } = await createApiKey(ports.keys, { name: "lane", scopes: ["render"] });
    const deps = batchTestDeps(ports, { window: 1000 });
    const manifest = manifestSchema.parse({
      id: "big",
      defaults: { steps: 2, width: 64, height: 64, mode: "ensemble" },
      prompts: ["catalogue item"],
      seeds: Array.from({ length: 200 }, (_, i) => i),
    });
    const { run } = await startRun(deps, { ownerKeyId: record.id, manifest, trigger: "manual" });
    assert.equal(run.counts.new, 200);
    const depth = await ports.queue.depth("kiln-base-batch");
    assert.equal(depth.visible, 200);

    const starts: string[] = [];
    let fourStarted!: () => void;
    const finished = new Promise<void>((resolve) => (fourStarted = resolve));
    const inner = nullExecutor();
    const execute: StageExecutor = async (job, stage, input, hooks) => {
      const lane = job.plan.lane ?? "interactive";
      starts.push(`${lane}:${stage.index}`);
      if (starts.length === 4) fourStarted();
      if (starts.length === 1) {
        // A person submits while the first batch stage runs.
        const request = renderRequestSchema(DEFAULT_RENDER_LIMITS).parse({
          prompt: "now please",
          width: 64,
          height: 64,
          steps: 2,
        });
        await submitRender(ports, { ownerKeyId: record.id, request, now: new Date(), retentionHours: 1 });
      }
      return inner(job, stage, input, hooks);
    };
    worker = new Worker({
      ports,
      execute,
      logger: createLogger({ level: "silent" }),
      stages: ["base", "refine"],
      concurrency: 1,
      visibilitySeconds: 30,
      maxReceives: 3,
      pollWaitSeconds: 0.05,
      workerId: "w-lane",
    });
    worker.start();
    await finished;
    await worker.drain(5);
    worker = undefined;

    // The batch stage that was running, then both stages of the interactive render, then batch work again.
    assert.deepEqual(starts.slice(0, 4), ["batch:0", "interactive:0", "interactive:1", "batch:1"]);
    const left = await ports.queue.depth("kiln-base-batch");
    assert.ok(left.visible >= 190, `batch work was still waiting (${left.visible})`);
  });

  it("per-key fair share: each key has a window of the lane, and one key's runs share it round-robin", async () => {
    const deps = batchTestDeps(ports, { window: 6 });
    const manifest = (id: string, count: number, priority = 5) =>
      manifestSchema.parse({
        id,
        priority,
        defaults: { steps: 2, width: 64, height: 64, mode: "base" },
        prompts: [id],
        seeds: Array.from({ length: count }, (_, i) => i),
      });
    const submitted = async (keyId: string, runId: string) =>
      (await getRun(deps, keyId, runId))!.renders.filter((r) => r.state === "submitted").length;

    const a = (await createApiKey(ports.keys, { name: "a", scopes: ["render"] })).record.id;
    const b = (await createApiKey(ports.keys, { name: "b", scopes: ["render"] })).record.id;
    const big = (await startRun(deps, { ownerKeyId: a, manifest: manifest("huge", 500), trigger: "manual" })).run;
    const small = (await startRun(deps, { ownerKeyId: b, manifest: manifest("small", 10), trigger: "manual" })).run;
    // Key a's 500 renders take its window only: key b's run is in the lane at once beside them.
    assert.equal(await submitted(a, big.id), 6);
    assert.equal(await submitted(b, small.id), 6);

    // Two runs of one key with equal priority alternate; a higher priority run is fed first.
    const c = (await createApiKey(ports.keys, { name: "c", scopes: ["render"] })).record.id;
    const x = (await startRun(deps, { ownerKeyId: c, manifest: manifest("x", 20), trigger: "manual" })).run;
    assert.equal(await submitted(c, x.id), 6);
    const y = (await startRun(deps, { ownerKeyId: c, manifest: manifest("y", 20), trigger: "manual" })).run;
    const z = (await startRun(deps, { ownerKeyId: c, manifest: manifest("z", 20), trigger: "manual" })).run;
    // The window is full: nothing more until renders end. End x's six (as canceled renders) and pump.
    assert.equal((await submitted(c, y.id)) + (await submitted(c, z.id)), 0);
    for (const r of (await getRun(deps, c, x.id))!.renders.filter((r) => r.state === "submitted")) {
      await ports.jobs.update(r.jobId, { status: ["queued"] }, { status: "canceled" });
    }
    await pumpKey(deps, c);
    assert.deepEqual([await submitted(c, x.id), await submitted(c, y.id), await submitted(c, z.id)], [8, 2, 2]);
    const urgent = (await startRun(deps, { ownerKeyId: c, manifest: manifest("urgent", 5, 9), trigger: "manual" })).run;
    for (const id of [x.id, y.id, z.id]) {
      for (const r of (await getRun(deps, c, id))!.renders.filter((r) => r.state === "submitted")) {
        await ports.jobs.update(r.jobId, { status: ["queued"] }, { status: "canceled" });
      }
    }
    await pumpKey(deps, c);
    assert.equal(await submitted(c, urgent.id), 5);
  });

  it("cancelling a run cancels its queued renders and never submits the rest", async () => {
    const deps = batchTestDeps(ports, { window: 3 });
    const d = (await createApiKey(ports.keys, { name: "d", scopes: ["render"] })).record.id;
    const manifest = manifestSchema.parse({
      id: "stop-me",
      defaults: { steps: 2, width: 64, height: 64, mode: "base" },
      prompts: ["x"],
      seeds: [1, 2, 3, 4, 5, 6, 7, 8],
    });
    const { run } = await startRun(deps, { ownerKeyId: d, manifest, trigger: "manual" });
    const canceled = (await cancelRun(deps, d, run.id))!;
    assert.equal(canceled.status, "canceled");
    assert.deepEqual([canceled.counts.new, canceled.counts.failed, canceled.counts.queued], [8, 3, 5]);
    const jobs = (await ports.jobs.listByOwner(d, { limit: 100 })).jobs;
    assert.equal(jobs.length, 3);
    assert.ok(jobs.every((j) => j.status === "canceled"));
    await pumpKey(deps, d);
    assert.equal((await ports.jobs.listByOwner(d, { limit: 100 })).jobs.length, 3, "nothing submitted after cancel");
  });
});
