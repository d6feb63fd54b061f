import { combine2 } from "../latent-ops.js";
import { roundHalfEven, spacedTimesteps, type TrainSchedule, trainSchedule } from "./noise-schedule.js";
import {
  checkIndex,
  checkStepInputs,
  type CommonSettings,
  commonSettings,
  type Scheduler,
  type SchedulerConfig,
  schedulerMisuse,
  type StepNoise,
  stepOutput,
  unsupportedSetting,
} from "./scheduler.js";

const f32 = Math.fround;

/**
 * diffusers' `DDIMScheduler` with η = 0 (deterministic): x₀ = (x − √(1−ᾱ_t)·ε)/√ᾱ_t, optionally clipped, then
 * x' = √ᾱ_prev·x₀ + √(1−ᾱ_prev)·ε on VP latents. As in diffusers, the previous timestep is always
 * t − T/N (integer division), whatever the spacing, and below 0 ᾱ_prev is 1 (`set_alpha_to_one`) or ᾱ_0.
 */
export class DdimScheduler implements Scheduler {
  readonly name = "ddim" as const;
  readonly order = 1;
  readonly initNoiseSigma = 1;
  readonly stochastic = false;
  readonly latentSpace = "vp" as const;
  private readonly settings: CommonSettings;
  private readonly train: TrainSchedule;
  private readonly finalAlphaCumprod: number;
  private readonly clipRange: number | undefined;
  private ts: Float64Array = new Float64Array(0);
  private stride = 0;
  private index = 0;

  constructor(config: SchedulerConfig) {
    this.settings = commonSettings(config, "leading");
    if (config.thresholding) throw unsupportedSetting("thresholding", true, [false]);
    const s = this.settings;
    this.train = trainSchedule(s.betaSchedule, s.betaStart, s.betaEnd, s.numTrainTimesteps);
    this.finalAlphaCumprod = (config.set_alpha_to_one ?? true) ? 1 : this.train.alphasCumprod[0]!;
    this.clipRange = (config.clip_sample ?? true) ? (config.clip_sample_range ?? 1) : undefined;
  }

  get timesteps(): Float64Array {
    return this.ts;
  }
  get stepIndex(): number {
    return this.index;
  }

  setTimesteps(numInferenceSteps: number): void {
    const { numTrainTimesteps: T, spacing, stepsOffset } = this.settings;
    if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1 || numInferenceSteps > T) {
      throw schedulerMisuse(`ddim: ${numInferenceSteps} inference steps is outside 1…${T}.`);
    }
    const ts = spacedTimesteps(spacing, numInferenceSteps, T, stepsOffset);
    if (spacing === "linspace") ts.forEach((t, i) => (ts[i] = roundHalfEven(t)));
    if (ts[0]! > T - 1)
      throw schedulerMisuse(
        `ddim: timestep ${ts[0]} (steps_offset ${stepsOffset}) is past the ${T} training timesteps.`,
      );
    this.ts = ts;
    this.stride = Math.floor(T / numInferenceSteps);
    this.index = 0;
  }

  setBeginIndex(index: number): void {
    checkIndex(this, index, true);
    this.index = index;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  modelInputDivisor(): number {
    return 1;
  }

  step(modelOutput: Float32Array, sample: Float32Array, _noise?: StepNoise, into?: Float32Array): Float32Array {
    checkStepInputs(this, modelOutput, sample);
    const out = stepOutput(this, sample, into);
    const t = this.ts[this.index]!;
    const alphaT = this.alphaCumprodAt(t);
    const alphaPrev = this.alphaCumprodAt(t - this.stride);
    const sqrtAlpha = f32(Math.sqrt(alphaT));
    const sqrtBeta = f32(Math.sqrt(f32(1 - alphaT)));
    const sqrtAlphaPrev = f32(Math.sqrt(alphaPrev));
    const direction = f32(Math.sqrt(f32(1 - alphaPrev)));
    const clip = this.clipRange;
    // x₀ = a·x + b·m and ε = c·x + d·m: ε-prediction (1/√ᾱ, −√(1−ᾱ)/√ᾱ; 0, 1), v-prediction (√ᾱ, −√(1−ᾱ); √(1−ᾱ), √ᾱ).
    const v = this.settings.predictionType === "v_prediction";
    const a = v ? sqrtAlpha : 1 / sqrtAlpha;
    const b = v ? -sqrtBeta : -sqrtBeta / sqrtAlpha;
    const c = v ? sqrtBeta : 0;
    const d = v ? sqrtAlpha : 1;
    if (clip === undefined) {
      // Unclipped, x' is linear in (x, m): one multiply-add pair per value.
      const cx = sqrtAlphaPrev * a + direction * c;
      const cm = sqrtAlphaPrev * b + direction * d;
      combine2(out, cx, sample, cm, modelOutput);
    } else {
      clippedStep(out, sample, modelOutput, clip, a, b, c, d, sqrtAlphaPrev, direction);
    }
    this.index++;
    return out;
  }

  /** DDPM forward noising at the timestep of `timestepIndex`: √ᾱ_t·x₀ + √(1−ᾱ_t)·ε. */
  addNoise(original: Float32Array, noise: Float32Array, timestepIndex: number): Float32Array {
    checkIndex(this, timestepIndex, false);
    if (noise.length !== original.length)
      throw schedulerMisuse(`ddim: ${noise.length} noise values for ${original.length} latents.`);
    const alpha = this.alphaCumprodAt(this.ts[timestepIndex]!);
    const a = f32(Math.sqrt(alpha));
    const b = f32(Math.sqrt(f32(1 - alpha)));
    const out = new Float32Array(original.length);
    combine2(out, a, original, b, noise);
    return out;
  }

  /** The σ of the latents step `index` consumes: that of its timestep, or after the last step, of t − T/N. */
  sigmaAt(index: number): number {
    checkIndex(this, index, true);
    const t = index === 0 ? this.ts[0]! : this.ts[index - 1]! - this.stride;
    const alpha = this.alphaCumprodAt(t);
    return f32(Math.sqrt(f32(f32(1 - alpha) / alpha)));
  }

  private alphaCumprodAt(t: number): number {
    return t >= 0 ? this.train.alphasCumprod[t]! : this.finalAlphaCumprod;
  }
}

/** The clipped DDIM step's pass (a kernel: see latent-ops.ts). */
function clippedStep(
  out: Float32Array,
  sample: Float32Array,
  modelOutput: Float32Array,
  clip: number,
  a: number,
  b: number,
  c: number,
  d: number,
  sqrtAlphaPrev: number,
  direction: number,
): void {
  for (let i = 0; i < out.length; i++) {
    const x = sample[i]!;
    const m = modelOutput[i]!;
    const x0 = Math.min(clip, Math.max(-clip, a * x + b * m));
    out[i] = sqrtAlphaPrev * x0 + direction * (c * x + d * m);
  }
}
