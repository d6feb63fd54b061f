/**
 * The noise-schedule math shared by the schedulers, ported from diffusers with its dtypes: betas, ᾱ and the
 * training σ table are float32 torch tensors there (so every intermediate is rounded with `Math.fround`), while
 * timestep spacing, `np.interp`, Karras σ and σ→t run in numpy float64. Matching both is what makes diffusers'
 * own test oracles reproduce here to their printed precision.
 */

const f32 = Math.fround;

export type BetaSchedule = "linear" | "scaled_linear";
export type TimestepSpacing = "linspace" | "leading" | "trailing";

/** `numpy.round` / Python `round`: halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : r;
}

/** `numpy.linspace(start, stop, num)` (endpoint included) in float64. */
export function linspace(start: number, stop: number, num: number): Float64Array {
  const out = new Float64Array(num);
  if (num === 1) {
    out[0] = start;
    return out;
  }
  const step = (stop - start) / (num - 1);
  for (let i = 0; i < num; i++) out[i] = i * step + start;
  out[num - 1] = stop;
  return out;
}

/** `numpy.arange(start, stop, step)` in float64, filled the way numpy fills it (`start + i·(second − first)`). */
export function arange(start: number, stop: number, step: number): Float64Array {
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Float64Array(n);
  if (n === 0) return out;
  out[0] = start;
  if (n === 1) return out;
  out[1] = start + step;
  const delta = out[1] - start;
  for (let i = 2; i < n; i++) out[i] = start + i * delta;
  return out;
}

/** `torch.linspace(start, end, steps, dtype=torch.float32)` on the CPU (its serial kernel: two halves, float32). */
export function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  const s = f32(start);
  const e = f32(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) out[i] = i < halfway ? f32(s + f32(step * i)) : f32(e - f32(step * (steps - i - 1)));
  return out;
}

export function betas(
  schedule: BetaSchedule,
  betaStart: number,
  betaEnd: number,
  numTrainTimesteps: number,
): Float32Array {
  if (schedule === "linear") return linspaceF32(betaStart, betaEnd, numTrainTimesteps);
  const roots = linspaceF32(Math.sqrt(betaStart), Math.sqrt(betaEnd), numTrainTimesteps);
  for (let i = 0; i < roots.length; i++) roots[i] = f32(roots[i]! * roots[i]!);
  return roots;
}

/** `torch.cumprod(1 − β)`: torch's CPU kernel accumulates in double and stores each partial product as float32. */
export function alphasCumprod(beta: Float32Array): Float32Array {
  const out = new Float32Array(beta.length);
  let acc = 1;
  for (let i = 0; i < beta.length; i++) {
    acc *= f32(1 - beta[i]!);
    out[i] = acc;
  }
  return out;
}

/** σ_t = √((1 − ᾱ_t)/ᾱ_t) for every training timestep, ascending in t, float32. */
export function trainSigmas(alphaCumprod: Float32Array): Float32Array {
  const out = new Float32Array(alphaCumprod.length);
  for (let i = 0; i < out.length; i++) {
    const a = alphaCumprod[i]!;
    out[i] = Math.sqrt(f32(f32(1 - a) / a));
  }
  return out;
}

/** The training-time noise tables every scheduler starts from. */
export interface TrainSchedule {
  readonly numTrainTimesteps: number;
  readonly alphasCumprod: Float32Array;
  /** σ per training timestep, ascending in t. */
  readonly sigmas: Float32Array;
  /** `np.log(sigmas)` on the float32 table, as diffusers' σ→t interpolation uses it. */
  readonly logSigmas: Float32Array;
}

export function trainSchedule(
  schedule: BetaSchedule,
  betaStart: number,
  betaEnd: number,
  numTrainTimesteps: number,
): TrainSchedule {
  const ac = alphasCumprod(betas(schedule, betaStart, betaEnd, numTrainTimesteps));
  const sigmas = trainSigmas(ac);
  const logSigmas = new Float32Array(sigmas.length);
  for (let i = 0; i < sigmas.length; i++) logSigmas[i] = Math.log(sigmas[i]!);
  return { numTrainTimesteps, alphasCumprod: ac, sigmas, logSigmas };
}

/**
 * Descending timesteps as diffusers spaces them (Table 2 of "Common Diffusion Noise Schedules and Sample Steps
 * are Flawed"), before each scheduler's own cast: `linspace` is left unrounded (the Euler family keeps the
 * fractions, DDIM and DPM-Solver round them), `leading` adds `steps_offset`, `trailing` ends at T/N − 1.
 */
export function spacedTimesteps(
  spacing: TimestepSpacing,
  numSteps: number,
  numTrainTimesteps: number,
  stepsOffset: number,
): Float64Array {
  switch (spacing) {
    case "linspace":
      return linspace(0, numTrainTimesteps - 1, numSteps).reverse();
    case "leading": {
      const ratio = Math.floor(numTrainTimesteps / numSteps);
      const out = new Float64Array(numSteps);
      for (let i = 0; i < numSteps; i++) out[i] = (numSteps - 1 - i) * ratio + stepsOffset;
      return out;
    }
    case "trailing": {
      const out = arange(numTrainTimesteps, 0, -numTrainTimesteps / numSteps);
      for (let i = 0; i < out.length; i++) out[i] = roundHalfEven(out[i]!) - 1;
      return out;
    }
  }
}

/** `np.interp(x, arange(len(table)), table)`. */
export function interpAtTimesteps(timesteps: Float64Array, table: Float32Array): Float64Array {
  const out = new Float64Array(timesteps.length);
  const last = table.length - 1;
  for (let i = 0; i < timesteps.length; i++) {
    const x = timesteps[i]!;
    if (x <= 0) out[i] = table[0]!;
    else if (x >= last) out[i] = table[last]!;
    else {
      const j = Math.floor(x);
      out[i] = j === x ? table[j]! : (table[j + 1]! - table[j]!) * (x - j) + table[j]!;
    }
  }
  return out;
}

/** Karras et al. (2022) σ schedule, ρ = 7, from σ_max down to σ_min (k-diffusion's `get_sigmas_karras` without the 0). */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, numSteps: number, rho = 7): Float64Array {
  const ramp = linspace(0, 1, numSteps);
  const minInvRho = sigmaMin ** (1 / rho);
  const maxInvRho = sigmaMax ** (1 / rho);
  const out = new Float64Array(numSteps);
  for (let i = 0; i < numSteps; i++) out[i] = (maxInvRho + ramp[i]! * (minInvRho - maxInvRho)) ** rho;
  return out;
}

/** diffusers' `_sigma_to_t`: the (fractional) training timestep whose σ is `sigma`, interpolated in log σ. */
export function sigmaToT(sigma: number, logSigmas: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  // The last index whose log σ does not exceed ours (0 if none), kept below the top so `high` exists.
  let low = 0;
  for (let i = 0; i < logSigmas.length; i++) if (logSigma - logSigmas[i]! >= 0) low = i;
  low = Math.min(low, logSigmas.length - 2);
  const lo = logSigmas[low]!;
  const hi = logSigmas[low + 1]!;
  const w = Math.min(1, Math.max(0, (lo - logSigma) / (lo - hi)));
  return (1 - w) * low + w * (low + 1);
}
