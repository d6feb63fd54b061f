import { VeScheduler } from "./euler.js";
import type { SchedulerConfig } from "./scheduler.js";

const f32 = Math.fround;

/**
 * diffusers' `EulerAncestralDiscreteScheduler`: an Euler step down to σ_down, then fresh noise of σ_up, so that
 * σ_down² + σ_up² = σ_next². Every step draws a full noise tensor — the last one too, where σ_up is 0 — to keep
 * the generator stream in step with diffusers. With `karras` the same update runs on Karras σ (k-diffusion's
 * `sample_euler_ancestral`); diffusers' class itself has no Karras option.
 */
export class EulerAncestralScheduler extends VeScheduler {
  readonly name = "euler_a" as const;
  readonly stochastic = true;

  constructor(config: SchedulerConfig, karras: boolean) {
    super(config, { karras, finalSigma: "zero" });
  }

  protected descent(sigma: number, sigmaNext: number): { to: number; up: number } {
    const from2 = f32(sigma * sigma);
    const to2 = f32(sigmaNext * sigmaNext);
    const up = f32(Math.sqrt(f32(f32(to2 * f32(from2 - to2)) / from2)));
    return { to: f32(Math.sqrt(f32(to2 - f32(up * up)))), up };
  }
}
