import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { planRender, type RenderRequestInput, renderRequestSchema, type SchedulerName } from "@kiln/shared";

import { createScheduler, parseSchedulerConfig } from "../src/engine/schedulers/index.js";
import { stageSchedule } from "../src/engine/sdxl-pipeline.js";
import { SDXL_SCHEDULER_CONFIG } from "../src/models/tiny-models.js";

/**
 * The slices of the schedule each stage runs, through `stageSchedule` as the pipeline calls it, for SDXL's
 * scheduler config (scaled_linear, leading spacing, steps_offset 1). Expected values are worked out by hand from
 * diffusers' formulas:
 * - Euler and DDIM, leading: t_i = (N − 1 − i)·⌊1000/N⌋ + 1;
 * - DPM-Solver, leading: t_i = (N − i)·⌊1000/(N + 1)⌋ + 1;
 * - ensemble: cutoff = round(1000 − frac·1000); the base runs the t ≥ cutoff, the refiner the rest (order 1);
 * - SDEdit: begin = N − ⌊N·strength⌋, noise added at timesteps[begin].
 */
const SDXL = SDXL_SCHEDULER_CONFIG;

function scheduleFor(name: SchedulerName, body: Partial<RenderRequestInput>, karras?: boolean) {
  const plan = planRender(renderRequestSchema().parse({ prompt: "x", ...body }), 1);
  const scheduler = createScheduler(parseSchedulerConfig(SDXL, "scheduler_config.json"), { name, karras });
  scheduler.setTimesteps(plan.steps);
  const stages = plan.stages.map((stage) => stageSchedule(scheduler, plan, stage));
  return { scheduler, stages, timesteps: Array.from(scheduler.timesteps) };
}

describe("ensemble: base [0, end), refiner [begin, N)", () => {
  // [scheduler, steps, high_noise_frac, base steps, first refiner timestep]
  const cases: [SchedulerName, number, number, number, number][] = [
    ["euler", 40, 0.8, 32, 176], // FACTS.md: 976…201 then 176…1
    ["euler", 30, 0.8, 23, 199], // ratio 33: (29 − 23)·33 + 1
    ["euler", 50, 0.8, 40, 181], // ratio 20: (49 − 40)·20 + 1
    ["euler", 30, 0.7, 20, 298], // cutoff 300: (29 − i)·33 + 1 ≥ 300 ⇔ i ≤ 19
    ["euler_a", 25, 0.6, 15, 361], // ratio 40, cutoff 400: (24 − i)·40 + 1 ≥ 400 ⇔ i ≤ 14
    ["ddim", 30, 0.8, 23, 199],
    ["ddim", 50, 0.5, 25, 481], // cutoff 500: (49 − i)·20 + 1 ≥ 500 ⇔ i ≤ 24
    ["dpmpp_2m", 30, 0.8, 24, 193], // ratio ⌊1000/31⌋ = 32: (30 − i)·32 + 1 ≥ 200 ⇔ i ≤ 23
    ["dpmpp_2m", 30, 0.7, 21, 289], // (30 − i)·32 + 1 ≥ 300 ⇔ i ≤ 20
    ["dpmpp_2m", 40, 0.8, 32, 193], // ratio ⌊1000/41⌋ = 24: (40 − i)·24 + 1 ≥ 200 ⇔ i ≤ 31
  ];
  for (const [name, steps, frac, baseSteps, firstRefiner] of cases) {
    it(`${name}, ${steps} steps, high_noise_frac ${frac}: base ${baseSteps}, refiner ${steps - baseSteps} from t = ${firstRefiner}`, () => {
      const { stages, timesteps } = scheduleFor(name, { mode: "ensemble", steps, high_noise_frac: frac });
      assert.deepEqual(stages[0], { begin: 0, end: baseSteps });
      assert.deepEqual(stages[1], { begin: baseSteps, end: steps });
      assert.equal(timesteps[baseSteps], firstRefiner);
    });
  }

  for (const name of ["euler", "dpmpp_2m"] as const) {
    it(`${name} with Karras sigmas: the cut falls between the last t ≥ cutoff and the first t < cutoff`, () => {
      for (const [steps, frac] of [
        [30, 0.8],
        [20, 0.65],
      ] as const) {
        const { stages, timesteps } = scheduleFor(name, { mode: "ensemble", steps, high_noise_frac: frac }, true);
        const cutoff = Math.round(1000 - frac * 1000);
        const end = stages[0]!.end;
        assert.equal(stages[1]!.begin, end, "order 1: the refiner starts where the base ends");
        assert.ok(end > 0 && end < steps);
        assert.ok(
          timesteps[end - 1]! >= cutoff && timesteps[end]! < cutoff,
          `${timesteps[end - 1]} ≥ ${cutoff} > ${timesteps[end]}`,
        );
      }
    });
  }
});

describe("SDEdit: begin = N − ⌊N·strength⌋", () => {
  // [scheduler, steps, strength, begin, timestep where the noise is added]
  const cases: [SchedulerName, number, number, number, number][] = [
    ["euler", 50, 0.3, 35, 281], // FACTS.md: 15 steps from t = 281
    ["euler", 30, 0.5, 15, 463],
    ["euler", 20, 0.25, 15, 201],
    ["euler", 30, 1, 0, 958],
    ["euler_a", 30, 0.3, 21, 265],
    ["ddim", 50, 0.3, 35, 281],
    ["dpmpp_2m", 50, 0.3, 35, 286], // ratio ⌊1000/51⌋ = 19: (50 − 35)·19 + 1
    ["dpmpp_2m", 30, 0.7, 9, 673], // ⌊30·0.7⌋ = 21 (30·0.7 is 21.000000000000004): (30 − 9)·32 + 1
  ];
  for (const [name, steps, strength, begin, t] of cases) {
    it(`${name}, ${steps} steps, strength ${strength}: ${steps - begin} steps from t = ${t}`, () => {
      const { stages, timesteps } = scheduleFor(name, { mode: "sdedit", steps, strength });
      assert.deepEqual(stages[0], { begin: 0, end: steps }, "the base runs the whole schedule");
      assert.deepEqual(stages[1], { begin, end: steps });
      assert.equal(timesteps[begin], t);
    });
  }

  it("a strength that leaves no step is refused at submit, naming strength and steps", () => {
    // The request schema refuses it before any stage runs (no base stage is spent on a job that cannot finish).
    assert.throws(
      () => scheduleFor("euler", { mode: "sdedit", steps: 20, strength: 0.04 }),
      (e: unknown) =>
        /strength × steps must be at least 1/.test(String((e as Error).message)) &&
        /"strength"/.test(String((e as Error).message)) &&
        /"steps"/.test(String((e as Error).message)),
    );
  });
});
