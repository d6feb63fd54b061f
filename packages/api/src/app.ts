import { OpenAPIHono, z } from "@hono/zod-openapi";
import type { Hono, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";

import { batchRoutes } from "./batches/routes.js";
import { resultRoutes } from "./channels/core/result-route.js";
import { discordRoutes } from "./channels/discord/routes.js";
import { slackRoutes } from "./channels/slack/routes.js";
import type { ApiDeps, ApiEnv } from "./deps.js";
import { allowedMethods } from "./http/allowed-methods.js";
import { problemSchema } from "./http/openapi.js";
import { problem, PROBLEM_CONTENT_TYPE, problemFromError } from "./http/problem.js";
import { acceptsImages, imageBodyLimit } from "./inputs/image-routes.js";
import { requireKey } from "./middleware/auth.js";
import { idempotency } from "./middleware/idempotency.js";
import { requireJsonBody } from "./middleware/json-body.js";
import { openAiErrorShape } from "./middleware/openai-errors.js";
import { rateLimit } from "./middleware/rate-limit.js";
import { eventRoutes } from "./routes/events.js";
import { fileRoutes } from "./routes/files.js";
import { keyRoutes } from "./routes/keys.js";
import { openAiImageEditRoutes } from "./routes/openai-image-edits.js";
import { openAiImageRoutes } from "./routes/openai-images.js";
import { openAiModelRoutes } from "./routes/openai-models.js";
import { renderRoutes } from "./routes/renders.js";
import { systemRoutes } from "./routes/system.js";
import { ApiRuntime } from "./runtime.js";
import { playgroundRoutes } from "./ui/playground/routes.js";

/**
 * Kiln's HTTP API as one Hono app over Web-standard Request/Response, so the same app serves Node
 * (`entry/node.ts`), AWS Lambda (`entry/lambda.ts`) and edge runtimes.
 *
 * Routes come in groups, each mounted under its prefix with its own middleware chain (see `mount`):
 * a JSON API group runs body size → JSON media type → API key → per-key rate limit; doors with
 * other bodies or their own signatures (chat integrations) bring their own chain instead.
 * Every refusal is thrown as an `HTTPException` carrying a problem+json response (`fail`), which
 * `onError` returns as it is.
 */
export function createApp(deps: ApiDeps) {
  const rt = new ApiRuntime(deps);
  const app = new OpenAPIHono<ApiEnv>();

  const limitBody = bodyLimit({
    maxSize: deps.maxBodyBytes,
    onError: () =>
      problem(
        413,
        "body_too_large",
        `The request body is larger than ${deps.maxBodyBytes} bytes; send a smaller one.`,
        {
          errors: [{ field: "body", message: `must be at most ${deps.maxBodyBytes} bytes` }],
        },
      ),
  });
  const jsonApi: MiddlewareHandler<ApiEnv>[] = [limitBody, requireJsonBody(), requireKey(deps), rateLimit(deps)];
  // Image inputs: routes that take pictures (POST /v1/renders, /v1/images/edits, /v1/images/variations) get their
  // own body bound (two files, base64-inflated, plus the fields) and accept multipart/form-data; every other route
  // keeps the small JSON limit. Each file is checked against KILN_MAX_IMAGE_BYTES on its own.
  const imageLimit = bodyLimit({
    maxSize: imageBodyLimit(deps),
    onError: () =>
      problem(
        413,
        "body_too_large",
        `The request body is larger than ${imageBodyLimit(deps)} bytes; send a smaller one.`,
        {
          errors: [{ field: "body", message: `must be at most ${imageBodyLimit(deps)} bytes` }],
        },
      ),
  });
  const imageApi: MiddlewareHandler<ApiEnv>[] = [
    (c, next) => (acceptsImages(c.req.method, c.req.path) ? imageLimit(c, next) : limitBody(c, next)),
    requireJsonBody({ multipart: acceptsImages }),
    requireKey(deps),
    rateLimit(deps),
  ];

  const mount = groupMounter(app);
  mount("/", [limitBody], systemRoutes(rt));
  mount("/v1/renders", [...imageApi, idempotencyOnCollection("/v1/renders", idempotency(deps))], renderRoutes(rt));
  mount("/v1/renders", [], eventRoutes(rt)); // the chain above already covers /v1/renders/*
  // OpenAI error shape outermost, so it covers the auth, body-size and media-type answers too.
  mount("/v1/images", [openAiErrorShape(), ...imageApi], openAiImageRoutes(rt));
  mount("/v1/images", [], openAiImageEditRoutes(rt)); // image inputs: edits and variations, under the chain above
  mount("/v1/files", [], fileRoutes(deps)); // signed URLs, no key
  mount("/v1/keys", jsonApi, keyRoutes(deps));
  mount("/v1/models", [openAiErrorShape(), ...jsonApi], openAiModelRoutes(deps));
  mount("/", [], playgroundRoutes()); // the web playground at / and its hashed assets
  // Chat channels: no API key, no JSON-body rule (Slack posts forms); each verifies its platform's
  // signature over the raw bytes before parsing. A bot whose secrets are unset answers 404.
  mount("/integrations/discord", [limitBody], discordRoutes(rt, deps.chat));
  mount("/integrations/slack", [limitBody], slackRoutes(rt, deps.chat));
  mount("/integrations/results", [], resultRoutes(rt));
  // Batches: manifests may be YAML, so these groups accept YAML bodies beside JSON.
  const manifestApi: MiddlewareHandler<ApiEnv>[] = [
    limitBody,
    requireJsonBody({ alsoYaml: true }),
    requireKey(deps),
    rateLimit(deps),
  ];
  const batches = batchRoutes(rt, deps.batches);
  mount("/v1/batches", manifestApi, batches.runs);
  mount("/v1/manifests", manifestApi, batches.manifests);

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
      operationId: "downloadFile",
      security: [], // the signed query authorises it
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
          content: Object.fromEntries(
            ["image/png", "image/webp", "image/jpeg"].map((type) => [
              type,
              { schema: z.string().openapi({ format: "binary" }) },
            ]),
          ),
        },
        400: { description: "Malformed file key", content: { [PROBLEM_CONTENT_TYPE]: { schema: problemSchema } } },
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
      license: { name: "Apache-2.0", identifier: "Apache-2.0" },
      description: "Self-hostable SDXL render service. Every error is application/problem+json (RFC 9457).",
    },
    servers: [{ url: rt.base(c) }],
  }));

  app.notFound((c) => {
    const allow = allowedMethods(app.routes, c.req.path);
    if (allow.length > 0) {
      return problem(
        405,
        "method_not_allowed",
        `${c.req.method} is not allowed on ${c.req.path}; use ${allow.join(" or ")} (see GET /openapi.json).`,
        {},
        { allow: allow.join(", ") },
      );
    }
    return problem(404, "not_found", `No route for ${c.req.method} ${c.req.path}; see GET /openapi.json.`);
  });
  app.onError((err, c) => {
    if (err instanceof HTTPException) {
      // A thrown problem (`fail`) carries its own response.
      if (err.res) return err.res;
      if (err.status < 500) {
        // Hono's validators throw these for unreadable bodies (malformed JSON and the like): the client's mistake.
        deps.log?.("info", { status: err.status, path: c.req.path, err: err.message }, "request refused");
        return problem(
          err.status,
          err.status === 400 ? "invalid_body" : "bad_request",
          `${err.message}; send a JSON object as described in GET /openapi.json.`,
          { errors: [{ field: "body", message: err.message }] },
        );
      }
    }
    const res = problemFromError(err);
    if (res.status < 500) {
      // Client mistakes (over quota, refused webhook URL…) are not errors: one line, no stack.
      deps.log?.("info", { status: res.status, path: c.req.path, err: String(err) }, "request refused");
    } else {
      deps.log?.("error", { err: String(err), stack: (err as Error).stack, path: c.req.path }, "request failed");
    }
    return res;
  });
  return app;
}

export type KilnApp = ReturnType<typeof createApp>;

/**
 * Mounts a group of routes under `prefix` with its own middleware chain. Every route of the group
 * must live under the prefix — checked here, so a route cannot silently escape its group's chain
 * (e.g. run without its API key check).
 */
function groupMounter(app: OpenAPIHono<ApiEnv>) {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- any group router, whatever routes it typed
  return (prefix: string, chain: MiddlewareHandler<ApiEnv>[], routes: Hono<ApiEnv, any, any>) => {
    if (prefix !== "/") {
      for (const r of routes.routes) {
        if (r.path !== prefix && !r.path.startsWith(`${prefix}/`)) {
          throw new Error(`route ${r.method} ${r.path} is outside its group ${prefix}`);
        }
      }
      // `/x/*` also matches `/x` itself.
      if (chain.length > 0) app.use(`${prefix}/*`, ...chain);
    } else if (chain.length > 0) {
      for (const r of routes.routes) app.use(r.path, ...chain);
    }
    app.route("/", routes);
  };
}

/** Idempotency applies to creating a render (POST on the collection), not to its sub-resources. */
function idempotencyOnCollection(path: string, mw: MiddlewareHandler<ApiEnv>): MiddlewareHandler<ApiEnv> {
  return (c, next) => (c.req.path === path ? mw(c, next) : next());
}
