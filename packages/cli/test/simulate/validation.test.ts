import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { GPU_PROFILES, renderSeconds, type RenderShape, stageSteps } from "@kiln/gpu-worker";
import { createLogger } from "@kiln/shared/node";

import { fileTrace } from "../../src/simulate/traces.js";
import {
  overheadPerStage,
  predict,
  type RealRun,
  type RealStack,
  SCENARIO,
  startRealStack,
  validationProfile,
  workerModel,
} from "../../src/simulate/validation.js";

/**
 * The simulator against the real runtime, on a short trace. Speed is not asserted here (the 10 %
 * comparison is `npm run bench -- simulate-validate`); what is asserted holds however loaded the
 * machine is: the GPU work the runtime asks for is exactly the simulator's, CPU and load only ever
 * add time (so the simulator with no CPU overhead and no poll wait is a lower bound per render), a
 * render queued behind a full fleet waits at least a whole render of GPU time in both, and renders
 * the calibrated simulator finishes far apart finish in the same order.
 */
const ensemble: RenderShape = { width: 256, height: 256, steps: 30, mode: "ensemble", n: 1 };
const trace = [
  // A burst of four on two workers: the last two wait for a whole render (queue-wait dominated).
  ...[0, 0.01, 0.02].map((t) => ({ t, shape: ensemble })),
  { t: 0.03, shape: { ...ensemble, mode: "base" as const } },
  // Later, once the burst has (most likely) cleared.
  { t: 6, shape: { ...ensemble, n: 2 } },
  { t: 6.05, shape: ensemble },
];

/** The scenario's real stack, its workers' sessions and the API's submit path run once so a burst arrives as one. */
async function startWarmStack(
  root: string,
  profile: ReturnType<typeof validationProfile>,
  env?: Record<string, string>,
): Promise<RealStack> {
  const stack = await startRealStack({
    root,
    workers: SCENARIO.workers,
    profile,
    logger: createLogger({ level: "silent" }),
    pollSeconds: SCENARIO.pollSeconds,
    ...(env ? { env } : {}),
  });
  await stack.run([0, 0].map((t) => ({ t, shape: ensemble })));
  return stack;
}

describe("kiln simulate against the real local stack, unpipelined workers", { timeout: 120_000 }, () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-simval-test-"));
  const profile = validationProfile(GPU_PROFILES[SCENARIO.gpu]!, SCENARIO.timeScale, 0);
  let stack: RealStack;
  let real: RealRun;

  before(async () => {
    stack = await startWarmStack(root, profile, { KILN_WORKER_PIPELINE: "false" });
    assert.deepEqual(workerModel(stack.config), { pipelined: false, maxBatch: 1 });
    real = await stack.run(trace);
  });
  after(async () => {
    await stack?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  const arrivals = () => real.jobs.map((j) => ({ t: j.arrival, shape: j.shape }));

  it("asks the simulated GPUs for exactly the GPU time the simulator charges for these shapes", () => {
    assert.equal(real.jobs.length, trace.length);
    const charged = trace.reduce((s, a) => s + renderSeconds(profile, a.shape, 1, false), 0);
    assert.ok(
      Math.abs(real.gpuBusySeconds - charged) < 1e-6,
      `runtime ${real.gpuBusySeconds} s, simulator ${charged} s`,
    );
  });

  it("writes the recorded arrivals as a FILE trace that reads back the same", () => {
    const file = path.join(root, "roundtrip.csv");
    predict(file, arrivals(), profile, SCENARIO.workers);
    const read = [...fileTrace(file)];
    const sorted = [...real.jobs].sort((a, b) => a.arrival - b.arrival);
    assert.deepEqual(
      read.map((a) => [a.shape.mode, a.shape.n, a.shape.width, a.shape.steps]),
      sorted.map((j) => [j.shape.mode, j.shape.n, j.shape.width, j.shape.steps]),
    );
    for (const [i, a] of read.entries()) assert.ok(Math.abs(a.t - sorted[i]!.arrival) < 1e-4);
  });

  it("is never faster than the simulator with no CPU overhead and no poll wait", () => {
    const floor = predict(path.join(root, "floor.csv"), arrivals(), profile, SCENARIO.workers, 0);
    for (const j of real.jobs) {
      const bound = floor.done[j.index]! - j.arrival;
      // Records carry milliseconds and a timer may fire up to 1 ms early: 10 ms of slack.
      assert.ok(j.timeToImage >= bound - 0.01, `render ${j.index}: ${j.timeToImage} s < ${bound} s`);
    }
  });

  it("has the renders queued behind a busy fleet wait a whole render, in the simulator and for real", () => {
    const overhead = overheadPerStage(real.jobs);
    assert.ok(overhead > 0, "CPU work between GPU calls shows as overhead");
    const calibrated = predict(
      path.join(root, "calibrated.csv"),
      arrivals(),
      { ...profile, stageOverheadSeconds: overhead },
      SCENARIO.workers,
      SCENARIO.pollSeconds,
    );
    // The burst in the order the API took it: the first two start at once, the other two cannot
    // start before one of them has had a whole render of GPU time — in the simulator and for real.
    const burst = real.jobs.filter((x) => x.index < 4).sort((a, b) => a.arrival - b.arrival);
    const gpu = Math.min(...burst.map((j) => renderSeconds(profile, j.shape, 1, false)));
    const predictedStart = (k: number) =>
      calibrated.done[k]! -
      renderSeconds(profile, real.jobs[k]!.shape, 1, false) -
      overhead * stageSteps(real.jobs[k]!.shape).length;
    const measuredStart = (k: number) => real.jobs[k]!.arrival + real.jobs[k]!.stageTimes[0]![0];
    const [first, second, ...queued] = burst;
    for (const j of queued) {
      const p = Math.min(predictedStart(first!.index), predictedStart(second!.index)) + gpu;
      assert.ok(
        predictedStart(j.index) >= p - 1e-9,
        `render ${j.index}: predicted start ${predictedStart(j.index)} < ${p}`,
      );
      const m = Math.min(measuredStart(first!.index), measuredStart(second!.index)) + gpu - 0.01;
      assert.ok(measuredStart(j.index) >= m, `render ${j.index}: started at ${measuredStart(j.index)} s < ${m} s`);
    }
    // Completion order agrees wherever the simulator puts completions more than two renders apart.
    const apart = 2 * renderSeconds(profile, { ...ensemble, n: 2 }, 1, false);
    for (const a of real.jobs)
      for (const b of real.jobs) {
        if (calibrated.done[b.index]! - calibrated.done[a.index]! > apart)
          assert.ok(a.done < b.done, `render ${a.index} should finish before render ${b.index}`);
      }
  });
});

/**
 * The pipelined worker (the default) against the simulator's `pipelined` model, on a burst that makes a
 * refine stage wait behind a first stage claimed ahead. Asserted, whatever the load: the runtime asks the
 * GPUs for exactly the simulator's GPU time; no render is faster than the model with no CPU work predicts;
 * a GPU with work queued runs stages back to back in the model, so its renders finish by the model's
 * lower bound of one whole render of GPU time apart at most per render; and on each worker the stages
 * claimed ahead ran after the stage on the GPU.
 */
describe("kiln simulate against the real local stack, pipelined workers (the default)", { timeout: 120_000 }, () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-simval-pipe-"));
  const profile = validationProfile(GPU_PROFILES[SCENARIO.gpu]!, SCENARIO.timeScale, 0);
  const burst = [0, 0.01, 0.02, 0.03, 0.04].map((t) => ({ t, shape: ensemble }));
  let stack: RealStack;
  let real: RealRun;

  before(async () => {
    stack = await startWarmStack(root, profile);
    real = await stack.run(burst);
  });
  after(async () => {
    await stack?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it("runs the workers as `kiln worker` does by default: pipelined, one stage per claim", () => {
    assert.deepEqual(workerModel(stack.config), { pipelined: true, maxBatch: 1 });
    assert.equal(real.jobs.length, burst.length);
    const charged = burst.reduce((s, a) => s + renderSeconds(profile, a.shape, 1, false), 0);
    assert.ok(
      Math.abs(real.gpuBusySeconds - charged) < 1e-6,
      `runtime ${real.gpuBusySeconds} s, simulator ${charged} s`,
    );
  });

  it("predicts the burst stage by stage: two GPUs kept busy, no render faster than its GPU work", () => {
    const arrivals = real.jobs.map((j) => ({ t: j.arrival, shape: j.shape }));
    const gpu = renderSeconds(profile, ensemble, 1, false);
    const start = Math.min(...arrivals.map((a) => a.t));
    // Real: each render takes at least its GPU time, and two GPUs need at least half the burst's GPU time.
    for (const j of real.jobs)
      assert.ok(j.timeToImage >= gpu - 0.01, `render ${j.index}: ${j.timeToImage} s < ${gpu} s`);
    assert.ok(Math.max(...real.jobs.map((j) => j.done)) - start >= (burst.length * gpu) / 2 - 0.01);
    // The model with no CPU work and no poll wait: the same bounds, and stages back to back on each GPU, so the
    // last image comes when the GPUs have done the burst's work (three renders on one GPU, or split by stage).
    const floor = predict(
      path.join(root, "floor.csv"),
      arrivals,
      profile,
      SCENARIO.workers,
      0,
      workerModel(stack.config),
    );
    for (const j of real.jobs) assert.ok(floor.done[j.index]! - j.arrival >= gpu - 1e-6);
    const last = Math.max(...floor.done) - start;
    assert.ok(last >= (burst.length * gpu) / 2 - 1e-6 && last <= 3 * gpu + 0.05, `model's last image at ${last} s`);
    // With a CPU figure per stage measured on the run, it predicts every render of the burst.
    const calibrated = predict(
      path.join(root, "calibrated.csv"),
      arrivals,
      { ...profile, stageOverheadSeconds: Math.max(0, overheadPerStage(real.jobs)) },
      SCENARIO.workers,
      SCENARIO.pollSeconds,
      workerModel(stack.config),
    );
    assert.equal(calibrated.result.jobs, burst.length);
    assert.ok(calibrated.result.p95_s >= calibrated.result.p50_s && calibrated.result.p50_s >= gpu);
  });
});
