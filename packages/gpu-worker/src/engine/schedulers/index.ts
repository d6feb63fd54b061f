import { KilnError, type SchedulerName } from "@kiln/shared";

import { DdimScheduler } from "./ddim.js";
import { DpmSolverPlusPlus2MScheduler } from "./dpmpp-2m.js";
import { EulerScheduler } from "./euler.js";
import { EulerAncestralScheduler } from "./euler-ancestral.js";
import {
  commonSettings,
  type LatentSpace,
  type Scheduler,
  type SchedulerConfig,
  schedulerConfigSchema,
  unsupportedSetting,
} from "./scheduler.js";

export type { LatentSpace, Scheduler, SchedulerConfig, SchedulerName, StepNoise } from "./scheduler.js";
export { schedulerConfigSchema } from "./scheduler.js";
export { DdimScheduler, DpmSolverPlusPlus2MScheduler, EulerAncestralScheduler, EulerScheduler };

/** The diffusers classes Kiln implements, by the name its API uses for them. */
export const SCHEDULER_CLASSES: Readonly<Record<string, SchedulerName>> = {
  EulerDiscreteScheduler: "euler",
  EulerAncestralDiscreteScheduler: "euler_a",
  DPMSolverMultistepScheduler: "dpmpp_2m",
  DDIMScheduler: "ddim",
};

/**
 * A scheduler for a model's config. Without `choice.name` it is the config's own class. Settings the config
 * leaves out take the chosen class's diffusers defaults (`from_config` semantics). `choice.karras` overrides the
 * config's `use_karras_sigmas`; DDIM has no Karras schedule, and Euler ancestral uses one only when asked.
 */
export function createScheduler(
  config: SchedulerConfig,
  choice: { name?: SchedulerName; karras?: boolean } = {},
): Scheduler {
  const name = choice.name ?? SCHEDULER_CLASSES[config._class_name ?? ""];
  if (!name) {
    throw new KilnError(
      "model_scheduler_unsupported",
      `The model's scheduler class ${JSON.stringify(config._class_name ?? null)} is not one Kiln implements (${Object.keys(SCHEDULER_CLASSES).join(", ")}); choose a scheduler explicitly: euler, euler_a, dpmpp_2m or ddim.`,
      {
        details: { field: "_class_name", value: config._class_name ?? null, supported: Object.keys(SCHEDULER_CLASSES) },
      },
    );
  }
  const karras = choice.karras ?? config.use_karras_sigmas ?? false;
  switch (name) {
    case "euler":
      return new EulerScheduler(config, karras);
    case "euler_a":
      return new EulerAncestralScheduler(config, choice.karras ?? false);
    case "dpmpp_2m":
      return new DpmSolverPlusPlus2MScheduler(config, karras);
    case "ddim":
      if (choice.karras) throw unsupportedSetting("karras (with ddim)", true, [false], undefined, 422);
      return new DdimScheduler(config);
  }
}

/** Validates a parsed `scheduler_config.json`; unknown keys are dropped, as diffusers ignores them. */
export function parseSchedulerConfig(json: unknown, file: string): SchedulerConfig {
  const parsed = schedulerConfigSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.join(".") || "(root)";
    throw new KilnError(
      "model_scheduler_invalid",
      `${file}: ${field}: ${issue.message}. The model's scheduler_config.json is malformed.`,
      {
        details: {
          file,
          field,
          issues: parsed.error.issues.map((i) => ({ path: i.path.join("."), message: i.message })),
        },
      },
    );
  }
  commonSettings(parsed.data, "linspace", file);
  return parsed.data;
}

const NON_FINITE = /([:[,]\s*)(-?Infinity|NaN)(?=\s*[,}\]])/g;
const NON_FINITE_TAG = "__kiln_non_finite__:";

/**
 * Parses the text of a `scheduler_config.json`. Python's json module writes `-Infinity` (DPM-Solver's
 * `lambda_min_clipped`), `Infinity` and `NaN`, which JSON.parse rejects, so those bare tokens are read as numbers.
 */
export function parseSchedulerConfigText(text: string, file: string): SchedulerConfig {
  let json: unknown;
  try {
    json = JSON.parse(
      text.replace(NON_FINITE, (_, lead: string, token: string) => `${lead}"${NON_FINITE_TAG}${token}"`),
      (_, value: unknown) =>
        typeof value === "string" && value.startsWith(NON_FINITE_TAG)
          ? Number(value.slice(NON_FINITE_TAG.length))
          : value,
    );
  } catch (e) {
    throw new KilnError(
      "model_scheduler_invalid",
      `${file} is not valid JSON (${(e as Error).message}); re-export the model's scheduler config.`,
      {
        details: { file },
        cause: e,
      },
    );
  }
  return parseSchedulerConfig(json, file);
}

/**
 * Re-expresses latents for the other scheduler family at noise level σ (a hand-over between stages):
 * VP latents are the VE latents (x₀ + σε) divided by √(σ²+1). Returns a new array.
 */
export function convertLatentSpace(
  latents: Float32Array,
  sigma: number,
  from: LatentSpace,
  to: LatentSpace,
): Float32Array {
  const out = new Float32Array(latents);
  if (from === to) return out;
  const scale = Math.sqrt(sigma * sigma + 1);
  const factor = from === "ve" ? 1 / scale : scale;
  for (let i = 0; i < out.length; i++) out[i] = out[i]! * factor;
  return out;
}
