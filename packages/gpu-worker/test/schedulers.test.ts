import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { KilnError } from "@kiln/shared";

import { NoiseSource } from "../src/engine/noise.js";
import {
  convertLatentSpace,
  createScheduler,
  parseSchedulerConfig,
  parseSchedulerConfigText,
  type Scheduler,
  type SchedulerConfig,
  type SchedulerName,
} from "../src/engine/schedulers/index.js";
import { trainSchedule } from "../src/engine/schedulers/noise-schedule.js";
import { SDXL_SCHEDULER_CONFIG } from "../src/models/tiny-models.js";

const f32 = Math.fround;

// ---- diffusers' tests/schedulers fixtures (test_schedulers.py) ----

/** `dummy_sample_deter` (flip = false) and `dummy_noise_deter` (flip = true): arange(768) laid out as [4, 3, 8, 8]. */
function deterministic(flip: boolean): Float32Array {
  const out = new Float32Array(768);
  for (let b = 0; b < 4; b++)
    for (let c = 0; c < 3; c++)
      for (let h = 0; h < 8; h++)
        for (let w = 0; w < 8; w++) {
          const k = c * 256 + h * 32 + w * 4 + b; // arange(768).reshape(3, 8, 8, 4).permute(3, 0, 1, 2)
          out[((b * 3 + c) * 8 + h) * 8 + w] = (flip ? 767 - k : k) / 768;
        }
  return out;
}

/** `dummy_model`: sample · t / (t + 1), in float32. */
function dummyModel(sample: Float32Array, t: number): Float32Array {
  const tt = f32(t);
  const d = f32(tt + 1);
  return sample.map((x) => f32(f32(x * tt) / d));
}

interface LoopOptions {
  /** The Euler tests start from dummy_sample_deter · init_noise_sigma and feed the scaled sample back. */
  eulerStyle: boolean;
  /** `test_full_loop_with_noise`: add dummy_noise_deter at this schedule index and run from there. */
  noiseAt?: number;
  karras?: boolean;
}

function fullLoop(config: Record<string, unknown>, options: LoopOptions): { sum: number; mean: number } {
  const scheduler = createScheduler(
    parseSchedulerConfig(config, "test"),
    options.karras === undefined ? {} : { karras: options.karras },
  );
  scheduler.setTimesteps(10);
  let sample = deterministic(false);
  if (options.eulerStyle) sample = sample.map((x) => x * scheduler.initNoiseSigma);
  const generator = new NoiseSource(0); // torch.manual_seed(0)
  let start = 0;
  if (options.noiseAt !== undefined) {
    start = options.noiseAt;
    sample = scheduler.addNoise(sample, deterministic(true), start);
    scheduler.setBeginIndex(start);
  }
  for (let i = start; i < scheduler.timesteps.length; i++) {
    if (options.eulerStyle) sample = scheduler.scaleModelInput(sample);
    sample = scheduler.step(dummyModel(sample, scheduler.timesteps[i]!), sample, generator);
  }
  let sum = 0;
  for (const v of sample) sum += Math.abs(v);
  return { sum, mean: sum / sample.length };
}

/** diffusers' tolerances: 1e-2 on sum(|x|), 1e-3 on mean(|x|). */
function assertOracle(result: { sum: number; mean: number }, sum: number | undefined, mean: number): void {
  if (sum !== undefined) assert.ok(Math.abs(result.sum - sum) < 1e-2, `sum ${result.sum}, diffusers expects ${sum}`);
  assert.ok(Math.abs(result.mean - mean) < 1e-3, `mean ${result.mean}, diffusers expects ${mean}`);
}

const EULER_TEST = {
  _class_name: "EulerDiscreteScheduler",
  num_train_timesteps: 1100,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
};
const EULER_A_TEST = { ...EULER_TEST, _class_name: "EulerAncestralDiscreteScheduler" };
const DPM_TEST = {
  _class_name: "DPMSolverMultistepScheduler",
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  solver_order: 2,
  prediction_type: "epsilon",
  thresholding: false,
  sample_max_value: 1.0,
  algorithm_type: "dpmsolver++",
  solver_type: "midpoint",
  lower_order_final: false,
  euler_at_final: false,
  variance_type: null,
  final_sigmas_type: "sigma_min",
};
const DDIM_TEST = {
  _class_name: "DDIMScheduler",
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  clip_sample: true,
};

// stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json, as the tiny models ship it.
const SDXL = SDXL_SCHEDULER_CONFIG;
const sdxl = (): SchedulerConfig => parseSchedulerConfig(SDXL, "scheduler_config.json");

const random = (seed: number, n: number): Float32Array => new NoiseSource(seed).randn(n);

function assertKilnError(fn: () => unknown, code: string, ...mentions: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof KilnError, `expected a KilnError, got ${String(e)}`);
    assert.equal(e.code, code);
    for (const m of mentions) assert.ok(e.message.includes(m), `message should mention ${m}: ${e.message}`);
    return true;
  });
}

describe("diffusers' scheduler test oracles", () => {
  it("EulerDiscrete: full loop, v-prediction, Karras, and from add_noise", () => {
    assertOracle(fullLoop(EULER_TEST, { eulerStyle: true }), 10.0807, 0.0131);
    assertOracle(fullLoop({ ...EULER_TEST, prediction_type: "v_prediction" }, { eulerStyle: true }), 0.0002, 2.2676e-6);
    assertOracle(
      fullLoop({ ...EULER_TEST, use_karras_sigmas: true }, { eulerStyle: true }),
      124.52299499511719,
      0.16213932633399963,
    );
    assertOracle(fullLoop(EULER_TEST, { eulerStyle: true, noiseAt: 8 }), 57062.9297, 74.3007);
  });

  it("EulerAncestralDiscrete with torch.manual_seed(0) noise: full loop, v-prediction, from add_noise", () => {
    assertOracle(fullLoop(EULER_A_TEST, { eulerStyle: true }), 152.3192, 0.1983);
    assertOracle(
      fullLoop({ ...EULER_A_TEST, prediction_type: "v_prediction" }, { eulerStyle: true }),
      108.4439,
      0.1412,
    );
    assertOracle(fullLoop(EULER_A_TEST, { eulerStyle: true, noiseAt: 8 }), 56163.0508, 73.129);
  });

  it("DPMSolverMultistep (dpmsolver++ midpoint, order 2): full loop, v-prediction, Karras + v, from add_noise", () => {
    assertOracle(fullLoop(DPM_TEST, { eulerStyle: false }), undefined, 0.3301);
    assertOracle(fullLoop({ ...DPM_TEST, prediction_type: "v_prediction" }, { eulerStyle: false }), undefined, 0.2251);
    assertOracle(
      fullLoop({ ...DPM_TEST, prediction_type: "v_prediction", use_karras_sigmas: true }, { eulerStyle: false }),
      undefined,
      0.2096,
    );
    assertOracle(fullLoop(DPM_TEST, { eulerStyle: false, noiseAt: 5 }), 318.4111, 0.4146);
  });

  it("DDIM (η = 0): full loop, v-prediction, set_alpha_to_one on/off, from add_noise", () => {
    assertOracle(fullLoop(DDIM_TEST, { eulerStyle: false }), 172.0067, 0.223967);
    assertOracle(fullLoop({ ...DDIM_TEST, prediction_type: "v_prediction" }, { eulerStyle: false }), 52.5302, 0.0684);
    assertOracle(
      fullLoop({ ...DDIM_TEST, set_alpha_to_one: true, beta_start: 0.01 }, { eulerStyle: false }),
      149.8295,
      0.1951,
    );
    assertOracle(
      fullLoop({ ...DDIM_TEST, set_alpha_to_one: false, beta_start: 0.01 }, { eulerStyle: false }),
      149.0784,
      0.1941,
    );
    assertOracle(fullLoop(DDIM_TEST, { eulerStyle: false, noiseAt: 8 }), 354.5418, 0.4616);
  });

  it("DDIM steps_offset: 5 steps → 801, 601, 401, 201, 1", () => {
    const s = createScheduler(parseSchedulerConfig({ ...DDIM_TEST, steps_offset: 1 }, "test"));
    s.setTimesteps(5);
    assert.deepEqual(Array.from(s.timesteps), [801, 601, 401, 201, 1]);
  });
});

describe("the SDXL schedule", () => {
  it("has σ[999] = 14.6147 and σ[0] = 0.02917", () => {
    const train = trainSchedule("scaled_linear", 0.00085, 0.012, 1000);
    assert.ok(Math.abs(train.sigmas[999]! - 14.6147) < 1e-4, `σ[999] = ${train.sigmas[999]}`);
    assert.ok(Math.abs(train.sigmas[0]! - 0.02917) < 1e-5, `σ[0] = ${train.sigmas[0]}`);
  });

  it("Euler, leading + steps_offset 1, 40 steps: 976, 951, …, 1; σ ends at 0; init σ = √(σ_max² + 1)", () => {
    const s = createScheduler(sdxl());
    assert.equal(s.name, "euler");
    s.setTimesteps(40);
    assert.deepEqual(
      Array.from(s.timesteps),
      Array.from({ length: 40 }, (_, i) => 976 - 25 * i),
    );
    assert.equal(s.sigmaAt(40), 0);
    const max = s.sigmaAt(0);
    assert.ok(Math.abs(s.initNoiseSigma - Math.sqrt(max * max + 1)) < 1e-5);
    for (let i = 1; i <= 40; i++) assert.ok(s.sigmaAt(i) < s.sigmaAt(i - 1), "σ decreases");
  });

  it("DPM++ 2M Karras, 30 steps: 999, 975, 949, 923, …, 3, 1, 0", () => {
    const s = createScheduler(sdxl(), { name: "dpmpp_2m", karras: true });
    s.setTimesteps(30);
    const t = Array.from(s.timesteps);
    assert.equal(t.length, 30);
    assert.deepEqual(t.slice(0, 4), [999, 975, 949, 923]);
    assert.deepEqual(t.slice(-3), [3, 1, 0]);
    assert.equal(s.initNoiseSigma, 1);
    assert.equal(s.latentSpace, "vp");
  });

  it("switching class keeps the config's spacing (diffusers' from_config): DPM++ 2M leading, 30 steps → 961 … 33", () => {
    const s = createScheduler(sdxl(), { name: "dpmpp_2m" });
    s.setTimesteps(30);
    // step ratio 1000 // 31 = 32, timesteps 30·32 … 1·32, + steps_offset 1
    assert.deepEqual(
      Array.from(s.timesteps),
      Array.from({ length: 30 }, (_, i) => (30 - i) * 32 + 1),
    );
  });

  it("spaces trailing and linspace schedules as diffusers does", () => {
    const at = (extra: Record<string, unknown>, name: SchedulerName, steps: number) => {
      const s = createScheduler(parseSchedulerConfig({ ...SDXL, ...extra }, "c.json"), { name });
      s.setTimesteps(steps);
      return Array.from(s.timesteps);
    };
    assert.deepEqual(
      at({ timestep_spacing: "trailing" }, "euler", 10),
      [999, 899, 799, 699, 599, 499, 399, 299, 199, 99],
    );
    assert.deepEqual(at({ timestep_spacing: "linspace" }, "ddim", 4), [999, 666, 333, 0]);
    // DPM-Solver spaces N + 1 points and drops the last: round(linspace(0, 999, 5)) = 0, 250, 500, 749, 999
    assert.deepEqual(at({ timestep_spacing: "linspace" }, "dpmpp_2m", 4), [999, 749, 500, 250]);
  });

  it("honours Karras sigma_min/sigma_max overrides and DPM-Solver's lambda_min_clipped", () => {
    const karras = createScheduler(
      parseSchedulerConfig({ ...SDXL, use_karras_sigmas: true, sigma_min: 0.1, sigma_max: 10 }, "c.json"),
    );
    karras.setTimesteps(12);
    assert.ok(Math.abs(karras.sigmaAt(0) - 10) < 1e-5 && Math.abs(karras.sigmaAt(11) - 0.1) < 1e-6);

    const dpm = (clip?: number) => {
      const s = createScheduler(
        parseSchedulerConfig({ ...SDXL, timestep_spacing: "linspace", lambda_min_clipped: clip }, "c.json"),
        { name: "dpmpp_2m" },
      );
      s.setTimesteps(10);
      return s;
    };
    assert.deepEqual(dpm(-5.1).timesteps, dpm().timesteps, "λ never reaches −5.1 on this schedule");
    // λ = −log σ < 0 where σ > 1: those timesteps are cut off the top of the schedule.
    const clipped = dpm(0);
    assert.ok(clipped.sigmaAt(0) <= 1 && clipped.sigmaAt(0) > 0.9, `first σ ${clipped.sigmaAt(0)}`);
  });

  it("DDIM from the SDXL config: leading 20 steps from 951, set_alpha_to_one false", () => {
    const s = createScheduler(sdxl(), { name: "ddim" });
    s.setTimesteps(20);
    assert.equal(s.timesteps[0], 951);
    assert.equal(s.timesteps[19], 1);
    // after the last step t − 50 < 0 falls back to ᾱ_0, so σ is σ_0, not 0
    assert.ok(Math.abs(s.sigmaAt(20) - 0.02917) < 1e-5, `σ after the last step ${s.sigmaAt(20)}`);
  });
});

describe("scheduler behaviour", () => {
  const n = 4 * 8 * 8;

  it("scaleModelInput never modifies its input; Euler divides by √(σ²+1), the VP schedulers pass through", () => {
    for (const name of ["euler", "euler_a", "dpmpp_2m", "ddim"] as const) {
      const s = createScheduler(sdxl(), { name });
      s.setTimesteps(10);
      const x = random(1, n);
      const copy = x.slice();
      const scaled = s.scaleModelInput(x);
      assert.deepEqual(x, copy, `${name} modified its input`);
      if (s.latentSpace === "vp") assert.deepEqual(scaled, x);
      else {
        const d = Math.sqrt(s.sigmaAt(0) ** 2 + 1);
        for (let i = 0; i < n; i++) assert.ok(Math.abs(scaled[i]! - x[i]! / d) < 1e-6);
      }
    }
  });

  it("Euler ε step is x + (σ_next − σ)·ε", () => {
    const s = createScheduler(sdxl());
    s.setTimesteps(10);
    const x = random(2, n);
    const eps = random(3, n);
    const [sigma, next] = [s.sigmaAt(0), s.sigmaAt(1)];
    const out = s.step(eps, x);
    assert.equal(s.stepIndex, 1);
    for (let i = 0; i < n; i++) assert.ok(Math.abs(out[i]! - (x[i]! + (next - sigma) * eps[i]!)) < 1e-5);
  });

  it("a schedule cut at an index and resumed with setBeginIndex equals the uninterrupted run (Euler, DDIM)", () => {
    for (const name of ["euler", "ddim"] as const) {
      const run = (s: Scheduler, x: Float32Array, from: number, to: number): Float32Array => {
        for (let i = from; i < to; i++) x = s.step(dummyModel(s.scaleModelInput(x), s.timesteps[i]!), x);
        return x;
      };
      const whole = createScheduler(sdxl(), { name });
      whole.setTimesteps(20);
      const expected = run(whole, random(4, n), 0, 20);
      const base = createScheduler(sdxl(), { name });
      base.setTimesteps(20);
      const handover = run(base, random(4, n), 0, 16);
      const refiner = createScheduler(sdxl(), { name });
      refiner.setTimesteps(20);
      refiner.setBeginIndex(16);
      assert.deepEqual(run(refiner, handover, 16, 20), expected, name);
    }
  });

  it("DPM++ 2M: first order on the first step (also after setBeginIndex), second order after, first order at a final σ of 0", () => {
    const config = sdxl();
    const second = createScheduler(config, { name: "dpmpp_2m" });
    const first = createScheduler(parseSchedulerConfig({ ...SDXL, solver_order: 1 }, "test"), { name: "dpmpp_2m" });
    for (const s of [second, first]) {
      s.setTimesteps(20);
      s.setBeginIndex(5);
    }
    const x = random(5, n);
    const m1 = random(6, n);
    const m2 = random(7, n);
    const a1 = second.step(m1, x);
    assert.deepEqual(a1, first.step(m1, x), "the first step is first order");
    assert.notDeepEqual(second.step(m2, a1), first.step(m2, a1), "the next step uses the previous x₀");

    // Last step: σ_next = 0 → the result is the predicted x₀ = (x − σ_t·ε)/α.
    const s = createScheduler(config, { name: "dpmpp_2m" });
    s.setTimesteps(20);
    s.setBeginIndex(19);
    const sigma = s.sigmaAt(19);
    const alpha = 1 / Math.sqrt(sigma * sigma + 1);
    const out = s.step(m1, x);
    for (let i = 0; i < n; i++) assert.ok(Math.abs(out[i]! - (x[i]! - sigma * alpha * m1[i]!) / alpha) < 1e-5);
  });

  it("Euler ancestral needs noise, draws it per step, and splits a list of sources per image", () => {
    const make = () => {
      const s = createScheduler(sdxl(), { name: "euler_a" });
      s.setTimesteps(10);
      return s;
    };
    const x = random(8, 2 * n);
    const eps = random(9, 2 * n);
    assertKilnError(() => make().step(eps, x), "scheduler_misuse", "noise");
    const a = make().step(eps, x, new NoiseSource(11));
    assert.deepEqual(make().step(eps, x, new NoiseSource(11)), a, "same seed, same step");
    assert.notDeepEqual(make().step(eps, x, new NoiseSource(12)), a, "another seed, another step");
    // Two sources: image 0 of the pair steps as image 0 alone with the first source.
    const pair = make().step(eps, x, [new NoiseSource(11), new NoiseSource(12)]);
    assert.deepEqual(pair.subarray(0, n), make().step(eps.subarray(0, n), x.subarray(0, n), new NoiseSource(11)));
  });

  it("addNoise follows each family's forward process, and the families agree through convertLatentSpace", () => {
    const x0 = random(13, n);
    const z = random(14, n);
    const euler = createScheduler(sdxl());
    euler.setTimesteps(30);
    const ve = euler.addNoise(x0, z, 7);
    for (let i = 0; i < n; i++) assert.ok(Math.abs(ve[i]! - (x0[i]! + euler.sigmaAt(7) * z[i]!)) < 1e-5);

    const dpm = createScheduler(sdxl(), { name: "dpmpp_2m" });
    dpm.setTimesteps(30);
    const sigma = dpm.sigmaAt(7);
    const vp = dpm.addNoise(x0, z, 7);
    const viaVe = convertLatentSpace(
      x0.map((v, i) => v + sigma * z[i]!),
      sigma,
      "ve",
      "vp",
    );
    for (let i = 0; i < n; i++) assert.ok(Math.abs(vp[i]! - viaVe[i]!) < 1e-5);

    const ddim = createScheduler(sdxl(), { name: "ddim" });
    ddim.setTimesteps(30);
    const ac = trainSchedule("scaled_linear", 0.00085, 0.012, 1000).alphasCumprod[ddim.timesteps[7]!]!;
    const dd = ddim.addNoise(x0, z, 7);
    for (let i = 0; i < n; i++)
      assert.ok(Math.abs(dd[i]! - (Math.sqrt(ac) * x0[i]! + Math.sqrt(1 - ac) * z[i]!)) < 1e-5);
  });

  it("convertLatentSpace round-trips and always returns a new array", () => {
    const x = random(15, n);
    const vp = convertLatentSpace(x, 3, "ve", "vp");
    assert.ok(Math.abs(vp[0]! - x[0]! / Math.sqrt(10)) < 1e-6);
    const back = convertLatentSpace(vp, 3, "vp", "ve");
    for (let i = 0; i < n; i++) assert.ok(Math.abs(back[i]! - x[i]!) < 1e-5);
    const same = convertLatentSpace(x, 3, "ve", "ve");
    assert.notEqual(same, x);
    assert.deepEqual(same, x);
  });

  it("refuses steps past the end, indices outside the schedule, and mismatched sizes", () => {
    const s = createScheduler(sdxl());
    assertKilnError(() => s.step(new Float32Array(4), new Float32Array(4)), "scheduler_misuse", "setTimesteps");
    s.setTimesteps(2);
    assertKilnError(() => s.setBeginIndex(3), "scheduler_misuse");
    assertKilnError(() => s.step(new Float32Array(4), new Float32Array(5)), "scheduler_misuse");
    s.setBeginIndex(2);
    assertKilnError(() => s.step(new Float32Array(4), new Float32Array(4)), "scheduler_misuse", "past the end");
    assertKilnError(() => s.setTimesteps(0), "scheduler_misuse");
  });
});

describe("scheduler configs", () => {
  it("defaults to the config's own class", () => {
    const cases: [string, SchedulerName][] = [
      ["EulerDiscreteScheduler", "euler"],
      ["EulerAncestralDiscreteScheduler", "euler_a"],
      ["DPMSolverMultistepScheduler", "dpmpp_2m"],
      ["DDIMScheduler", "ddim"],
    ];
    for (const [cls, name] of cases)
      assert.equal(createScheduler(parseSchedulerConfig({ ...SDXL, _class_name: cls }, "c.json")).name, name);
  });

  it("rejects an unknown class unless a scheduler is chosen", () => {
    const config = parseSchedulerConfig({ ...SDXL, _class_name: "UniPCMultistepScheduler" }, "c.json");
    assertKilnError(() => createScheduler(config), "model_scheduler_unsupported", "UniPCMultistepScheduler", "euler");
    assert.equal(createScheduler(config, { name: "euler" }).name, "euler");
  });

  it("lets the choice override use_karras_sigmas", () => {
    const config = parseSchedulerConfig({ ...SDXL, use_karras_sigmas: true }, "c.json");
    const plain = createScheduler(config, { karras: false });
    const karras = createScheduler(config);
    plain.setTimesteps(30);
    karras.setTimesteps(30);
    assert.equal(plain.timesteps[1], 925);
    assert.notEqual(karras.timesteps[1], 925);
  });

  it("ignores keys it does not know, as diffusers does", () => {
    const config = parseSchedulerConfig({ ...SDXL, some_future_option: [1, 2], skip_prk_steps: true }, "c.json");
    assert.equal("some_future_option" in config, false);
  });

  it("reads Python's -Infinity in the JSON text", () => {
    const text =
      '{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity, "beta_schedule": "scaled_linear"}';
    const config = parseSchedulerConfigText(text, "scheduler_config.json");
    assert.equal(config.lambda_min_clipped, -Infinity);
    assertKilnError(
      () => parseSchedulerConfigText("{not json", "scheduler_config.json"),
      "model_scheduler_invalid",
      "scheduler_config.json",
    );
  });

  it("names the field, the value and what is supported for unsupported settings", () => {
    const parse = (extra: Record<string, unknown>) => () =>
      parseSchedulerConfig({ ...SDXL, ...extra }, "scheduler/scheduler_config.json");
    assertKilnError(
      parse({ beta_schedule: "squaredcos_cap_v2" }),
      "model_scheduler_unsupported",
      "beta_schedule",
      "squaredcos_cap_v2",
      "scaled_linear",
      "scheduler/scheduler_config.json",
    );
    assertKilnError(
      parse({ prediction_type: "sample" }),
      "model_scheduler_unsupported",
      "prediction_type",
      "sample",
      "v_prediction",
    );
    assertKilnError(
      parse({ timestep_spacing: "karras" }),
      "model_scheduler_unsupported",
      "timestep_spacing",
      "trailing",
    );
    assertKilnError(parse({ trained_betas: [0.1, 0.2] }), "model_scheduler_unsupported", "trained_betas");
    assertKilnError(parse({ rescale_betas_zero_snr: true }), "model_scheduler_unsupported", "rescale_betas_zero_snr");

    const create = (extra: Record<string, unknown>, name?: SchedulerName, karras?: boolean) => () =>
      createScheduler(parseSchedulerConfig({ ...SDXL, ...extra }, "c.json"), { name, karras });
    assertKilnError(
      create({ interpolation_type: "log_linear" }),
      "model_scheduler_unsupported",
      "interpolation_type",
      "log_linear",
      "linear",
    );
    assertKilnError(create({ use_exponential_sigmas: true }), "model_scheduler_unsupported", "use_exponential_sigmas");
    assertKilnError(create({}, "ddim", true), "model_scheduler_unsupported", "karras", "ddim");
    assertKilnError(create({ solver_order: 3 }, "dpmpp_2m"), "model_scheduler_unsupported", "solver_order", "3");
    assertKilnError(
      create({ algorithm_type: "sde-dpmsolver++" }, "dpmpp_2m"),
      "model_scheduler_unsupported",
      "algorithm_type",
      "sde-dpmsolver++",
      "dpmsolver++",
    );
    assertKilnError(
      create({ solver_type: "heun" }, "dpmpp_2m"),
      "model_scheduler_unsupported",
      "solver_type",
      "heun",
      "midpoint",
    );
    assertKilnError(create({ thresholding: true }, "dpmpp_2m"), "model_scheduler_unsupported", "thresholding");
    assertKilnError(
      create({ variance_type: "learned_range" }, "dpmpp_2m"),
      "model_scheduler_unsupported",
      "variance_type",
    );
    assertKilnError(create({ final_sigmas_type: "sigma_max" }), "model_scheduler_unsupported", "final_sigmas_type");
  });

  it("rejects malformed values, naming the file and the field", () => {
    assertKilnError(
      () => parseSchedulerConfig({ ...SDXL, num_train_timesteps: "1000" }, "x/scheduler_config.json"),
      "model_scheduler_invalid",
      "x/scheduler_config.json",
      "num_train_timesteps",
    );
    assertKilnError(
      () => parseSchedulerConfig({ ...SDXL, steps_offset: -1 }, "c.json"),
      "model_scheduler_invalid",
      "steps_offset",
    );
    assertKilnError(() => parseSchedulerConfig(["not", "an", "object"], "c.json"), "model_scheduler_invalid");
  });
});
