import { createRoute, z } from "@hono/zod-openapi";
import { isKilnError, isTerminal, JOB_STATUSES, type RenderRequest, renderRequestSchema } from "@kiln/shared";
import type { Context } from "hono";

import type { ApiEnv } from "../deps.js";
import { apiRouter, problems } from "../http/openapi.js";
import { pageQuery } from "../http/page-query.js";
import { MAX_PREFER_WAIT_SECONDS, preferWait } from "../http/prefer.js";
import { fail, problemFromError, validationProblem } from "../http/problem.js";
import { DEFAULT_IMAGE_INPUT_LIMITS, receiveInputs } from "../inputs/image-inputs.js";
import { readMultipartRender } from "../inputs/multipart.js";
import { renderAdmission } from "../renders/render-admission.js";
import { cancelRender, submitRender, waitForEnd } from "../renders/render-service.js";
import { jobViewSchema } from "../renders/render-view.js";
import type { ApiRuntime } from "../runtime.js";

const idParam = z.object({
  id: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: "id", in: "path" }, example: "job_0123456789abcdef01234567" }),
});
const security = [{ bearer: [] }];
const renderJson = { content: { "application/json": { schema: jobViewSchema } } };

const listQuery = pageQuery.extend({
  status: z
    .enum(JOB_STATUSES)
    .optional()
    .openapi({ param: { name: "status", in: "query" } }),
});

const listSchema = z
  .object({
    data: z.array(jobViewSchema),
    next_cursor: z.string().optional(),
    links: z.object({ next: z.string().optional() }),
  })
  .openapi("RenderList");

/** `/v1/renders`: submit (optionally waiting), list, read and cancel the calling key's renders. */
export function renderRoutes(rt: ApiRuntime) {
  const { deps } = rt;
  const app = apiRouter();
  // The example is what reference UIs put in "Try it": small and quick, so a first click does not queue a 1024² render.
  const bodySchema = renderRequestSchema(deps.limits).openapi("RenderRequest", {
    example: {
      prompt: "a lighthouse on a cliff at dusk, oil painting",
      mode: "base",
      width: 256,
      height: 256,
      steps: 8,
      seed: 42,
    },
  });

  /** Submits a validated request (image inputs received and checked first), honouring `Prefer: wait`. */
  const submit = async (
    c: Context<ApiEnv>,
    request: RenderRequest,
    files: { image?: Uint8Array; mask?: Uint8Array },
  ) => {
    const wait = preferWait(c.req.header("prefer"));
    if (wait.error) {
      fail(400, "invalid_request", `The Prefer header is invalid — ${wait.error}.`, {
        errors: [{ field: "header.prefer", message: wait.error }],
      });
    }
    let job;
    try {
      // Pictures are read and checked before any quota is taken or anything is stored.
      const inputs = await receiveInputs(
        request,
        files,
        deps.imageInputs ?? DEFAULT_IMAGE_INPUT_LIMITS,
        deps.webhooks ?? { allowPrivate: false, allowedHosts: [] },
      );
      job = await submitRender(deps.ports, {
        ownerKeyId: c.get("key").id,
        request,
        admission: renderAdmission(c.get("key"), deps),
        now: rt.now(),
        retentionHours: deps.retentionHours,
        traceparent: c.req.header("traceparent"),
        inputs,
        limits: deps.limits,
        buckets: deps.limits.buckets,
        jobId: c.get("submitJobId"),
        pause: deps.pause,
      });
    } catch (e) {
      if (isKilnError(e) && e.status >= 400 && e.status < 500) {
        deps.log?.("info", { code: e.code, keyId: c.get("key").id }, e.message);
        return problemFromError(e);
      }
      throw e;
    }
    const headers: Record<string, string> = { Location: `${rt.base(c)}/v1/renders/${job.id}` };
    if (wait.seconds) {
      const seconds = Math.min(wait.seconds, rt.timing.preferWaitCapSeconds);
      job = await waitForEnd(deps.ports, job, {
        ...rt.moveOptions(),
        timeoutMs: seconds * 1000,
        pollMs: rt.timing.pollMs,
        signal: c.req.raw.signal,
        clock: () => rt.now(),
      });
      rt.book.observe(job);
      headers["Preference-Applied"] = `wait=${seconds}`;
    }
    return c.json(await rt.view(c, job), isTerminal(job.status) ? 201 : 202, headers);
  };

  // multipart/form-data: the same fields as the JSON body, `image` and `mask` as file parts. The JSON route
  // below handles everything else.
  app.post("/v1/renders", async (c, next) => {
    if (!/^multipart\/form-data/i.test(c.req.header("content-type") ?? "")) return next();
    const form = await readMultipartRender(c.req.raw);
    if (form instanceof Response) return form;
    const parsed = bodySchema.safeParse(form.fields);
    if (!parsed.success) return validationProblem(parsed.error.issues);
    return submit(c, parsed.data, form.files);
  });

  app.openapi(
    createRoute({
      method: "post",
      path: "/v1/renders",
      operationId: "createRender",
      summary: "Submit a render",
      description: `Answers 202 with the queued job. With \`Prefer: wait=N\` (N ≤ ${MAX_PREFER_WAIT_SECONDS}) it holds the request until the job ends, answering 201 with the finished job (whatever its outcome) and \`Preference-Applied: wait=N\` (a deployment may cap N lower, e.g. 25 s behind API Gateway; the header tells the wait applied); if the job is still going after N seconds, 202 as usual.`,
      security,
      request: {
        headers: z.object({
          prefer: z.string().optional().openapi({
            example: "wait=30",
            description: "`wait=N`: hold the request up to N seconds (≤ 60) for the job to end.",
          }),
          "idempotency-key": z.string().optional().openapi({
            example: "8e03978e-40d5-43e8-bc93-6894a57f9324",
            description:
              "Retry-safe submits: the same key with the same body within 24 h answers 200 with the first response (`Idempotent-Replayed: true`) instead of creating another job; with another body, 422.",
          }),
        }),
        body: {
          required: true,
          description:
            "JSON, or multipart/form-data with the same fields as parts and `image`/`mask` as file parts (img2img, inpaint, outpaint).",
          content: { "application/json": { schema: bodySchema } },
        },
      },
      responses: {
        201: { description: "Created and already ended (only with `Prefer: wait`)", ...renderJson },
        202: { description: "Accepted: the job is queued or running", ...renderJson },
        200: {
          description: "A replay: the first response to this Idempotency-Key and body (`Idempotent-Replayed: true`)",
          ...renderJson,
        },
        ...problems(400, 401, 403, 409, 413, 415, 422, 429),
      },
    }),
    async (c) => (await submit(c, c.req.valid("json"), {})) as never,
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/renders",
      operationId: "listRenders",
      summary: "List your renders",
      description:
        "The calling key's renders, newest first, a page at a time. The list view leaves out queue position, waiting reason and ETA (GET one render for those).",
      security,
      request: { query: listQuery },
      responses: {
        200: { description: "A page of renders", content: { "application/json": { schema: listSchema } } },
        ...problems(400, 401, 403, 429),
      },
    }),
    async (c) => {
      const { limit, cursor, status } = c.req.valid("query");
      let page;
      try {
        page = await deps.ports.jobs.listByOwner(c.get("key").id, { limit, cursor, status });
      } catch (e) {
        if (isKilnError(e) && e.code === "cursor_invalid") {
          fail(400, "invalid_request", `The request query is invalid — cursor: ${e.message}`, {
            errors: [{ field: "cursor", message: e.message }],
          });
        }
        throw e;
      }
      const data = await Promise.all(page.jobs.map(async (job) => rt.view(c, await rt.settle(job))));
      let next: string | undefined;
      if (page.nextCursor) {
        const q = new URLSearchParams({ limit: String(limit), cursor: page.nextCursor });
        if (status) q.set("status", status);
        next = `${rt.base(c)}/v1/renders?${q}`;
      }
      return c.json({ data, next_cursor: page.nextCursor, links: { next } }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/renders/{id}",
      operationId: "getRender",
      summary: "Get a render",
      description:
        "While queued: `queue_position` and `waiting_reason` (no capacity vs busy workers). While queued or running: `eta`.",
      security,
      request: { params: idParam },
      responses: { 200: { description: "The render", ...renderJson }, ...problems(400, 401, 403, 404, 429) },
    }),
    async (c) => {
      const job = await rt.ownJob(c, c.req.valid("param").id);
      return c.json(await rt.view(c, job, await rt.insight(job)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: "delete",
      path: "/v1/renders/{id}",
      operationId: "cancelRender",
      summary: "Cancel a render",
      description:
        "A queued render ends `canceled` at once (200). A running one is marked `cancel_requested` (202) and stops at its next denoising step, in whichever stage it is; GET it or stream its events to see it end. An ended render cannot be canceled (409).",
      security,
      request: { params: idParam },
      responses: {
        200: { description: "Canceled", ...renderJson },
        202: { description: "Cancel requested; the running stage stops at its next step", ...renderJson },
        ...problems(400, 401, 403, 404, 409, 429),
      },
    }),
    async (c) => {
      const own = await rt.ownJob(c, c.req.valid("param").id);
      const { job, outcome } = await cancelRender(deps.ports, own, rt.moveOptions());
      if (outcome === "ended") {
        fail(409, "not_cancelable", `Render ${job.id} already ended (${job.status}); there is nothing to cancel.`, {
          render_status: job.status,
        });
      }
      return c.json(await rt.view(c, job), outcome === "canceled" ? 200 : 202);
    },
  );

  return app;
}
