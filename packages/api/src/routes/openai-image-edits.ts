import { isKilnError, type RenderRequestInput, renderRequestSchema } from "@kiln/shared";
import type { Context } from "hono";

import { apiRouter } from "../http/openapi.js";
import { problem, problemFromError, validationProblem } from "../http/problem.js";
import { readImageHeader } from "../inputs/image-header.js";
import { DEFAULT_IMAGE_INPUT_LIMITS, MULTIPART_FILE, receiveInputs } from "../inputs/image-inputs.js";
import { renderAdmission } from "../renders/render-admission.js";
import { submitRender } from "../renders/render-service.js";
import type { ApiRuntime } from "../runtime.js";
import { answerWhenEnded } from "./openai-images.js";

/** OpenAI fields that change nothing here (Kiln renders with its own SDXL models). */
const IGNORED = new Set(["model", "quality", "style", "background", "moderation", "user", "input_fidelity"]);
const SIZE = /^(\d{1,5})x(\d{1,5})$/;
/** A variation keeps the picture's layout and redraws its detail; an edit without a mask redraws more. */
const VARIATION_STRENGTH = 0.5;
const WHOLE_EDIT_STRENGTH = 0.75;

interface OpenAiForm {
  text: Record<string, string>;
  image?: Uint8Array;
  mask?: Uint8Array;
}

function invalid(param: string, message: string): Response {
  return problem(400, "invalid_request", `The request body is invalid — ${param}: ${message}.`, {
    errors: [{ field: param, message }],
  });
}

/** OpenAI's multipart body; `image[]` (the SDK's name for a list) is read as `image`, its first file. */
async function readForm(request: Request, allowed: Set<string>): Promise<OpenAiForm | Response> {
  if (!/^multipart\/form-data/i.test(request.headers.get("content-type") ?? ""))
    return problem(415, "unsupported_media_type", "OpenAI image edits and variations are multipart/form-data.", {
      errors: [{ field: "header.content-type", message: "must be multipart/form-data" }],
    });
  let form: FormData;
  try {
    form = await request.formData();
  } catch (e) {
    return invalid("body", `the multipart body could not be read (${e instanceof Error ? e.message : String(e)})`);
  }
  const out: OpenAiForm = { text: {} };
  for (const [rawName, value] of form.entries()) {
    const name = rawName === "image[]" ? "image" : rawName;
    if (typeof value !== "string") {
      if (name !== "image" && name !== "mask") return invalid(name, "only image and mask may be files");
      if (!out[name]) out[name] = new Uint8Array(await value.arrayBuffer());
      continue;
    }
    if (IGNORED.has(name)) continue;
    if (!allowed.has(name)) return invalid(name, `unknown field "${name}"; remove it`);
    out.text[name] = value;
  }
  if (!out.image) return invalid("image", "send the picture as a file part named image");
  return out;
}

/** `POST /v1/images/edits` and `/v1/images/variations`: OpenAI's image-input endpoints over Kiln renders. */
export function openAiImageEditRoutes(rt: ApiRuntime) {
  const { deps } = rt;
  const app = apiRouter();
  const schema = renderRequestSchema(deps.limits);

  const run = async (c: Context, form: OpenAiForm, request: RenderRequestInput, maskFrom: "luminance" | "alpha") => {
    const t = form.text;
    const n = t.n === undefined ? 1 : Number(t.n);
    if (!Number.isInteger(n) || n < 1 || n > 4) return invalid("n", "must be a whole number from 1 to 4");
    const format = t.response_format ?? "url";
    if (format !== "url" && format !== "b64_json") return invalid("response_format", 'must be "url" or "b64_json"');
    let size: { width: number; height: number } | undefined;
    if (t.size && t.size !== "auto") {
      const m = SIZE.exec(t.size);
      if (!m) return invalid("size", 'must be "WIDTHxHEIGHT" (e.g. "1024x1024") or "auto"');
      size = { width: Number(m[1]), height: Number(m[2]) };
    }
    const parsed = schema.safeParse({
      ...request,
      n,
      ...(size ? { ...size, resize: "crop" } : {}),
      deadline_seconds: Math.max(1, Math.ceil(rt.timing.syncWaitSeconds)),
    });
    if (!parsed.success)
      return validationProblem(
        parsed.error.issues.map((i) => ({
          ...i,
          path: [["width", "height"].includes(String(i.path[0])) ? "size" : String(i.path[0])],
        })),
      );
    try {
      const inputs = await receiveInputs(
        parsed.data,
        { image: form.image, mask: form.mask },
        deps.imageInputs ?? DEFAULT_IMAGE_INPUT_LIMITS,
        deps.webhooks ?? { allowPrivate: false, allowedHosts: [] },
        maskFrom,
      );
      const submitted = await submitRender(deps.ports, {
        ownerKeyId: c.get("key").id,
        request: parsed.data,
        now: rt.now(),
        retentionHours: deps.retentionHours,
        admission: renderAdmission(c.get("key"), deps),
        inputs,
        limits: deps.limits,
        buckets: deps.limits.buckets,
      });
      return answerWhenEnded(rt, c, submitted, format);
    } catch (e) {
      if (isKilnError(e) && e.status >= 400 && e.status < 500) {
        deps.log?.("info", { code: e.code }, e.message);
        return problemFromError(e);
      }
      throw e;
    }
  };

  // Plain routes (their bodies are multipart, read by hand); documented in docs/api.md.
  app.post("/v1/images/edits", async (c) => {
    const form = await readForm(c.req.raw, new Set(["prompt", "n", "size", "response_format"]));
    if (form instanceof Response) return form;
    if (!form.text.prompt) return invalid("prompt", "describe the edit");
    // OpenAI marks the area to edit with transparency (of the mask, else of the picture). A picture with no
    // transparency and no mask is edited as a whole: img2img.
    let wholeEdit = false;
    if (!form.mask) {
      try {
        wholeEdit = !readImageHeader(form.image!).hasAlpha;
      } catch {
        wholeEdit = false; // the input check below names the problem
      }
    }
    return run(
      c,
      form,
      wholeEdit
        ? { prompt: form.text.prompt, mode: "img2img", image: MULTIPART_FILE, strength: WHOLE_EDIT_STRENGTH }
        : {
            prompt: form.text.prompt,
            mode: "inpaint",
            image: MULTIPART_FILE,
            mask: MULTIPART_FILE,
          },
      "alpha",
    );
  });

  app.post("/v1/images/variations", async (c) => {
    const form = await readForm(c.req.raw, new Set(["n", "size", "response_format"]));
    if (form instanceof Response) return form;
    if (form.mask) return invalid("mask", "variations take no mask; use /v1/images/edits");
    // OpenAI's variations have no prompt: without guidance (scale 1) the prompt barely steers, and the picture
    // re-noised to half strength keeps its composition.
    return run(
      c,
      form,
      {
        prompt: "a picture",
        mode: "img2img",
        image: MULTIPART_FILE,
        strength: VARIATION_STRENGTH,
        guidance_scale: 1,
      },
      "luminance",
    );
  });
  return app;
}
