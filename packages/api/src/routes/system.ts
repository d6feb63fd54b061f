import { createRoute, z } from "@hono/zod-openapi";

import { apiRouter } from "../http/openapi.js";
import { problemSchema } from "../http/openapi.js";
import { fail, PROBLEM_CONTENT_TYPE } from "../http/problem.js";
import type { ApiRuntime } from "../runtime.js";
import { DOCS_HTML } from "../ui/docs-page.js";

/** Health and the human-facing reference. */
export function systemRoutes(rt: ApiRuntime) {
  const app = apiRouter();

  app.openapi(
    createRoute({
      method: "get",
      path: "/healthz",
      operationId: "getHealth",
      security: [], // public: load balancers and probes call it without a key
      summary: "Health",
      responses: {
        200: {
          description: "Ready",
          content: { "application/json": { schema: z.object({ status: z.literal("ok") }) } },
        },
        503: {
          description:
            "Starting, a port is unreachable, or the stores are unusable (local: the database cannot be reopened or written)",
          content: { [PROBLEM_CONTENT_TYPE]: { schema: problemSchema } },
        },
      },
    }),
    async (c) => {
      const ready = (await rt.deps.ready?.()) ?? true;
      if (!ready) fail(503, "not_ready", "Kiln is starting; retry in a moment.");
      // The stores themselves (local: the database can be reopened and written): an orchestrator
      // restarts an API whose writes would be lost, rather than letting it accept work.
      const stores = (await rt.deps.ports.health?.()) ?? { ok: true };
      if (!stores.ok) {
        rt.deps.log?.("error", { reason: stores.reason }, "health check failed: the stores are unusable");
        fail(
          503,
          "store_unusable",
          `Kiln's stores are unusable: ${stores.reason}. Restart this process once they are back.`,
        );
      }
      return c.json({ status: "ok" as const }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/docs",
      operationId: "getApiReference",
      security: [],
      summary: "API reference (HTML)",
      description:
        "Renders GET /openapi.json in the browser, with a request panel per route. Self-contained: loads nothing from the internet.",
      responses: { 200: { description: "An HTML page", content: { "text/html": { schema: z.string() } } } },
    }),
    (c) => c.html(DOCS_HTML) as never,
  );
  // The same page with a trailing slash (Hono routes are strict), left out of the document.
  app.get("/docs/", (c) => c.html(DOCS_HTML));

  return app;
}
