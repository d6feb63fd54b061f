import { z } from "@hono/zod-openapi";

import { JOB_EVENT_TYPES } from "./job-event.js";

export const RENDER_MODES = ["base", "ensemble", "sdedit"] as const;
export const SCHEDULER_NAMES = ["euler", "euler_a", "dpmpp_2m", "ddim"] as const;
export const OUTPUT_FORMATS = ["png", "webp", "jpeg"] as const;
export type RenderMode = (typeof RENDER_MODES)[number];
export type SchedulerName = (typeof SCHEDULER_NAMES)[number];
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** Bounds the API enforces; the config may narrow them. */
export interface RenderLimits {
  minSide: number;
  maxSide: number;
  maxPixels: number;
  maxPromptChars: number;
  /** Upper bound of `retention_hours` (KILN_MAX_RETENTION_HOURS); 30 days when absent. */
  maxRetentionHours?: number;
}

export const DEFAULT_RENDER_LIMITS: RenderLimits = {
  minSide: 64,
  maxSide: 2048,
  maxPixels: 2048 * 2048,
  maxPromptChars: 4000,
};

const multipleOf8 = (field: string) =>
  z
    .number()
    .int(`${field} must be a whole number of pixels`)
    .refine((v) => v % 8 === 0, { message: `${field} must be a multiple of 8 (the VAE works on 8×8 blocks)` });

const webhookUrl = z
  .string()
  .max(2048, "webhook.url must be at most 2048 characters")
  .refine(
    (value) => {
      try {
        const url = new URL(value);
        return (url.protocol === "https:" || url.protocol === "http:") && url.hostname !== "";
      } catch {
        return false;
      }
    },
    { message: "webhook.url must be an absolute http(s) URL" },
  );

/** Where to POST this job's events, and which (default: all but `progress`). */
export const webhookTargetSchema = z
  .object({
    url: webhookUrl.openapi({ example: "https://example.com/kiln-hook" }),
    events: z
      .array(z.enum(JOB_EVENT_TYPES))
      .min(1, "list at least one event, or leave events out for every event but progress")
      .refine((list) => new Set(list).size === list.length, { message: "list each event once" })
      .optional(),
  })
  .strict()
  .openapi("WebhookTarget", {
    description:
      "Signed per Standard Webhooks with the API key's `whsec_` secret; retried with exponential backoff for up to 24 h. See docs/api-keys-quotas-webhooks.md.",
  });

const sizePair = z.tuple([z.number().int().positive(), z.number().int().positive()]);

/**
 * The body of `POST /v1/renders`. Field names follow diffusers' SDXL pipeline arguments so a
 * user moving from diffusers finds what they know. Unknown fields are rejected.
 */
export function renderRequestSchema(limits: RenderLimits = DEFAULT_RENDER_LIMITS) {
  const side = (field: string) =>
    multipleOf8(field)
      .min(limits.minSide, `${field} must be at least ${limits.minSide}`)
      .max(limits.maxSide, `${field} must be at most ${limits.maxSide}`);
  const prompt = z.string().max(limits.maxPromptChars, `must be at most ${limits.maxPromptChars} characters`);
  return z
    .object({
      prompt: prompt
        .min(1, "prompt must not be empty")
        .openapi({ example: "a lighthouse on a cliff at dusk, oil painting" }),
      negative_prompt: prompt.optional(),
      prompt_2: prompt
        .optional()
        .openapi({ description: "Prompt for the second text encoder (OpenCLIP bigG); defaults to `prompt`." }),
      negative_prompt_2: prompt.optional(),
      mode: z.enum(RENDER_MODES).default("ensemble"),
      width: side("width").default(1024),
      height: side("height").default(1024),
      steps: z.number().int().min(1).max(150).default(30),
      guidance_scale: z.number().min(0).max(30).default(5),
      guidance_rescale: z.number().min(0).max(1).default(0),
      seed: z
        .number()
        .int()
        .min(0)
        .max(2 ** 32 - 1)
        .optional()
        .openapi({ description: "Random when absent; always reported." }),
      n: z.number().int().min(1).max(4).default(1),
      high_noise_frac: z
        .number()
        .gt(0)
        .lt(1)
        .default(0.8)
        .openapi({ description: "ensemble: share of the schedule the base runs." }),
      strength: z
        .number()
        .gt(0)
        .max(1)
        .default(0.3)
        .openapi({ description: "sdedit: how far the refiner re-noises the base image." }),
      hires_scale: z
        .number()
        .min(1)
        .max(2)
        .default(1)
        .openapi({ description: "sdedit: latent upscale before re-noising." }),
      scheduler: z.enum(SCHEDULER_NAMES).optional().openapi({ description: "Default: the model's own scheduler." }),
      karras: z.boolean().optional(),
      clip_skip: z.number().int().min(0).max(10).optional(),
      long_prompt: z
        .boolean()
        .default(false)
        .openapi({ description: "Encode prompts longer than 75 tokens in 75-token windows." }),
      prompt_weighting: z.boolean().default(false).openapi({ description: "Honour (word:1.2) and [word] weights." }),
      original_size: sizePair.optional(),
      crops_coords_top_left: z.tuple([z.number().int().min(0), z.number().int().min(0)]).optional(),
      target_size: sizePair.optional(),
      aesthetic_score: z.number().min(0).max(10).default(6),
      negative_aesthetic_score: z.number().min(0).max(10).default(2.5),
      output_format: z.enum(OUTPUT_FORMATS).default("png"),
      output_quality: z.number().int().min(1).max(100).default(90),
      deadline_seconds: z
        .number()
        .int()
        .min(1)
        .max(86_400)
        .optional()
        .openapi({ description: "Not started within this many seconds → `expired`, never run." }),
      retention_hours: z
        .number()
        .min(1 / 60)
        .max(limits.maxRetentionHours ?? 24 * 30)
        .optional()
        .openapi({ description: "Hours the outputs are kept after the job ends; the server's default when absent." }),
      webhook: webhookTargetSchema.optional(),
    })
    .strict()
    .superRefine((body, ctx) => {
      if (body.karras && body.scheduler === "ddim") {
        ctx.addIssue({
          code: "custom",
          path: ["karras"],
          message:
            "karras is not supported with scheduler ddim (DDIM has no Karras sigma schedule); use euler, euler_a or dpmpp_2m, or drop karras",
        });
      }
      // The budget applies to the images the job produces: an SDEdit latent upscale grows them.
      const scale = body.mode === "sdedit" ? body.hires_scale : 1;
      const pixels = Math.round((body.width / 8) * scale) * 8 * Math.round((body.height / 8) * scale) * 8;
      if (pixels > limits.maxPixels) {
        ctx.addIssue({
          code: "custom",
          path: ["width"],
          message: `width × height${scale === 1 ? "" : " × hires_scale²"} must be at most ${limits.maxPixels} pixels (got ${pixels})`,
        });
      }
    });
}

export type RenderRequest = z.infer<ReturnType<typeof renderRequestSchema>>;
export type RenderRequestInput = z.input<ReturnType<typeof renderRequestSchema>>;
