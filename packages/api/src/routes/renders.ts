import { OpenAPIHono, createRoute, z } from "@hono/zod-openapi";
import { renderRequestSchema } from "@kiln/shared";
import type { ApiDeps, ApiEnv } from "../deps.js";
import { requireKey } from "../middleware/auth.js";
import { problem, validationProblem } from "../problem.js";
import { jobView, jobViewSchema } from "../render-view.js";
import { submitRender } from "../render-service.js";

const problemSchema = z
  .object({ type: z.string(), title: z.string(), status: z.number(), detail: z.string(), code: z.string() })
  .passthrough()
  .openapi("Problem");
const problemResponse = (description: string) => ({ description, content: { "application/problem+json": { schema: problemSchema } } });

export function renderRoutes(deps: ApiDeps) {
  const app = new OpenAPIHono<ApiEnv>({
    defaultHook: (result) => (result.success ? undefined : validationProblem(result.error.issues)),
  });
  const bodySchema = renderRequestSchema(deps.limits).openapi("RenderRequest");
  const now = () => deps.now?.() ?? new Date();

  app.use("/v1/renders", requireKey(deps));
  app.use("/v1/renders/*", requireKey(deps));

  app.openapi(
    createRoute({
      method: "post",
      path: "/v1/renders",
      summary: "Submit a render",
      security: [{ bearer: [] }],
      request: { body: { required: true, content: { "application/json": { schema: bodySchema } } } },
      responses: {
        202: {
          description: "Accepted: the job is queued",
          content: { "application/json": { schema: z.object({ id: z.string(), status: z.string(), links: z.object({ self: z.string() }) }) } },
        },
        400: problemResponse("The body is invalid; `errors` names each field"),
        401: problemResponse("Missing or unknown API key"),
      },
    }),
    async (c) => {
      const request = c.req.valid("json");
      const job = await submitRender(deps.ports, {
        ownerKeyId: c.get("key").id,
        request,
        now: now(),
        retentionHours: deps.retentionHours,
        traceparent: c.req.header("traceparent"),
      });
      const self = `${deps.publicUrl}/v1/renders/${job.id}`;
      return c.json({ id: job.id, status: job.status, seed: job.plan.seed, links: { self } }, 202, { Location: self });
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/v1/renders/{id}",
      summary: "Get a render",
      security: [{ bearer: [] }],
      request: { params: z.object({ id: z.string().min(1).max(64) }) },
      responses: {
        200: { description: "The job", content: { "application/json": { schema: jobViewSchema } } },
        404: problemResponse("No such job for this key"),
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const job = await deps.ports.jobs.get(id);
      // Another key's job is indistinguishable from a missing one.
      if (!job || job.ownerKeyId !== c.get("key").id) return problem(404, "not_found", `No render ${id} for this API key.`) as never;
      return c.json(await jobView(job, deps.ports.blobs, deps.publicUrl, deps.downloadUrlSeconds), 200);
    },
  );

  return app;
}
