/**
 * The worker with batching on (KILN_WORKER_BATCH) on the local family (real SQLite queue and stores, tiny models):
 * stages claimed together denoise in one UNet batch and give the images the same jobs give run one at a time,
 * pipelined or not; a cancel of one job mid-batch ends only that job; a drain past its grace releases the whole
 * batch; a delivery that ends before computing and stages that cannot share a batch hold nobody up; every message
 * is acknowledged. The UNet's calls are observed (batch sizes) by wrapping the session's `run`, which still runs.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { type JobRecord, type Ports, queueForStage } from "@kiln/shared";
import { openTempLocalPorts, type TempLocalPorts } from "@kiln/shared/testing";

import { type ModelSet, sdxlExecutor, type SdxlModel, type StageExecutor, Worker } from "../../src/index.js";
import { Holds, loadTinyModelSet, submit, testLogger as logger, until } from "../support/worker-harness.js";
import { recordUnetRows } from "./unet-calls.js";

const SMALL = { prompt: "a small boat", width: 64, height: 64, steps: 6 } as const;

describe("worker batching (KILN_WORKER_BATCH)", { timeout: 240_000 }, () => {
  let models: ModelSet;
  let tiny: Awaited<ReturnType<typeof loadTinyModelSet>>;
  const opened: TempLocalPorts[] = [];
  const workers: Worker[] = [];
  /** Rows of every UNet call, per model. */
  const calls = new Map<SdxlModel, number[]>();

  before(async () => {
    tiny = await loadTinyModelSet("kiln-batching-models-");
    models = tiny.models;
    for (const m of [models.base!, models.refiner!]) {
      calls.set(m, recordUnetRows(m));
    }
  });
  after(async () => {
    for (const w of workers) await w.drain(0);
    for (const p of opened) await p.close();
    await tiny?.release();
  });

  const unetRows = () => [...calls.get(models.base!)!, ...calls.get(models.refiner!)!];
  const resetCalls = () => {
    for (const seen of calls.values()) seen.length = 0;
  };

  function openPorts(): Ports {
    const local = openTempLocalPorts({ prefix: "kiln-batching-", maxReceives: 3 });
    opened.push(local);
    return local.ports;
  }

  function startWorker(
    ports: Ports,
    options: { batch: number; pipelined: boolean; holds?: Holds; execute?: StageExecutor },
  ): Worker {
    const worker = new Worker({
      ports,
      execute: options.execute ?? sdxlExecutor(models, { blobs: ports.blobs }),
      logger,
      stages: ["base", "refine"],
      concurrency: 1,
      visibilitySeconds: 30,
      maxReceives: 3,
      pollWaitSeconds: 1,
      cancelPollMs: 20,
      deadLetterSweepMs: 60_000,
      pause: options.holds?.pause,
      pipelined: options.pipelined,
      batch: options.batch,
    });
    workers.push(worker);
    worker.start();
    return worker;
  }

  const ended = (ports: Ports, id: string) =>
    until(async () => {
      const j = await ports.jobs.get(id);
      return j && ["succeeded", "failed", "canceled", "expired"].includes(j.status) ? j : undefined;
    }, `job ${id} to end`);

  async function imagesOf(ports: Ports, job: JobRecord): Promise<Buffer[]> {
    return Promise.all(job.images.map(async (i) => Buffer.from((await ports.blobs.get(i.key))!)));
  }

  async function queuesEmpty(ports: Ports): Promise<void> {
    for (const kind of ["base", "refine"] as const)
      assert.deepEqual(await ports.queue.depth(queueForStage(kind)), { visible: 0, inFlight: 0, delayed: 0 }, kind);
  }

  /** Runs `bodies` queued before the worker starts; returns each job's images and the UNet calls' rows. */
  async function runAll(bodies: Record<string, unknown>[], batch: number, pipelined: boolean) {
    const ports = openPorts();
    const jobs: JobRecord[] = [];
    for (const body of bodies) jobs.push(await submit(ports, body));
    resetCalls();
    const worker = startWorker(ports, { batch, pipelined });
    const done = await Promise.all(jobs.map((j) => ended(ports, j.id)));
    await worker.drain(5);
    for (const j of done) assert.equal(j.status, "succeeded", JSON.stringify(j.error));
    await queuesEmpty(ports);
    const metrics = await worker.metrics.registry.metrics();
    return { images: await Promise.all(done.map((j) => imagesOf(ports, j))), rows: unetRows(), metrics };
  }

  const BODIES = [
    { ...SMALL, mode: "ensemble", seed: 1 },
    { ...SMALL, mode: "ensemble", seed: 2, prompt: "a lighthouse", guidance_scale: 7 },
    { ...SMALL, mode: "ensemble", seed: 3, n: 2, scheduler: "euler_a" },
    { ...SMALL, mode: "ensemble", seed: 4, negative_prompt: "fog", guidance_rescale: 0.5 },
  ];

  it("stages claimed together give the images the jobs give one at a time (ensemble, n = 1 and 2; pipelined or not)", async () => {
    const alone = await runAll(BODIES, 1, true);
    assert.ok(Math.max(...alone.rows) <= 4, `one job per UNet call without batching (${alone.rows})`);
    for (const pipelined of [true, false]) {
      const grouped = await runAll(BODIES, 4, pipelined);
      // The four base stages were queued together: one claim, one batch of 2 + 2 + 4 + 2 rows for each of the
      // base's 5 steps (the refine stages join in batches as their hand-overs arrive).
      assert.ok(grouped.rows.filter((r) => r === 10).length >= 5, `base stages in one batch (${grouped.rows})`);
      // The first receive of the base queue took all four messages.
      assert.match(grouped.metrics, /kiln_stages_claimed_together_bucket\{le="4",kind="base"\} 1\n/);
      assert.match(grouped.metrics, /kiln_stages_claimed_together_bucket\{le="3",kind="base"\} 0\n/);
      grouped.images.forEach((images, j) => {
        assert.equal(images.length, j === 2 ? 2 : 1);
        images.forEach((image, i) => assert.ok(image.equals(alone.images[j]![i]!), `job ${j} image ${i} identical`));
      });
    }
  });

  it("a cancel of one job mid-batch ends only that job; the others give the images they give alone", async () => {
    const bodies = BODIES.slice(0, 3).map((b) => ({ ...b, mode: "base" }));
    const alone = await runAll(bodies, 1, true);
    const ports = openPorts();
    const jobs: JobRecord[] = [];
    for (const body of bodies) jobs.push(await submit(ports, body));
    const holds = new Holds();
    const held = holds.arm("stage0-step2");
    const signals = new Map<string, AbortSignal>();
    const sdxl = sdxlExecutor(models, { blobs: ports.blobs });
    resetCalls();
    const worker = startWorker(ports, {
      batch: 4,
      pipelined: true,
      holds,
      // Observes each stage's signal (to let the batch go on once the cancel has reached it), then runs the stage.
      execute: (job, stage, input, hooks) => {
        if (hooks.signal) signals.set(job.id, hooks.signal);
        return sdxl(job, stage, input, hooks);
      },
    });
    await held.reached;
    const victim = jobs[1]!;
    await ports.jobs.update(victim.id, { status: ["running"] }, { cancelRequested: true });
    await until(async () => signals.get(victim.id)?.aborted, "the cancel to reach the stage");
    held.release();
    const done = await Promise.all(jobs.map((j) => ended(ports, j.id)));
    await worker.drain(5);
    assert.equal(done[1]!.status, "canceled");
    assert.equal(done[1]!.images.length, 0);
    assert.deepEqual(unetRows(), [8, 8, 6, 6, 6, 6], "2 + 2 + 4 rows for two steps, then without job 1's 2");
    for (const j of [0, 2]) {
      assert.equal(done[j]!.status, "succeeded");
      const images = await imagesOf(ports, done[j]!);
      images.forEach((image, i) => assert.ok(image.equals(alone.images[j]![i]!), `job ${j} image ${i} identical`));
    }
    await queuesEmpty(ports);
  });

  it("a drain whose grace runs out mid-batch releases every message of the batch for another worker", async () => {
    const ports = openPorts();
    const bodies = BODIES.slice(0, 3).map((b) => ({ ...b, mode: "base" }));
    const jobs: JobRecord[] = [];
    for (const body of bodies) jobs.push(await submit(ports, body));
    const holds = new Holds();
    const held = holds.arm("stage0-step2");
    resetCalls();
    const worker = startWorker(ports, { batch: 4, pipelined: true, holds });
    await held.reached;
    const drained = worker.drain(0);
    // The grace (0 s) has run out once the timer fires; the batch then stops at its next step boundary.
    await new Promise((r) => setTimeout(r, 0));
    held.release();
    await drained;
    assert.deepEqual(unetRows(), [8, 8], "the batch stopped after its second step");
    for (const j of jobs) assert.equal((await ports.jobs.get(j.id))!.status, "queued", `${j.id} queued again`);
    assert.deepEqual(await ports.queue.depth(queueForStage("base")), { visible: 3, inFlight: 0, delayed: 0 });
    const next = startWorker(ports, { batch: 4, pipelined: true });
    const done = await Promise.all(jobs.map((j) => ended(ports, j.id)));
    await next.drain(5);
    assert.deepEqual(
      done.map((j) => j.status),
      ["succeeded", "succeeded", "succeeded"],
    );
    await queuesEmpty(ports);
  });

  it("a message that ends before computing and stages that cannot share a batch hold nobody up", async () => {
    const ports = openPorts();
    const bodies = [
      { ...SMALL, mode: "base", seed: 11 },
      { ...SMALL, mode: "base", seed: 12, width: 128, height: 128 },
      { ...SMALL, mode: "base", seed: 13, steps: 4 },
      { ...SMALL, mode: "base", seed: 14 },
    ];
    const jobs: JobRecord[] = [];
    for (const body of bodies) jobs.push(await submit(ports, body));
    // Canceled while queued: its delivery ends in its precheck, before the group's batch.
    await ports.jobs.update(jobs[3]!.id, { status: ["queued"] }, { cancelRequested: true });
    resetCalls();
    const worker = startWorker(ports, { batch: 4, pipelined: true });
    const done = await Promise.all(jobs.map((j) => ended(ports, j.id)));
    await worker.drain(5);
    assert.deepEqual(
      done.map((j) => j.status),
      ["succeeded", "succeeded", "succeeded", "canceled"],
    );
    assert.ok(
      unetRows().every((r) => r === 2),
      `three stages of other sizes and steps, each in its own batch of one CFG pair (${unetRows()})`,
    );
    assert.equal(unetRows().length, 6 + 6 + 4);
    await queuesEmpty(ports);
  });
});
