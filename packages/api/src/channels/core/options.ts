import {
  RENDER_MODES,
  type RenderLimits,
  type RenderPlan,
  type RenderRequest,
  renderRequestSchema,
} from "@kiln/shared";

/** The options both chat commands take; every value is a string or number as the platform sent it. */
export interface ChatOptions {
  prompt?: string;
  negative?: string;
  mode?: string;
  size?: string;
  seed?: string | number;
  steps?: string | number;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

export const OPTION_HELP = [
  "`prompt` — what to draw (required)",
  "`negative` — what to keep out of the picture",
  `\`mode\` — ${RENDER_MODES.join(", ")} (default ensemble)`,
  "`size` — WIDTHxHEIGHT in pixels, multiples of 8 (default 1024x1024)",
  "`seed` — a whole number, for a repeatable picture (default random)",
  "`steps` — denoising steps, 1–150 (default 30)",
];

/**
 * Chat options → a render request through the same zod schema as `POST /v1/renders`, so a chat
 * user gets exactly the API's rules; the first problem comes back as a sentence naming the option.
 */
export function chatOptionsToRequest(options: ChatOptions, limits: RenderLimits): Parsed<RenderRequest> {
  const body: Record<string, unknown> = { prompt: options.prompt?.trim() ?? "" };
  if (options.negative?.trim()) body.negative_prompt = options.negative.trim();
  if (options.mode !== undefined) body.mode = String(options.mode).trim().toLowerCase();
  if (options.size !== undefined) {
    const match = /^\s*(\d+)\s*[x×*]\s*(\d+)\s*$/i.exec(String(options.size));
    if (!match) return { ok: false, message: `size must look like 512x768 (width x height), not "${options.size}".` };
    body.width = Number(match[1]);
    body.height = Number(match[2]);
  }
  for (const field of ["seed", "steps"] as const) {
    const raw = options[field];
    if (raw === undefined) continue;
    const value = typeof raw === "number" ? raw : Number(String(raw).trim());
    if (!Number.isFinite(value) || String(raw).trim() === "")
      return { ok: false, message: `${field} must be a whole number, not "${raw}".` };
    body[field] = value;
  }
  return validate(body, limits);
}

/** The request a finished job was rendered from, for the re-roll, variations and upscale buttons. */
export function requestFromPlan(plan: RenderPlan): Record<string, unknown> {
  return {
    prompt: plan.prompt,
    ...(plan.prompt2 !== undefined ? { prompt_2: plan.prompt2 } : {}),
    ...(plan.negativePrompt !== undefined ? { negative_prompt: plan.negativePrompt } : {}),
    ...(plan.negativePrompt2 !== undefined ? { negative_prompt_2: plan.negativePrompt2 } : {}),
    mode: plan.mode,
    width: plan.width,
    height: plan.height,
    steps: plan.steps,
    guidance_scale: plan.guidanceScale,
    guidance_rescale: plan.guidanceRescale,
    n: plan.n,
    high_noise_frac: plan.highNoiseFrac,
    strength: plan.strength,
    hires_scale: plan.hiresScale,
    ...(plan.scheduler !== undefined ? { scheduler: plan.scheduler } : {}),
    ...(plan.karras !== undefined ? { karras: plan.karras } : {}),
    ...(plan.clipSkip !== undefined ? { clip_skip: plan.clipSkip } : {}),
    long_prompt: plan.longPrompt,
    prompt_weighting: plan.promptWeighting,
    output_format: plan.outputFormat,
    output_quality: plan.outputQuality,
    ...(plan.watermark === false ? { watermark: false } : {}),
  };
}

export function validate(body: Record<string, unknown>, limits: RenderLimits): Parsed<RenderRequest> {
  const parsed = renderRequestSchema(limits).safeParse(body);
  if (parsed.success) return { ok: true, value: parsed.data as RenderRequest };
  const issue = parsed.error.issues[0]!;
  const field = issue.path.join(".");
  const name = CHAT_NAMES[field] ?? field;
  return { ok: false, message: name ? `${name}: ${issue.message}.` : `${issue.message}.` };
}

const CHAT_NAMES: Record<string, string> = {
  prompt: "prompt",
  negative_prompt: "negative",
  mode: "mode",
  width: "size (width)",
  height: "size (height)",
  seed: "seed",
  steps: "steps",
};

const FLAGS = new Set(["negative", "mode", "size", "seed", "steps"]);

/**
 * Slack's `/kiln` text: `<prompt> [--negative …] [--mode …] [--size WxH] [--seed N] [--steps N]`.
 * A flag's value runs to the next flag, so negatives need no quotes; `--flag=value` works too.
 */
export function parseCommandText(text: string): Parsed<ChatOptions> {
  const options: ChatOptions = {};
  const prompt: string[] = [];
  let current: keyof ChatOptions | undefined;
  const values: Partial<Record<keyof ChatOptions, string[]>> = {};
  for (const word of text.trim().split(/\s+/).filter(Boolean)) {
    const flag = /^(?:--|—)([a-z]+)(?:=(.*))?$/i.exec(word);
    if (flag) {
      const name = flag[1]!.toLowerCase();
      if (!FLAGS.has(name))
        return { ok: false, message: `unknown option --${name}; the options are --${[...FLAGS].join(", --")}.` };
      current = name as keyof ChatOptions;
      if (values[current]) return { ok: false, message: `--${name} is given twice; give it once.` };
      values[current] = flag[2] ? [flag[2]] : [];
      continue;
    }
    if (current) values[current]!.push(word);
    else prompt.push(word);
  }
  for (const [name, words] of Object.entries(values) as [keyof ChatOptions, string[]][]) {
    if (words.length === 0) return { ok: false, message: `--${name} needs a value.` };
    if (name !== "negative" && words.length > 1)
      return { ok: false, message: `--${name} takes one value, got "${words.join(" ")}".` };
    (options as Record<string, string>)[name] = words.join(" ");
  }
  options.prompt = prompt.join(" ");
  return { ok: true, value: options };
}
