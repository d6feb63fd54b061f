import { combine2 } from "../latent-ops.js";
import {
  arange,
  interpAtTimesteps,
  karrasSigmas,
  linspace,
  roundHalfEven,
  sigmaToT,
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

/** diffusers' `_sigma_to_alpha_sigma_t`: α = 1/√(σ²+1), σ_t = σ·α, and λ = log α − log σ_t. */
function vp(sigma: number): { alpha: number; sigmaT: number; lambda: number } {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const sigmaT = sigma * alpha;
  return { alpha, sigmaT, lambda: Math.log(alpha) - Math.log(sigmaT) };
}

/**
 * diffusers' `DPMSolverMultistepScheduler` as "DPM++ 2M": `algorithm_type="dpmsolver++"`, `solver_type="midpoint"`,
 * `solver_order` 2 (or 1), deterministic. It integrates the data prediction x₀ in λ = log(α/σ) on VP latents; each
 * step is second order from the previous step's x₀, except the first step after `setTimesteps` and the last
 * (always with a final σ of 0; with `lower_order_final` also for schedules under 15 steps).
 */
export class DpmSolverPlusPlus2MScheduler implements Scheduler {
  readonly name = "dpmpp_2m" as const;
  readonly order = 1;
  readonly initNoiseSigma = 1;
  readonly stochastic = false;
  readonly latentSpace = "vp" as const;
  private readonly settings: CommonSettings;
  private readonly train: TrainSchedule;
  private readonly solverOrder: 1 | 2;
  private readonly lowerOrderFinal: boolean;
  private readonly eulerAtFinal: boolean;
  private readonly finalSigma: "zero" | "sigma_min";
  private readonly lambdaMinClipped: number;
  private ts: Float64Array = new Float64Array(0);
  private sigmas: Float32Array = new Float32Array(0);
  private index = 0;
  private lowerOrderNums = 0;
  /** x₀ of the previous and the current step (diffusers' `model_outputs`), swapped each step. */
  private previousX0 = new Float32Array(0);
  private currentX0 = new Float32Array(0);

  constructor(
    config: SchedulerConfig,
    private readonly karras: boolean,
  ) {
    this.settings = commonSettings(config, "linspace");
    supportedSetting("algorithm_type", config.algorithm_type, "dpmsolver++", ["dpmsolver++"]);
    // diffusers maps the DEIS/UniPC solver names to midpoint when a config is switched over.
    supportedSetting("solver_type", config.solver_type, "midpoint", ["midpoint", "logrho", "bh1", "bh2"]);
    this.solverOrder = supportedSetting("solver_order", config.solver_order, 2, [1, 2]);
    this.finalSigma = supportedSetting("final_sigmas_type", config.final_sigmas_type, "zero", ["zero", "sigma_min"]);
    if (config.thresholding) throw unsupportedSetting("thresholding", true, [false]);
    if (config.variance_type != null) throw unsupportedSetting("variance_type", config.variance_type, [null]);
    for (const field of ["use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas"] as const) {
      if (config[field]) throw unsupportedSetting(field, true, [false]);
    }
    this.lowerOrderFinal = config.lower_order_final ?? true;
    this.eulerAtFinal = config.euler_at_final ?? false;
    this.lambdaMinClipped = config.lambda_min_clipped ?? -Infinity;
    const s = this.settings;
    this.train = trainSchedule(s.betaSchedule, s.betaStart, s.betaEnd, s.numTrainTimesteps);
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
      throw schedulerMisuse(`dpmpp_2m: ${numInferenceSteps} inference steps is outside 1…${T}.`);
    }
    const last = T - this.clippedTimesteps();
    const n = numInferenceSteps;
    let ts: Float64Array;
    if (spacing === "linspace")
      ts = linspace(0, last - 1, n + 1)
        .map(roundHalfEven)
        .reverse()
        .slice(0, n);
    else if (spacing === "leading") {
      const ratio = Math.floor(last / (n + 1));
      ts = new Float64Array(n).map((_, i) => (n - i) * ratio + stepsOffset);
    } else ts = arange(last, 0, -T / n).map((t) => roundHalfEven(t) - 1);

    let sig: Float64Array;
    if (this.karras) {
      sig = karrasSigmas(this.train.sigmas[0]!, this.train.sigmas[T - 1]!, n);
      ts = sig.map((s) => roundHalfEven(sigmaToT(s, this.train.logSigmas)));
    } else sig = interpAtTimesteps(ts, this.train.sigmas);

    this.sigmas = new Float32Array(sig.length + 1);
    this.sigmas.set(sig);
    this.sigmas[sig.length] = this.finalSigma === "zero" ? 0 : this.train.sigmas[0]!;
    this.ts = ts;
    this.index = 0;
    this.lowerOrderNums = 0;
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
    const i = this.index;
    const len = this.ts.length;
    const lowerOrderFinal =
      i === len - 1 && (this.eulerAtFinal || (this.lowerOrderFinal && len < 15) || this.finalSigma === "zero");

    if (this.currentX0.length !== sample.length) {
      if (this.lowerOrderNums > 0) throw schedulerMisuse("dpmpp_2m: the sample size changed between steps.");
      this.currentX0 = new Float32Array(sample.length);
      this.previousX0 = new Float32Array(sample.length);
    } else [this.previousX0, this.currentX0] = [this.currentX0, this.previousX0];

    const firstOrder = this.solverOrder === 1 || this.lowerOrderNums < 1 || lowerOrderFinal;
    this.update(modelOutput, sample, i, firstOrder, out);
    if (this.lowerOrderNums < this.solverOrder) this.lowerOrderNums++;
    this.index++;
    return out;
  }

  /** VP noising: α_t·x₀ + σ_t·ε at the σ of `timestepIndex`. */
  addNoise(original: Float32Array, noise: Float32Array, timestepIndex: number): Float32Array {
    checkIndex(this, timestepIndex, false);
    if (noise.length !== original.length)
      throw schedulerMisuse(`dpmpp_2m: ${noise.length} noise values for ${original.length} latents.`);
    const { alpha, sigmaT } = vp(this.sigmas[timestepIndex]!);
    const out = new Float32Array(original.length);
    combine2(out, alpha, original, sigmaT, noise);
    return out;
  }

  sigmaAt(index: number): number {
    checkIndex(this, index, true);
    return this.sigmas[index]!;
  }

  /** How many of the smallest-λ training timesteps `lambda_min_clipped` cuts off (searchsorted on the flipped λ). */
  private clippedTimesteps(): number {
    if (this.lambdaMinClipped === -Infinity) return 0;
    const ac = this.train.alphasCumprod;
    let count = 0;
    for (let t = 0; t < ac.length; t++) {
      const lambda = f32(f32(Math.log(f32(Math.sqrt(ac[t]!)))) - f32(Math.log(f32(Math.sqrt(f32(1 - ac[t]!))))));
      if (lambda < this.lambdaMinClipped) count++;
    }
    return count;
  }

  /**
   * One pass: x₀ = (x − σ_s·m)/α_s (ε) or α_s·x − σ_s·m (v), kept for the next step, then
   * first order (DDIM in λ):  x' = (σ_t/σ_s)·x − α_t(e^(−h) − 1)·x₀,
   * second order (midpoint):  x' = (σ_t/σ_s)·x − α_t(e^(−h) − 1)·(D0 + D1/2), D0 = x₀, D1 = (x₀ − x₀_prev)/r0,
   * with h = λ_t − λ_s and r0 = (λ_s − λ_prev)/h.
   */
  private update(
    modelOutput: Float32Array,
    sample: Float32Array,
    i: number,
    firstOrder: boolean,
    out: Float32Array,
  ): void {
    const s = vp(this.sigmas[i]!);
    const t = vp(this.sigmas[i + 1]!);
    const h = t.lambda - s.lambda;
    const cSample = t.sigmaT / s.sigmaT;
    const cD0 = t.alpha * (Math.exp(-h) - 1);
    // x' = cSample·x − cX0·x₀ + cPrev·x₀_prev; a zero-width step (h = 0) gives r0 = ∞ and D1 = 0, as in torch.
    let cX0 = cD0;
    let cPrev = 0;
    if (!firstOrder) {
      const invR0 = 1 / ((s.lambda - vp(this.sigmas[i - 1]!).lambda) / h);
      cX0 = cD0 + 0.5 * cD0 * invR0;
      cPrev = 0.5 * cD0 * invR0;
    }
    const v = this.settings.predictionType === "v_prediction";
    const a = v ? s.alpha : 1 / s.alpha;
    const b = v ? -s.sigmaT : -s.sigmaT / s.alpha;
    multistepUpdate(out, sample, modelOutput, this.currentX0, this.previousX0, a, b, cSample, cX0, cPrev);
  }
}

/** x₀ = a·x + b·m (kept), x' = cSample·x − cX0·x₀ + cPrev·x₀_prev, in one pass (a kernel: see latent-ops.ts). */
function multistepUpdate(
  out: Float32Array,
  sample: Float32Array,
  modelOutput: Float32Array,
  x0: Float32Array,
  prev: Float32Array,
  a: number,
  b: number,
  cSample: number,
  cX0: number,
  cPrev: number,
): void {
  for (let k = 0; k < out.length; k++) {
    const x = sample[k]!;
    const p = a * x + b * modelOutput[k]!;
    x0[k] = p;
    out[k] = cSample * x - cX0 * p + cPrev * prev[k]!;
  }
}
