import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { KilnError, type Ports, type WorkerBeat } from "@kiln/shared";
import { openTempLocalPorts, type TempLocalPorts } from "@kiln/shared/testing";

import { nullExecutor, type StageExecutor, startHealthServer, Worker } from "../src/index.js";
import { submit, testLogger as logger, until } from "./support/worker-harness.js";

describe("worker runtime: health, metrics, registry beats", () => {
  let local: TempLocalPorts;
  let ports: Ports;
  let worker: Worker;
  let health: Awaited<ReturnType<typeof startHealthServer>>;
  let base: string;
  const beats: WorkerBeat[] = [];
  /** The refine stage of a job whose prompt says "hold" waits until its id is released, so a test can look at a running worker. */
  const released = new Set<string>();
  const releaseHeld = (id: string) => released.add(id);

  before(async () => {
    local = openTempLocalPorts({
      prefix: "kiln-runtime-",
      publicBaseUrl: "http://127.0.0.1:9",
      urlSecret: "runtime-test-secret-0123456789",
      maxReceives: 3,
    });
    ports = local.ports;
    const registry = ports.workers!;
    // Recorded on the way to the real registry: how often the worker writes, not what it would write.
    ports.workers = { heartbeat: (b) => (beats.push(b), registry.heartbeat(b)), list: (s) => registry.list(s) };
    const inner = nullExecutor();
    const execute: StageExecutor = async (job, stage, input, hooks) => {
      if (job.plan.prompt === "broken model")
        throw new KilnError("model_mismatch", "The UNet takes 1280-wide embeddings.");
      while (job.plan.prompt === "hold" && stage.index === 1 && !released.has(job.id))
        await new Promise((r) => setTimeout(r, 10));
      for (let i = 1; i <= 4; i++) await hooks.onStep?.(i, 4, new Float32Array(0), []);
      return { ...(await inner(job, stage, input, hooks)), steps: 4 };
    };
    worker = new Worker({
      ports,
      execute,
      logger,
      stages: ["base", "refine"],
      concurrency: 1,
      visibilitySeconds: 30,
      maxReceives: 3,
      pollWaitSeconds: 0.2,
      beatIntervalMs: 5_000,
      workerId: "w-test",
    });
    worker.start();
    health = await startHealthServer(
      worker,
      { models: { base: { dir: "/models/base", providers: ["cuda", "cpu"], tiny: false } } },
      0,
    );
    base = `http://127.0.0.1:${(health.address() as { port: number }).port}`;
  });
  after(async () => {
    for (const job of (await ports.jobs.listByOwner("k", { limit: 100 })).jobs) releaseHeld(job.id);
    await worker.drain(5);
    await new Promise<void>((r) => health.close(() => r()));
    await local.close();
  });

  it("GET /healthz names the models, providers, last successful poll and the job it runs", async () => {
    const job = await submit(ports, { prompt: "hold", mode: "ensemble", width: 64, height: 64, steps: 10 });
    const seen = await until(async () => {
      const body = (await (await fetch(`${base}/healthz`)).json()) as {
        current: { jobId: string; stage: number; kind: string }[];
      };
      return body.current.some((c) => c.kind === "refine") ? body : undefined;
    }, "the worker to report the held stage");
    const res = await fetch(`${base}/healthz`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as Record<string, any>;
    assert.equal(body.state, "running");
    assert.equal(body.workerId, "w-test");
    assert.deepEqual(body.stages, ["base", "refine"]);
    assert.deepEqual(body.models.base, { dir: "/models/base", providers: ["cuda", "cpu"], tiny: false });
    assert.ok(Date.now() - Date.parse(body.lastPollAt) < 5_000, "a recent successful poll");
    assert.deepEqual(
      seen.current.map((c) => [c.jobId, c.stage, c.kind]),
      [[job.id, 1, "refine"]],
    );
    releaseHeld(job.id);
    await until(async () => (await ports.jobs.get(job.id))?.status === "succeeded", "the held job to finish");
  });

  it("GET /metrics exposes queue wait, stage seconds, steps/s, hand-over seconds and failures by code", async () => {
    const failing = await submit(ports, { prompt: "broken model", mode: "base", width: 64, height: 64, steps: 4 });
    const failed = await until(async () => {
      const j = await ports.jobs.get(failing.id);
      return j?.status === "failed" ? j : undefined;
    }, "the broken job to fail");
    assert.equal(failed.error?.code, "model_mismatch");
    const res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/plain/);
    const text = await res.text();
    for (const series of [
      /^kiln_queue_wait_seconds_count\{kind="base"\} [1-9]/m,
      /^kiln_stage_seconds_count\{kind="base",outcome="handed-over"\} [1-9]/m,
      /^kiln_stage_seconds_count\{kind="refine",outcome="succeeded"\} [1-9]/m,
      /^kiln_handoff_seconds_count\{kind="base"\} [1-9]/m,
      /^kiln_steps_per_second\{kind="base"\} [0-9.e+]+$/m,
      /^kiln_denoise_steps_total\{kind="base"\} [1-9]/m,
      /^kiln_stage_failures_total\{kind="base",code="model_mismatch"\} 1$/m,
      /^kiln_stage_deliveries_total\{kind="base",outcome="failed"\} 1$/m,
      /^kiln_last_poll_timestamp_seconds [1-9]/m,
    ]) {
      assert.match(text, series);
    }
  });

  it("beats into the worker registry on polls, coalesced, and says when it is busy", async () => {
    const listed = await ports.workers!.list(Date.now() - 60_000);
    assert.deepEqual(
      listed.map((b) => [b.workerId, b.stages]),
      [["w-test", ["base", "refine"]]],
    );
    // Polls every 0.2 s for a second while idle: no new write inside the 5 s interval.
    const before = beats.length;
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(beats.length, before, "idle polls within the interval are coalesced");
    // Claiming a stage changes the load, which is written at once.
    const job = await submit(ports, { prompt: "hold", mode: "ensemble", width: 64, height: 64, steps: 10 });
    await until(async () => beats.slice(before).some((b) => b.busy === 1), "a busy beat");
    assert.equal((await ports.workers!.list(Date.now() - 60_000))[0]?.busy, 1);
    releaseHeld(job.id);
    await until(async () => (await ports.jobs.get(job.id))?.status === "succeeded", "the job to finish");
    await until(async () => beats.at(-1)?.busy === 0, "an idle beat after the job");
  });

  it("GET /healthz answers 503 once the worker drains", async () => {
    await worker.drain(1);
    const res = await fetch(`${base}/healthz`);
    assert.equal(res.status, 503);
    assert.equal(((await res.json()) as { state: string }).state, "stopped");
  });
});
