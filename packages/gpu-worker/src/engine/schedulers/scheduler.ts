import { KilnError, type SchedulerName } from "@kiln/shared";
import { z } from "zod";

import type { NoiseSource } from "../noise.js";
import type { BetaSchedule, TimestepSpacing } from "./noise-schedule.js";

export type { SchedulerName };

/**
 * Which latents a scheduler steps on. "ve" (Euler family): x₀ + σε, scaled by 1/√(σ²+1) only for the UNet input.
 * "vp" (DPM-Solver, DDIM): √ᾱ·x₀ + √(1−ᾱ)·ε, i.e. the "ve" latents divided by √(σ²+1).
 */
export type LatentSpace = "ve" | "vp";

/**
 * Noise for stochastic steps: one source for the whole batch, one per image (the batch split evenly), or the
 * values already drawn from those sources (the pipeline draws them on a helper thread while the UNet runs).
 */
export type StepNoise = NoiseSource | readonly NoiseSource[] | Float32Array;

/**
 * One diffusion scheduler, after diffusers' `SchedulerMixin`: `setTimesteps`, then per step
 * `scaleModelInput` → UNet → `step`. Steps are addressed by index into `timesteps` (diffusers' `step_index`),
 * never by timestep value, so repeated timesteps and mid-schedule starts are unambiguous.
 */
export interface Scheduler {
  readonly name: SchedulerName;
  /** diffusers' `order` attribute: UNet evaluations per step (multistep DPM-Solver++ is 1). */
  readonly order: number;
  /** Multiply unit Gaussian noise by this to get the first latents of a full schedule. */
  readonly initNoiseSigma: number;
  readonly latentSpace: LatentSpace;
  /** Valid after `setTimesteps`; the values the UNet receives, descending. */
  readonly timesteps: Float64Array;
  /** Index into `timesteps` of the next `step`. */
  readonly stepIndex: number;
  setTimesteps(numInferenceSteps: number): void;
  /** Start mid-schedule (img2img strength, ensemble refiner): call after `setTimesteps`, before the first step. */
  setBeginIndex(index: number): void;
  /** The UNet input for the current step. Never modifies `sample`; schedulers that do not scale return `sample` itself. */
  scaleModelInput(sample: Float32Array): Float32Array;
  /** What `scaleModelInput` divides the current step's sample by (1 when it does not scale), so callers can fuse it. */
  modelInputDivisor(): number;
  /** Whether `step` adds fresh noise (and so needs the `noise` argument). */
  readonly stochastic: boolean;
  /**
   * Consumes the UNet output for the current step and returns the next latents; advances `stepIndex`. They are
   * written to `out` when given — which may be `sample` itself, as every value is read before it is written —
   * else to a new array.
   */
  step(modelOutput: Float32Array, sample: Float32Array, noise?: StepNoise, out?: Float32Array): Float32Array;
  /** Noises clean latents to the level of schedule index `timestepIndex` (diffusers' `add_noise`), in a new array. */
  addNoise(original: Float32Array, noise: Float32Array, timestepIndex: number): Float32Array;
  /** The VE σ of the latents that step `index` consumes (`index === timesteps.length`: after the last step). */
  sigmaAt(index: number): number;
}

// Python writes `-Infinity` for lambda_min_clipped, which plain z.number() rejects.
const numberOrInfinity = z.custom<number>((v) => typeof v === "number" && !Number.isNaN(v), "a number");

/**
 * `scheduler/scheduler_config.json`, with diffusers' field names. Every field is optional: missing ones take the
 * defaults of the scheduler class that reads them, as diffusers' `from_config` does when switching schedulers.
 * Enumerated fields are plain strings here; the schedulers check which values they support.
 */
export const schedulerConfigSchema = z.object({
  _class_name: z.string().optional(),
  num_train_timesteps: z.number().int().positive().optional(),
  beta_start: z.number().positive().optional(),
  beta_end: z.number().positive().optional(),
  beta_schedule: z.string().optional(),
  trained_betas: z.unknown().optional(),
  prediction_type: z.string().optional(),
  timestep_spacing: z.string().optional(),
  steps_offset: z.number().int().nonnegative().optional(),
  rescale_betas_zero_snr: z.boolean().optional(),
  // Euler family
  interpolation_type: z.string().optional(),
  use_karras_sigmas: z.boolean().nullable().optional(),
  use_exponential_sigmas: z.boolean().nullable().optional(),
  use_beta_sigmas: z.boolean().nullable().optional(),
  sigma_min: z.number().positive().nullable().optional(),
  sigma_max: z.number().positive().nullable().optional(),
  timestep_type: z.string().optional(),
  final_sigmas_type: z.string().optional(),
  // DPM-Solver
  solver_order: z.number().int().positive().optional(),
  algorithm_type: z.string().optional(),
  solver_type: z.string().optional(),
  lower_order_final: z.boolean().optional(),
  euler_at_final: z.boolean().optional(),
  use_lu_lambdas: z.boolean().nullable().optional(),
  use_flow_sigmas: z.boolean().nullable().optional(),
  lambda_min_clipped: numberOrInfinity.optional(),
  variance_type: z.string().nullable().optional(),
  thresholding: z.boolean().optional(),
  // DDIM
  clip_sample: z.boolean().optional(),
  clip_sample_range: z.number().positive().optional(),
  set_alpha_to_one: z.boolean().optional(),
});

export type SchedulerConfig = z.infer<typeof schedulerConfigSchema>;

export type PredictionType = "epsilon" | "v_prediction";

/** The settings all four schedulers read, with diffusers' defaults (only the spacing default differs by class). */
export interface CommonSettings {
  readonly numTrainTimesteps: number;
  readonly betaStart: number;
  readonly betaEnd: number;
  readonly betaSchedule: BetaSchedule;
  readonly predictionType: PredictionType;
  readonly spacing: TimestepSpacing;
  readonly stepsOffset: number;
}

export function commonSettings(
  config: SchedulerConfig,
  defaultSpacing: TimestepSpacing,
  file?: string,
): CommonSettings {
  if (config.trained_betas !== undefined && config.trained_betas !== null)
    throw unsupportedSetting("trained_betas", "an explicit list", [null], file);
  if (config.rescale_betas_zero_snr) throw unsupportedSetting("rescale_betas_zero_snr", true, [false], file);
  return {
    numTrainTimesteps: config.num_train_timesteps ?? 1000,
    betaStart: config.beta_start ?? 0.0001,
    betaEnd: config.beta_end ?? 0.02,
    betaSchedule: supportedSetting("beta_schedule", config.beta_schedule, "linear", BETA_SCHEDULES, file),
    predictionType: supportedSetting("prediction_type", config.prediction_type, "epsilon", PREDICTION_TYPES, file),
    spacing: supportedSetting("timestep_spacing", config.timestep_spacing, defaultSpacing, TIMESTEP_SPACINGS, file),
    stepsOffset: config.steps_offset ?? 0,
  };
}

export const BETA_SCHEDULES = ["linear", "scaled_linear"] as const satisfies readonly BetaSchedule[];
export const PREDICTION_TYPES = ["epsilon", "v_prediction"] as const satisfies readonly PredictionType[];
export const TIMESTEP_SPACINGS = ["linspace", "leading", "trailing"] as const satisfies readonly TimestepSpacing[];

/** A config value Kiln does not implement: names the field, the value and what is supported. */
export function unsupportedSetting(
  field: string,
  value: unknown,
  supported: readonly unknown[],
  file?: string,
  status?: number,
): KilnError {
  const where = file ? `${file}: ` : "";
  const list = supported.map((s) => JSON.stringify(s)).join(", ");
  return new KilnError(
    "model_scheduler_unsupported",
    `${where}scheduler setting ${field} = ${JSON.stringify(value)} is not supported; Kiln supports ${list}. Use a model whose scheduler_config.json has one of these, or choose another scheduler.`,
    { status, details: { field, value, supported } },
  );
}

/** Returns `value ?? fallback` after checking it is one of `supported`. */
export function supportedSetting<T extends string | number | boolean>(
  field: string,
  value: unknown,
  fallback: NoInfer<T>,
  supported: readonly T[],
  file?: string,
): T {
  const v = value ?? fallback;
  if (!supported.includes(v as T)) throw unsupportedSetting(field, v, supported, file);
  return v as T;
}

/** Programming errors in driving a scheduler (the engine's fault, never the user's). */
export function schedulerMisuse(message: string): KilnError {
  return new KilnError("scheduler_misuse", message);
}

export function checkStepInputs(scheduler: Scheduler, modelOutput: Float32Array, sample: Float32Array): void {
  if (scheduler.timesteps.length === 0) throw schedulerMisuse(`${scheduler.name}: call setTimesteps before step.`);
  if (scheduler.stepIndex >= scheduler.timesteps.length) {
    throw schedulerMisuse(
      `${scheduler.name}: step ${scheduler.stepIndex} is past the end of a ${scheduler.timesteps.length}-step schedule.`,
    );
  }
  if (modelOutput.length !== sample.length) {
    throw schedulerMisuse(
      `${scheduler.name}: the model output has ${modelOutput.length} values but the sample ${sample.length}.`,
    );
  }
}

/** `out`, checked to fit `sample`, or a new array. */
export function stepOutput(scheduler: Scheduler, sample: Float32Array, out: Float32Array | undefined): Float32Array {
  if (!out) return new Float32Array(sample.length);
  if (out.length !== sample.length)
    throw schedulerMisuse(`${scheduler.name}: an output of ${out.length} values for a sample of ${sample.length}.`);
  return out;
}

export function checkIndex(scheduler: Scheduler, index: number, allowEnd: boolean): void {
  const max = scheduler.timesteps.length - (allowEnd ? 0 : 1);
  if (!Number.isInteger(index) || index < 0 || index > max) {
    throw schedulerMisuse(`${scheduler.name}: schedule index ${index} is outside 0…${max} (call setTimesteps first).`);
  }
}
