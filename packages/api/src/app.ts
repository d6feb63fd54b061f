import { OpenAPIHono } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import type { ApiDeps, ApiEnv } from "./deps.js";
import { problem, problemFromError } from "./problem.js";
import { renderRoutes } from "./routes/renders.js";
import { fileRoutes } from "./routes/files.js";

/**
 * Kiln's HTTP API as one Hono app over Web-standard Request/Response, so the same app serves Node
 * (`entry/node.ts`), AWS Lambda (`entry/lambda.ts`) and edge runtimes.
 */
export function createApp(deps: ApiDeps) {
  const app = new OpenAPIHono<ApiEnv>();

  app.use(
    "*",
    bodyLimit({
      maxSize: deps.maxBodyBytes,
      onError: () => problem(413, "body_too_large", `The request body is larger than ${deps.maxBodyBytes} bytes; send a smaller one.`),
    }),
  );

  app.get("/healthz", async (c) => {
    const ready = (await deps.ready?.()) ?? true;
    return ready ? c.json({ status: "ok" }) : problem(503, "not_ready", "Kiln is starting; retry in a moment.");
  });

  app.route("/", renderRoutes(deps));
  app.route("/", fileRoutes(deps));

  app.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: { title: "Kiln", version: "0.1.0", description: "Self-hostable SDXL render service" },
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", { type: "http", scheme: "bearer" });

  app.notFound((c) => problem(404, "not_found", `No route for ${c.req.method} ${c.req.path}; see GET /openapi.json.`));
  app.onError((err, c) => {
    if (err instanceof HTTPException && err.status < 500) {
      // Hono's validators throw these for unreadable bodies (malformed JSON and the like).
      return problem(err.status, err.status === 400 ? "invalid_body" : "bad_request", `${err.message}; send a JSON object as described in GET /openapi.json.`);
    }
    deps.log?.("error", { err: String(err), stack: (err as Error).stack, path: c.req.path }, "request failed");
    return problemFromError(err);
  });
  return app;
}

export type KilnApp = ReturnType<typeof createApp>;
