import { createRoute, z } from "@hono/zod-openapi";
import { type JobRecord, renderRequestSchema } from "@kiln/shared";
import type { Context } from "hono";
import { encodeBase64 } from "hono/utils/encode";

import { apiRouter, problems } from "../http/openapi.js";
import { problem, problemException, validationProblem } from "../http/problem.js";
import { renderAdmission } from "../renders/render-admission.js";
import { cancelRender, submitRender, waitForEnd } from "../renders/render-service.js";
import type { ApiRuntime } from "../runtime.js";

/**
 * OpenAI's fields that change nothing here: Kiln renders with its configured SDXL models, so
 * `model`, `quality`, `style`, `background`, `moderation` and `user` are accepted (clients set
 * them by habit) and ignored. Any other unknown field is rejected, as everywhere in Kiln.
 */
const IGNORED = "Accepted for compatibility and ignored.";

const SIZE_PATTERN = /^(\d{1,5})x(\d{1,5})$/;

function requestSchema(maxPromptChars: number) {
  // OpenAI accepts `null` for any optional field and SDKs pass it through, hence `nullish`.
  return z
    .object({
      prompt: z
        .string()
        .min(1, "prompt must not be empty")
        .max(maxPromptChars, `must be at most ${maxPromptChars} characters`),
      model: z.string().max(256).nullish().openapi({ description: IGNORED }),
      n: z.number().int().min(1).max(4).nullish().openapi({ description: "Images, 1–4 (default 1)." }),
      size: z
        .string()
        .regex(/^(\d{1,5}x\d{1,5}|auto)$/, 'size must be "WIDTHxHEIGHT" (e.g. "1024x1024") or "auto"')
        .nullish()
        .openapi({
          description: 'WIDTHxHEIGHT, multiples of 8 within the server\'s bounds; "auto" = 1024x1024 (default).',
        }),
      response_format: z
        .enum(["url", "b64_json"])
        .nullish()
        .openapi({ description: "`url` (default): a short-lived download URL; `b64_json`: the image bytes." }),
      output_format: z.enum(["png", "jpeg", "webp"]).nullish(),
      output_compression: z.number().int().min(0).max(100).nullish().openapi({ description: "jpeg/webp quality." }),
      stream: z
        .boolean()
        .nullish()
        .refine(
          (v) => v !== true,
          "streaming is not supported here; stream a render's progress with GET /v1/renders/{id}/events",
        ),
      partial_images: z
        .number()
        .int()
        .min(0)
        .max(3)
        .nullish()
        .openapi({ description: `${IGNORED} (no streaming)` }),
      quality: z.string().max(32).nullish().openapi({ description: IGNORED }),
      style: z.string().max(32).nullish().openapi({ description: IGNORED }),
      background: z.string().max(32).nullish().openapi({ description: IGNORED }),
      moderation: z.string().max(32).nullish().openapi({ description: IGNORED }),
      user: z.string().max(256).nullish().openapi({ description: IGNORED }),
    })
    .strict()
    .openapi("OpenAIImageRequest", { example: { prompt: "a lighthouse on a cliff at dusk", size: "256x256" } });
}

const responseSchema = z
  .object({
    created: z.number().int(),
    data: z.array(z.union([z.object({ url: z.string() }), z.object({ b64_json: z.string() })])),
  })
  .openapi("OpenAIImageResponse");

/** Kiln's render fields that an OpenAI field maps to, for naming the OpenAI field in errors. */
const FIELD_OF: Record<string, string> = { width: "size", height: "size", output_quality: "output_compression" };

/** `POST /v1/images/generations`: a synchronous subset of OpenAI's Images API over Kiln renders. */
export function openAiImageRoutes(rt: ApiRuntime) {
  const { deps } = rt;
  const app = apiRouter();
  const renderSchema = renderRequestSchema(deps.limits);

  app.openapi(
    createRoute({
      method: "post",
      path: "/v1/images/generations",
      operationId: "createImage",
      summary: "Generate images (OpenAI-compatible)",
      description:
        "A compatible subset of OpenAI's `POST /v1/images/generations`, answered when the render ends, so OpenAI SDKs work with `baseURL` set to Kiln and a Kiln key. Errors are problem+json with OpenAI's `error` member inside. The render uses Kiln's defaults (ensemble, 30 steps); the job id is in the `x-kiln-render-id` header.",
      security: [{ bearer: [] }],
      request: {
        body: {
          required: true,
          content: { "application/json": { schema: requestSchema(deps.limits.maxPromptChars) } },
        },
      },
      responses: {
        200: { description: "The images", content: { "application/json": { schema: responseSchema } } },
        ...problems(400, 401, 403, 413, 415, 429, 504),
      },
    }),
    async (c) => {
      const body = c.req.valid("json");
      const size = body.size && body.size !== "auto" ? SIZE_PATTERN.exec(body.size)! : undefined;
      const parsed = renderSchema.safeParse({
        prompt: body.prompt,
        n: body.n ?? 1,
        width: size ? Number(size[1]) : 1024,
        height: size ? Number(size[2]) : 1024,
        output_format: body.output_format ?? "png",
        ...(body.output_compression != null ? { output_quality: Math.max(1, body.output_compression) } : {}),
        deadline_seconds: Math.max(1, Math.ceil(rt.timing.syncWaitSeconds)),
      });
      if (!parsed.success) {
        return validationProblem(
          parsed.error.issues.map((i) => ({ ...i, path: [FIELD_OF[String(i.path[0])] ?? String(i.path[0])] })),
        ) as never;
      }
      const submitted = await submitRender(deps.ports, {
        ownerKeyId: c.get("key").id,
        request: parsed.data,
        now: rt.now(),
        retentionHours: deps.retentionHours,
        admission: renderAdmission(c.get("key"), deps),
        jobId: c.get("submitJobId"),
        pause: deps.pause,
        buckets: deps.limits.buckets,
      });
      return (await answerWhenEnded(rt, c, submitted, body.response_format ?? "url")) as never;
    },
  );

  return app;
}

/**
 * OpenAI's synchronous answer: waits for the render to end (canceling it when nobody will collect it), then
 * answers its images as URLs or base64, or the failure as a problem; the job id is in `x-kiln-render-id`.
 */
export async function answerWhenEnded(
  rt: ApiRuntime,
  c: Context,
  submitted: JobRecord,
  responseFormat: "url" | "b64_json",
): Promise<Response> {
  const { deps } = rt;
  const signal = c.req.raw.signal;
  const job = await waitForEnd(deps.ports, submitted, {
    ...rt.moveOptions(),
    timeoutMs: rt.timing.syncWaitSeconds * 1000,
    pollMs: rt.timing.pollMs,
    signal,
    clock: () => rt.now(),
  });
  rt.book.observe(job);
  const headers = { "x-kiln-render-id": job.id };
  if (job.status !== "succeeded") {
    if (job.status === "queued" || job.status === "running") {
      // Nobody will collect this render (the client timed out or left): stop spending GPU time on it.
      await cancelRender(deps.ports, job, rt.moveOptions());
      throw problemException(
        withHeaders(
          problem(
            504,
            "render_timeout",
            `The render did not finish within ${rt.timing.syncWaitSeconds} s and was canceled. For long renders use POST /v1/renders and follow GET /v1/renders/{id} or its events.`,
          ),
          headers,
        ),
      );
    }
    throw problemException(withHeaders(failureProblem(job), headers));
  }
  const data = await Promise.all(
    job.images.map(async (img) => {
      if (responseFormat === "b64_json") {
        const bytes = await deps.ports.blobs.get(img.key);
        if (!bytes) throw new Error(`image ${img.key} of ${job.id} is missing from the blob store`);
        return { b64_json: encodeBase64(new Uint8Array(bytes).buffer as ArrayBuffer) };
      }
      return {
        url: await deps.ports.blobs.downloadUrl(img.key, {
          expiresSeconds: deps.downloadUrlSeconds,
          filename: `${job.id}-${img.index}.${img.format === "jpeg" ? "jpg" : img.format}`,
        }),
      };
    }),
  );
  return c.json({ created: Math.floor(Date.parse(job.createdAt) / 1000), data }, 200, headers);
}

function failureProblem(job: JobRecord): Response {
  const why = job.error ? `${job.error.message} (${job.error.code})` : "no reason was recorded";
  if (job.status === "canceled")
    return problem(409, "render_canceled", `The render was canceled before it finished: ${why}.`, {
      render_id: job.id,
    });
  if (job.status === "expired")
    return problem(504, "render_expired", `The render did not start in time: ${why}.`, { render_id: job.id });
  return problem(500, "render_failed", `The render failed: ${why}.`, { render_id: job.id, render_error: job.error });
}

function withHeaders(res: Response, headers: Record<string, string>): Response {
  for (const [k, v] of Object.entries(headers)) res.headers.set(k, v);
  return res;
}
