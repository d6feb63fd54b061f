import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { NoiseSource } from "../src/engine/noise.js";
import { createScheduler, parseSchedulerConfig, type SchedulerName } from "../src/engine/schedulers/index.js";

/** The pipeline steps latents in place and hands ancestral steps pre-drawn noise: both must change nothing. */
const SDXL = parseSchedulerConfig(
  {
    _class_name: "EulerDiscreteScheduler",
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: "scaled_linear",
    steps_offset: 1,
    timestep_spacing: "leading",
  },
  "scheduler_config.json",
);

const values = (n: number, seed: number) => new NoiseSource(seed).randn(n);

function run(name: SchedulerName, karras: boolean, mode: "new" | "in-place" | "pre-drawn"): Float32Array {
  const s = createScheduler(SDXL, { name, karras });
  s.setTimesteps(8);
  let x: Float32Array = values(256, 1).map((v) => v * s.initNoiseSigma);
  const generator = new NoiseSource(99);
  for (let i = 0; i < 8; i++) {
    const model = s.scaleModelInput(x).map((v, k) => Math.tanh(v + k * 1e-3));
    if (mode === "new") x = s.step(model, x, generator);
    else if (mode === "in-place") s.step(model, x, generator, x);
    else s.step(model, x, s.stochastic ? generator.randn(x.length) : undefined, x);
  }
  return x;
}

describe("scheduler step buffers", () => {
  for (const [name, karras] of [
    ["euler", false],
    ["euler", true],
    ["euler_a", false],
    ["dpmpp_2m", false],
    ["dpmpp_2m", true],
    ["ddim", false],
  ] as const) {
    it(`${name}${karras ? " + karras" : ""}: stepping in place and with pre-drawn noise gives the same latents`, () => {
      const reference = run(name, karras, "new");
      assert.deepEqual(run(name, karras, "in-place"), reference);
      assert.deepEqual(run(name, karras, "pre-drawn"), reference);
    });
  }

  it("only euler_a is stochastic", () => {
    const stochastic = (["euler", "euler_a", "dpmpp_2m", "ddim"] as const).filter(
      (name) => createScheduler(SDXL, { name }).stochastic,
    );
    assert.deepEqual(stochastic, ["euler_a"]);
  });

  it("modelInputDivisor is what scaleModelInput divides by", () => {
    for (const name of ["euler", "euler_a", "dpmpp_2m", "ddim"] as const) {
      const s = createScheduler(SDXL, { name });
      s.setTimesteps(10);
      s.setBeginIndex(3);
      const x = values(64, 5);
      const d = s.modelInputDivisor();
      assert.deepEqual(
        s.scaleModelInput(x),
        x.map((v) => v / d),
        name,
      );
      if (name.startsWith("euler")) assert.ok(d > 1, `${name}: √(σ²+1) > 1`);
      else assert.equal(d, 1, name);
    }
  });

  it("refuses an output buffer or pre-drawn noise of the wrong size", () => {
    const s = createScheduler(SDXL, { name: "euler_a" });
    s.setTimesteps(4);
    const x = values(16, 1);
    assert.throws(() => s.step(x, x, new Float32Array(15)), /noise values/);
    assert.throws(() => s.step(x, x, new Float32Array(16), new Float32Array(8)), /output/);
  });
});
