import type { SchedulerName } from "@kiln/shared";

import { addScaled, combine2, combine3, divideInto } from "../latent-ops.js";
import { drawNoise } from "../noise.js";
import {
  interpAtTimesteps,
  karrasSigmas,
  sigmaToT,
  spacedTimesteps,
  type TrainSchedule,
  trainSchedule,
} from "./noise-schedule.js";
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
  supportedSetting,
  unsupportedSetting,
} from "./scheduler.js";

const f32 = Math.fround;

export interface VeScheduleOptions {
  readonly karras: boolean;
  /** diffusers' `final_sigmas_type`: the σ after the last step. */
  readonly finalSigma: "zero" | "sigma_min";
  /** Karras end points (diffusers' `sigma_min`/`sigma_max`); default: the spaced schedule's own ends. */
  readonly sigmaMin?: number | null;
  readonly sigmaMax?: number | null;
}

/**
 * The k-diffusion ("variance exploding") side of diffusers' Euler schedulers: latents are x₀ + σε, the schedule
 * is a σ per step (plus a final σ), the UNet sees x/√(σ²+1). Subclasses say where a step lands and what noise it adds.
 */
export abstract class VeScheduler implements Scheduler {
  abstract readonly name: SchedulerName;
  readonly order = 1;
  readonly latentSpace = "ve" as const;
  private readonly settings: CommonSettings;
  private readonly train: TrainSchedule;
  /** σ per schedule index, plus the final σ. */
  private sigmas: Float32Array = new Float32Array(0);
  private ts: Float64Array = new Float64Array(0);
  private index = 0;
  private initSigma: number;
  private noiseBuffer = new Float32Array(0);

  constructor(
    config: SchedulerConfig,
    private readonly options: VeScheduleOptions,
  ) {
    this.settings = commonSettings(config, "linspace");
    const s = this.settings;
    this.train = trainSchedule(s.betaSchedule, s.betaStart, s.betaEnd, s.numTrainTimesteps);
    this.initSigma = this.noiseSigmaFor(this.train.sigmas[this.train.sigmas.length - 1]!);
  }

  get timesteps(): Float64Array {
    return this.ts;
  }
  get stepIndex(): number {
    return this.index;
  }
  get initNoiseSigma(): number {
    return this.initSigma;
  }

  setTimesteps(numInferenceSteps: number): void {
    const { numTrainTimesteps: T, spacing, stepsOffset } = this.settings;
    if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1 || numInferenceSteps > T) {
      throw schedulerMisuse(`${this.name}: ${numInferenceSteps} inference steps is outside 1…${T}.`);
    }
    // diffusers keeps these timesteps (and hands them to the UNet) as float32.
    let ts = spacedTimesteps(spacing, numInferenceSteps, T, stepsOffset).map(f32);
    let sig = interpAtTimesteps(ts, this.train.sigmas);
    if (this.options.karras) {
      sig = karrasSigmas(
        this.options.sigmaMin ?? sig[sig.length - 1]!,
        this.options.sigmaMax ?? sig[0]!,
        numInferenceSteps,
      );
      ts = sig.map((s) => f32(sigmaToT(s, this.train.logSigmas)));
    }
    const sigmas = new Float32Array(sig.length + 1);
    sigmas.set(sig);
    sigmas[sig.length] = this.options.finalSigma === "zero" ? 0 : this.train.sigmas[0]!;
    this.ts = ts;
    this.sigmas = sigmas;
    this.index = 0;
    let max = 0;
    for (const s of sigmas) max = Math.max(max, s);
    this.initSigma = this.noiseSigmaFor(max);
  }

  setBeginIndex(index: number): void {
    checkIndex(this, index, true);
    this.index = index;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    const divisor = this.modelInputDivisor();
    const out = new Float32Array(sample.length);
    divideInto(out, sample, divisor);
    return out;
  }

  /** √(σ²+1) at the current step, in float32 as torch computes it (the sample is divided by it, as diffusers does). */
  modelInputDivisor(): number {
    checkIndex(this, this.index, false);
    const sigma = this.sigmas[this.index]!;
    return f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
  }

  /**
   * x' = x + (x − x₀)/σ · (σ_to − σ) [+ σ_up·z]. x₀ is linear in (x, model output), so the whole step folds into
   * two (three) coefficients and one pass; they are computed in double, which keeps diffusers' test sums to
   * their printed precision.
   */
  step(modelOutput: Float32Array, sample: Float32Array, noise?: StepNoise, into?: Float32Array): Float32Array {
    checkStepInputs(this, modelOutput, sample);
    const out = stepOutput(this, sample, into);
    const sigma = this.sigmas[this.index]!;
    const { to, up } = this.descent(sigma, this.sigmas[this.index + 1]!);
    // x₀ = a·x + b·m: ε-prediction a = 1, b = −σ; v-prediction a = 1/(σ²+1), b = −σ/√(σ²+1).
    const v = this.settings.predictionType === "v_prediction";
    const a = v ? 1 / (sigma * sigma + 1) : 1;
    const b = v ? -sigma / Math.sqrt(sigma * sigma + 1) : -sigma;
    const k = (to - sigma) / sigma;
    const cSample = 1 + k - k * a;
    const cModel = -k * b;
    if (this.stochastic) {
      const z = this.stepNoise(noise, sample.length);
      combine3(out, cSample, sample, cModel, modelOutput, up, z);
    } else {
      combine2(out, cSample, sample, cModel, modelOutput);
    }
    this.index++;
    return out;
  }

  /** The step's unit noise: drawn already, or drawn now from the sources into a buffer kept between steps. */
  private stepNoise(noise: StepNoise | undefined, length: number): Float32Array {
    if (!noise) throw schedulerMisuse(`${this.name}: step needs a noise source.`);
    if (noise instanceof Float32Array) {
      if (noise.length !== length)
        throw schedulerMisuse(`${this.name}: ${noise.length} noise values for ${length} latents.`);
      return noise;
    }
    if (this.noiseBuffer.length !== length) this.noiseBuffer = new Float32Array(length);
    return drawNoise(noise, this.noiseBuffer);
  }

  addNoise(original: Float32Array, noise: Float32Array, timestepIndex: number): Float32Array {
    checkIndex(this, timestepIndex, false);
    if (noise.length !== original.length)
      throw schedulerMisuse(`${this.name}: ${noise.length} noise values for ${original.length} latents.`);
    const sigma = this.sigmas[timestepIndex]!;
    const out = new Float32Array(original.length);
    addScaled(out, original, noise, sigma);
    return out;
  }

  sigmaAt(index: number): number {
    checkIndex(this, index, true);
    return this.sigmas[index]!;
  }

  /** Whether each step adds fresh noise (and so draws from the noise source, even when σ_up is 0). */
  abstract readonly stochastic: boolean;

  /** Where a step from σ towards σ_next lands deterministically (σ_to) and how much noise it then adds (σ_up). */
  protected abstract descent(sigma: number, sigmaNext: number): { to: number; up: number };

  /** `init_noise_sigma`: the largest σ, or √(σ²+1) of it for "leading" spacing (diffusers' rule). */
  private noiseSigmaFor(maxSigma: number): number {
    return this.settings.spacing === "leading" ? f32(Math.sqrt(f32(f32(maxSigma * maxSigma) + 1))) : maxSigma;
  }
}

/** diffusers' `EulerDiscreteScheduler` (Karras et al. 2022, Algorithm 2, without churn). */
export class EulerScheduler extends VeScheduler {
  readonly name = "euler" as const;
  readonly stochastic = false;

  constructor(config: SchedulerConfig, karras: boolean) {
    super(config, eulerScheduleOptions(config, karras));
  }

  protected descent(_sigma: number, sigmaNext: number): { to: number; up: number } {
    return { to: sigmaNext, up: 0 };
  }
}

/** The Euler-only settings (`EulerDiscreteScheduler.__init__`), checked for what Kiln implements. */
function eulerScheduleOptions(config: SchedulerConfig, karras: boolean): VeScheduleOptions {
  supportedSetting("interpolation_type", config.interpolation_type, "linear", ["linear"]);
  supportedSetting("timestep_type", config.timestep_type, "discrete", ["discrete"]);
  if (config.use_exponential_sigmas) throw unsupportedSetting("use_exponential_sigmas", true, [false]);
  if (config.use_beta_sigmas) throw unsupportedSetting("use_beta_sigmas", true, [false]);
  return {
    karras,
    finalSigma: supportedSetting("final_sigmas_type", config.final_sigmas_type, "zero", ["zero", "sigma_min"]),
    sigmaMin: config.sigma_min,
    sigmaMax: config.sigma_max,
  };
}
