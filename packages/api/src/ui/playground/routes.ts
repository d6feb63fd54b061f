import { Hono } from "hono";

import type { ApiEnv } from "../../deps.js";
import { fail } from "../../http/problem.js";
import { PLAYGROUND_ASSETS, PLAYGROUND_INDEX } from "./assets.generated.js";

/**
 * The playground: `GET /` (the page, `no-cache` so a new build shows at once) and its content-hashed
 * assets (immutable, a year). Served from strings compiled into the app, so the Lambda and edge
 * entry points serve it too. Left out of the OpenAPI document: it is a page, not an API.
 */
export function playgroundRoutes() {
  const app = new Hono<ApiEnv>();
  app.get("/", (c) =>
    c.html(PLAYGROUND_INDEX, 200, {
      "cache-control": "no-cache",
      // The page calls only its own origin and shows images from it (data: for latent previews).
      "content-security-policy":
        "default-src 'self'; img-src 'self' data: blob: https:; style-src 'self'; script-src 'self'; connect-src 'self' https:",
    }),
  );
  app.get("/playground/:file", (c) => {
    const asset = PLAYGROUND_ASSETS[`playground/${c.req.param("file")}`];
    // Old hashed names vanish with each build: the page that referred to them is gone too.
    if (!asset) fail(404, "not_found", "No such playground asset; reload the page at / for the current ones.");
    return c.body(asset.body, 200, {
      "content-type": asset.type,
      "cache-control": "public, max-age=31536000, immutable",
    });
  });
  return app;
}
