import { OpenAPIHono, z } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import type { ApiDeps, ApiEnv } from "./deps.js";
import { requireKey } from "./middleware/auth.js";
import { idempotency } from "./middleware/idempotency.js";
import { rateLimit } from "./middleware/rate-limit.js";
import { requireJsonBody } from "./middleware/json-body.js";
import { acceptsImages, imageBodyLimit } from "./inputs/image-routes.js";
import { openAiErrorShape } from "./middleware/openai-errors.js";
import { problemSchema } from "./http/openapi.js";
import { PROBLEM_CONTENT_TYPE, problem, problemFromError } from "./http/problem.js";
import { ApiRuntime } from "./runtime.js";
import { eventRoutes } from "./routes/events.js";
import { fileRoutes } from "./routes/files.js";
import { keyRoutes } from "./routes/keys.js";
import { openAiImageRoutes } from "./routes/openai-images.js";
import { openAiImageEditRoutes } from "./routes/openai-image-edits.js";
import { renderRoutes } from "./routes/renders.js";
import { systemRoutes } from "./routes/system.js";

/**
 * Kiln's HTTP API as one Hono app over Web-standard Request/Response, so the same app serves Node
 * (`entry/node.ts`), AWS Lambda (`entry/lambda.ts`) and edge runtimes.
 *
 * Middleware runs in the order registered: OpenAI error shape (outermost, so it sees every
 * problem on its routes) → body size → JSON media type → API key → per-key policies (quotas,
 * idempotency: add them after `requireKey`) → routes.
 */
export function createApp(deps: ApiDeps) {
  const rt = new ApiRuntime(deps);
  const app = new OpenAPIHono<ApiEnv>();

  app.use("/v1/images/*", openAiErrorShape());
  const sizeLimit = (maxSize: number) =>
    bodyLimit({
      maxSize,
      onError: () =>
        problem(413, "body_too_large", `The request body is larger than ${maxSize} bytes; send a smaller one.`, {
          errors: [{ field: "body", message: `must be at most ${maxSize} bytes` }],
        }),
    });
  const jsonLimit = sizeLimit(deps.maxBodyBytes);
  // Image inputs: routes that take pictures get their own bound (two files, base64-inflated, plus the fields);
  // every other route keeps the small JSON limit. Each file is checked against KILN_MAX_IMAGE_BYTES on its own.
  const imageLimit = sizeLimit(imageBodyLimit(deps));
  app.use("*", (c, next) => (acceptsImages(c.req.method, c.req.path) ? imageLimit(c, next) : jsonLimit(c, next)));
  app.use("*", requireJsonBody({ multipart: acceptsImages }));
  // `/x/*` also matches `/x` itself: listing both would run each middleware twice (and take two tokens).
  for (const path of ["/v1/renders/*", "/v1/images/*", "/v1/keys/*"]) app.use(path, requireKey(deps), rateLimit(deps));
  app.use("/v1/renders", idempotency(deps));

  app.route("/", systemRoutes(rt));
  app.route("/", renderRoutes(rt));
  app.route("/", eventRoutes(rt));
  app.route("/", openAiImageRoutes(rt));
  // Image inputs: OpenAI's edits and variations.
  app.route("/", openAiImageEditRoutes(rt));
  app.route("/", fileRoutes(deps));
  app.route("/", keyRoutes(deps));

  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    description: "A Kiln API key (`kiln keys create`).",
  });
  if (deps.serveFiles) {
    // Served by a plain route (its path is a wildcard); documented here by hand.
    app.openAPIRegistry.registerPath({
      method: "get",
      path: "/v1/files/{key}",
      summary: "Download an output (signed URL)",
      description:
        "The links in `images[].url` on the local family. No API key: the `expires` and `sig` query values authorise the download.",
      request: {
        params: z.object({ key: z.string().openapi({ param: { name: "key", in: "path" } }) }),
        query: z.object({ expires: z.string(), sig: z.string(), filename: z.string().optional() }),
      },
      responses: {
        200: {
          description: "The file",
          content: { "image/png": { schema: z.string().openapi({ format: "binary" }) } },
        },
        403: { description: "Invalid or expired link", content: { [PROBLEM_CONTENT_TYPE]: { schema: problemSchema } } },
        404: {
          description: "Deleted after its retention period",
          content: { [PROBLEM_CONTENT_TYPE]: { schema: problemSchema } },
        },
      },
    });
  }
  app.doc31("/openapi.json", (c) => ({
    openapi: "3.1.0",
    info: {
      title: "Kiln",
      version: "0.1.0",
      description: "Self-hostable SDXL render service. Every error is application/problem+json (RFC 9457).",
    },
    servers: [{ url: rt.base(c) }],
  }));

  app.notFound((c) => problem(404, "not_found", `No route for ${c.req.method} ${c.req.path}; see GET /openapi.json.`));
  app.onError((err, c) => {
    if (err instanceof HTTPException && err.status < 500) {
      // Hono's validators throw these for unreadable bodies (malformed JSON and the like).
      return problem(
        err.status,
        err.status === 400 ? "invalid_body" : "bad_request",
        `${err.message}; send a JSON object as described in GET /openapi.json.`,
        {
          errors: [{ field: "body", message: err.message }],
        },
      );
    }
    deps.log?.("error", { err: String(err), stack: (err as Error).stack, path: c.req.path }, "request failed");
    return problemFromError(err);
  });
  return app;
}

export type KilnApp = ReturnType<typeof createApp>;
