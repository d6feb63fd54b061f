import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { KilnError } from "@kiln/shared";

import { createScheduler, parseSchedulerConfig } from "../src/engine/schedulers/index.js";
import { ensembleSplit, sdeditStart } from "../src/engine/stage-split.js";
import { SDXL_SCHEDULER_CONFIG } from "../src/models/tiny-models.js";

const SDXL = SDXL_SCHEDULER_CONFIG;

function eulerSdxl(steps: number) {
  const s = createScheduler(parseSchedulerConfig(SDXL, "scheduler_config.json"));
  s.setTimesteps(steps);
  return s;
}

const isSplitError = (e: unknown) => e instanceof KilnError && e.code === "stage_split_invalid";

describe("ensembleSplit (denoising_end / denoising_start)", () => {
  it("Euler leading, 40 steps, frac 0.8: cutoff 200, base 976…201, refiner 176…1, handover σ ≈ 0.5154", () => {
    const s = eulerSdxl(40);
    const split = ensembleSplit(s.timesteps, 0.8, s.order);
    assert.deepEqual(split, { base: 32, refinerStartIndex: 32, refinerSteps: 8, cutoff: 200 });
    assert.equal(s.timesteps[0], 976);
    assert.equal(s.timesteps[split.base - 1], 201);
    assert.equal(s.timesteps[split.refinerStartIndex], 176);
    assert.equal(s.timesteps[39], 1);
    assert.ok(Math.abs(s.sigmaAt(split.base) - 0.5154) < 1e-4, `σ at the handover ${s.sigmaAt(split.base)}`);
  });

  it("splits 30 steps 23/7 and 50 steps 40/10", () => {
    for (const [steps, base, refiner] of [
      [30, 23, 7],
      [50, 40, 10],
    ] as const) {
      const s = eulerSdxl(steps);
      const split = ensembleSplit(s.timesteps, 0.8, s.order);
      assert.equal(split.base, base, `${steps} steps: base`);
      assert.equal(split.refinerSteps, refiner, `${steps} steps: refiner`);
      assert.equal(split.refinerStartIndex, steps - refiner);
    }
  });

  it("adds one refiner step for an order-2 scheduler when the count below the cutoff is even", () => {
    // Heun-like: every timestep after the first appears twice.
    const heun = Float64Array.from([999, 800, 800, 600, 600, 400, 400, 200, 200, 100, 100]);
    const two = ensembleSplit(heun, 0.8, 2);
    assert.deepEqual(two, { base: 9, refinerStartIndex: 8, refinerSteps: 3, cutoff: 200 });
    const one = ensembleSplit(heun, 0.8, 1);
    assert.deepEqual(one, { base: 9, refinerStartIndex: 9, refinerSteps: 2, cutoff: 200 });
    // An odd count is left alone.
    assert.equal(ensembleSplit(Float64Array.from([999, 500, 500, 100]), 0.8, 2).refinerSteps, 1);
  });

  it("rounds the cutoff as Python does (halves to even)", () => {
    // 8 − 0.4375·8 = 4.5 → 4 (JavaScript's Math.round would give 5)
    assert.equal(ensembleSplit(Float64Array.from([7, 5, 4, 3, 1]), 0.4375, 1, 8).cutoff, 4);
    assert.equal(ensembleSplit(Float64Array.from([7, 5, 4, 3, 1]), 0.3125, 1, 8).cutoff, 6); // 5.5 → 6
  });

  it("refuses fractions outside (0, 1)", () => {
    const ts = eulerSdxl(10).timesteps;
    for (const frac of [0, 1, -0.2, 1.5, Number.NaN]) assert.throws(() => ensembleSplit(ts, frac, 1), isSplitError);
  });
});

describe("sdeditStart (strength)", () => {
  it("50 steps at strength 0.3 run 15 steps from t = 281", () => {
    const start = sdeditStart(50, 0.3, 1);
    assert.deepEqual(start, { tStart: 35, initTimestepIndex: 35, steps: 15 });
    const s = eulerSdxl(50);
    assert.equal(s.timesteps[start.initTimestepIndex], 281);
    assert.equal(s.timesteps.length - start.initTimestepIndex, 15);
  });

  it("truncates N·strength, scales the start index by the order, and runs everything at strength 1", () => {
    assert.deepEqual(sdeditStart(30, 0.55, 1), { tStart: 14, initTimestepIndex: 14, steps: 16 }); // int(16.5) = 16
    assert.deepEqual(sdeditStart(30, 0.55, 2), { tStart: 14, initTimestepIndex: 28, steps: 16 });
    assert.deepEqual(sdeditStart(20, 1, 1), { tStart: 0, initTimestepIndex: 0, steps: 20 });
  });

  it("refuses strengths outside [0, 1] and strengths that leave no step", () => {
    for (const strength of [-0.1, 1.1, Number.NaN]) assert.throws(() => sdeditStart(50, strength, 1), isSplitError);
    assert.throws(() => sdeditStart(50, 0.01, 1), isSplitError); // int(0.5) = 0 steps
  });
});
