import { isImageMode, isKilnError, type JobRecord, type RenderRequest } from "@kiln/shared";

import {
  DEFAULT_IMAGE_INPUT_LIMITS,
  MULTIPART_FILE,
  receiveInputs,
  type SubmittedInputs,
} from "../../inputs/image-inputs.js";
import type { ApiRuntime } from "../../runtime.js";
import type { ButtonAction } from "./buttons.js";
import { requestFromPlan, validate } from "./options.js";

/** Variations: img2img from the result at a small strength — the same picture, reworked in its details. */
export const VARIATION_STRENGTH = 0.35;
/** Upscale: SDEdit from the result at a larger size — enough re-noising to draw new detail, not a new picture. */
export const UPSCALE_STRENGTH = 0.3;
export const UPSCALE_FACTOR = 2;

export type ButtonRender =
  { ok: true; request: RenderRequest; inputs?: SubmittedInputs } | { ok: false; message: string };

const newSeed = () => crypto.getRandomValues(new Uint32Array(1))[0]!;

/**
 * The larger size of an upscale: ×UPSCALE_FACTOR, held within KILN_MAX_SIDE and KILN_MAX_PIXELS, in multiples
 * of 8 with the picture's aspect; null when the server cannot render it any larger.
 */
export function upscaledSize(
  width: number,
  height: number,
  limits: { maxSide: number; maxPixels: number },
): { width: number; height: number } | null {
  const scale = Math.min(
    UPSCALE_FACTOR,
    limits.maxSide / width,
    limits.maxSide / height,
    Math.sqrt(limits.maxPixels / (width * height)),
  );
  const out = { width: Math.floor((width * scale) / 8) * 8, height: Math.floor((height * scale) / 8) * 8 };
  return out.width > width && out.height > height ? out : null;
}

/**
 * The render a re-roll, variations or upscale press starts from a finished chat job: its request rebuilt from the
 * plan, and for image modes the picture (the job's first output, or for a re-roll of an image-mode job its own
 * inputs) read from the blob store and checked by the same `receiveInputs` as an upload to `/v1/renders`.
 */
export async function buttonRender(
  rt: ApiRuntime,
  source: JobRecord,
  action: Exclude<ButtonAction, "info">,
): Promise<ButtonRender> {
  const { deps } = rt;
  const plan = source.plan;
  const files: { image?: Uint8Array; mask?: Uint8Array } = {};
  const gone = {
    ok: false,
    message: "That render's picture is gone (outputs are kept for a limited time); start a new one.",
  } as const;
  let body: Record<string, unknown>;
  if (action === "reroll") {
    body = { ...requestFromPlan(plan), seed: newSeed() };
    if (plan.source && isImageMode(plan.mode)) {
      const image = await deps.ports.blobs.get(plan.source.image);
      const mask = plan.source.mask ? await deps.ports.blobs.get(plan.source.mask) : undefined;
      if (!image || mask === null) return gone;
      files.image = image;
      if (mask) files.mask = mask;
      body = {
        ...body,
        image: MULTIPART_FILE,
        ...(mask ? { mask: MULTIPART_FILE } : {}),
        width: plan.source.width,
        height: plan.source.height,
        resize: plan.source.resize,
        mask_blur: plan.source.maskBlur,
        ...(plan.source.expand ? { expand: plan.source.expand } : {}),
        ...(plan.source.paddingMaskCrop !== undefined ? { padding_mask_crop: plan.source.paddingMaskCrop } : {}),
      };
    }
  } else {
    const first = source.images[0];
    if (source.status !== "succeeded" || !first)
      return { ok: false, message: "That render has no finished picture to start from; re-roll it instead." };
    const image = await deps.ports.blobs.get(first.key);
    if (!image) return gone;
    files.image = image;
    let size = { width: first.width, height: first.height };
    if (action === "upscale") {
      const larger = upscaledSize(first.width, first.height, deps.limits);
      if (!larger)
        return {
          ok: false,
          message: `That picture is ${first.width}×${first.height}, already as large as this Kiln server renders.`,
        };
      size = larger;
    }
    const strength = action === "vary" ? VARIATION_STRENGTH : UPSCALE_STRENGTH;
    const { hires_scale: _h, high_noise_frac: _f, ...kept } = requestFromPlan(plan);
    body = {
      ...kept,
      mode: "img2img",
      image: MULTIPART_FILE,
      strength,
      ...size,
      resize: "fit",
      // img2img runs trunc(steps × strength) steps: at least one.
      steps: Math.max(plan.steps, Math.ceil(1 / strength)),
      n: action === "upscale" ? 1 : plan.n,
      seed: newSeed(),
    };
  }
  const parsed = validate(body, deps.limits);
  if (!parsed.ok) return parsed;
  if (!isImageMode(parsed.value.mode)) return { ok: true, request: parsed.value };
  try {
    const inputs = await receiveInputs(
      parsed.value,
      files,
      deps.imageInputs ?? DEFAULT_IMAGE_INPUT_LIMITS,
      deps.webhooks ?? { allowPrivate: false, allowedHosts: [] },
    );
    return { ok: true, request: parsed.value, inputs };
  } catch (e) {
    if (isKilnError(e) && e.status >= 400 && e.status < 500) {
      deps.log?.("warn", { jobId: source.id, code: e.code }, "chat button picture refused");
      return { ok: false, message: e.message };
    }
    throw e;
  }
}
