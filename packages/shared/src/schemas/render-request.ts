import { z } from "@hono/zod-openapi";

import type { BucketPolicy } from "../buckets/resolution-buckets.js";
import { JOB_EVENT_TYPES } from "./job-event.js";

export const RENDER_MODES = ["base", "ensemble", "sdedit", "img2img", "inpaint", "outpaint"] as const;
/** Modes that start from the user's picture. */
export const IMAGE_MODES = ["img2img", "inpaint", "outpaint"] as const;
export const IMAGE_RESIZE_MODES = ["fit", "fill", "crop"] as const;
/** How an image mode uses the refiner: not at all, as the ensemble's last steps, or as an SDEdit pass after. */
export const IMAGE_REFINER_MODES = ["none", "ensemble", "sdedit"] as const;
export type ImageMode = (typeof IMAGE_MODES)[number];
export type ImageResize = (typeof IMAGE_RESIZE_MODES)[number];
export const isImageMode = (mode: string): mode is ImageMode => (IMAGE_MODES as readonly string[]).includes(mode);
/** Default `strength` per mode, as diffusers' pipelines have it (inpaint: 0.9999, so the image latents still count). */
export const DEFAULT_STRENGTH: Record<RenderMode, number> = {
  base: 0.3,
  ensemble: 0.3,
  sdedit: 0.3,
  img2img: 0.3,
  inpaint: 0.9999,
  outpaint: 0.9999,
};
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
  /** Resolution buckets (KILN_BUCKETS, KILN_STRICT_BUCKETS); absent: sizes are kept as asked, with no bucket. */
  buckets?: BucketPolicy;
  /** Whether a request may send `watermark: false` (KILN_ALLOW_UNWATERMARKED); refused when absent. */
  allowUnwatermarked?: boolean;
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

const imageInput = (field: string) =>
  z
    .string()
    .min(1, `${field} must not be empty`)
    .openapi({
      description: `img2img/inpaint/outpaint: a data URL (\`data:image/png;base64,…\`), bare base64, or an https URL Kiln fetches. PNG, JPEG or WebP. Or send it as the \`${field}\` part of a multipart/form-data request.`,
    });

const expandSide = (side: string) =>
  z
    .number()
    .int()
    .min(0)
    .max(1024)
    .refine((v) => v % 8 === 0, { message: `expand.${side} must be a multiple of 8` })
    .default(0);

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
      width: side("width")
        .optional()
        .openapi({ description: "Default 1024; with an input image, the image's size (aspect kept, within budget)." }),
      height: side("height").optional(),
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
      strength: z.number().gt(0).max(1).optional().openapi({
        description:
          "sdedit: how far the refiner re-noises the base image (default 0.3). img2img/inpaint/outpaint: how far the input picture is re-noised (default 0.3 for img2img, 0.9999 for inpaint and outpaint); the job costs about this share of a full render.",
      }),
      image: imageInput("image").optional(),
      mask: imageInput("mask")
        .optional()
        .openapi({ description: "inpaint: white = repaint, black = keep; the same size as the image." }),
      resize: z.enum(IMAGE_RESIZE_MODES).default("fit").openapi({
        description:
          "How the image is brought to width × height: `fit` scales to exactly that size; `fill` keeps it whole and fills the borders with its stretched edges; `crop` covers the size and cuts the overflow (centred).",
      }),
      mask_blur: z
        .number()
        .min(0)
        .max(64)
        .default(0)
        .openapi({ description: "inpaint/outpaint: Gaussian σ (pixels) of the mask edge in the final composite." }),
      padding_mask_crop: z
        .number()
        .int("padding_mask_crop must be a whole number of pixels")
        .min(0, "padding_mask_crop must be at least 0")
        .max(4096, "padding_mask_crop must be at most 4096")
        .optional()
        .openapi({
          description:
            "inpaint/outpaint: render only a crop around the mask, grown by this many pixels on each side and then to the render's aspect ratio, at the full render size, and paste it back (diffusers' `padding_mask_crop`). Detail in a small masked area; the output keeps the picture's size.",
        }),
      expand: z
        .object({
          left: expandSide("left"),
          right: expandSide("right"),
          top: expandSide("top"),
          bottom: expandSide("bottom"),
        })
        .strict()
        .optional()
        .openapi({ description: "outpaint: pixels added on each side (multiples of 8)." }),
      refiner: z.enum(IMAGE_REFINER_MODES).default("none").openapi({
        description:
          "img2img/inpaint/outpaint: `ensemble` hands the last `1 − high_noise_frac` of the schedule to the refiner; `sdedit` runs the refiner after, at `refiner_strength`.",
      }),
      refiner_strength: z.number().gt(0).max(1).default(0.3),
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
      watermark: z.boolean().default(true).openapi({
        description:
          "The SDXL invisible watermark (invisible-watermark's dwtDct with SDXL's 48-bit message), as diffusers applies it to images at least 256 px wide. `false` only where the server sets KILN_ALLOW_UNWATERMARKED.",
      }),
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
      const imageMode = isImageMode(body.mode);
      if (imageMode && body.image === undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["image"],
          message: `mode ${body.mode} needs an image: a data URL, base64, an https URL, or a multipart part named image`,
        });
      }
      if (!imageMode) {
        for (const field of ["image", "mask", "expand"] as const) {
          if (body[field] !== undefined)
            ctx.addIssue({
              code: "custom",
              path: [field],
              message: `${field} is used by modes img2img, inpaint and outpaint; set mode, or leave ${field} out`,
            });
        }
        if (body.refiner !== "none")
          ctx.addIssue({
            code: "custom",
            path: ["refiner"],
            message: "refiner applies to img2img, inpaint and outpaint; text-to-image picks it with mode",
          });
      }
      if (!body.watermark && !limits.allowUnwatermarked) {
        ctx.addIssue({
          code: "custom",
          path: ["watermark"],
          message:
            "this server marks every image with the SDXL invisible watermark; leave watermark out (or true), or ask the operator to set KILN_ALLOW_UNWATERMARKED",
        });
      }
      if (body.padding_mask_crop !== undefined && body.mode !== "inpaint" && body.mode !== "outpaint") {
        ctx.addIssue({
          code: "custom",
          path: ["padding_mask_crop"],
          message: "padding_mask_crop is used by modes inpaint and outpaint; set mode, or leave padding_mask_crop out",
        });
      }
      if (body.mode === "inpaint" && body.mask === undefined) {
        ctx.addIssue({ code: "custom", path: ["mask"], message: "inpaint needs a mask (white = repaint)" });
      }
      if (body.mode !== "inpaint" && body.mask !== undefined && imageMode) {
        ctx.addIssue({ code: "custom", path: ["mask"], message: "mask is used by mode inpaint; set mode inpaint" });
      }
      if (body.mode === "outpaint") {
        const e = body.expand;
        if (!e || e.left + e.right + e.top + e.bottom === 0)
          ctx.addIssue({
            code: "custom",
            path: ["expand"],
            message: 'outpaint needs expand with at least one side above 0, e.g. {"right": 256}',
          });
      }
      if (imageMode && body.refiner === "ensemble") {
        const strength = body.strength ?? DEFAULT_STRENGTH[body.mode];
        if (strength <= 1 - body.high_noise_frac)
          ctx.addIssue({
            code: "custom",
            path: ["strength"],
            message: `with refiner ensemble the strength must exceed 1 − high_noise_frac (${1 - body.high_noise_frac}) so the base has steps to run; raise strength or use refiner sdedit`,
          });
      }
      // The refine stage of an SDEdit runs trunc(steps × strength) steps (diffusers' img2img rule):
      // refuse at submit what would otherwise run the base stage and then fail.
      const sdeditStrength = body.strength ?? DEFAULT_STRENGTH.sdedit;
      if (body.mode === "sdedit" && Math.trunc(body.steps * sdeditStrength) < 1) {
        const message = `strength × steps must be at least 1 so the SDEdit stage has a step to run (strength ${sdeditStrength} × steps ${body.steps} = ${+(sdeditStrength * body.steps).toFixed(4)}); raise strength or steps`;
        ctx.addIssue({ code: "custom", path: ["strength"], message });
        ctx.addIssue({ code: "custom", path: ["steps"], message });
      }
      // The budget applies to the images the job produces: an SDEdit latent upscale grows them. Without a size,
      // an image mode takes the picture's (checked when it is read).
      if (imageMode && (body.width === undefined || body.height === undefined)) return;
      const scale = body.mode === "sdedit" ? body.hires_scale : 1;
      const e = body.mode === "outpaint" && body.expand ? body.expand : { left: 0, right: 0, top: 0, bottom: 0 };
      const width = (body.width ?? 1024) + e.left + e.right;
      const height = (body.height ?? 1024) + e.top + e.bottom;
      const pixels = Math.round((width / 8) * scale) * 8 * Math.round((height / 8) * scale) * 8;
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
