import type { MiddlewareHandler } from "hono";

import { fail } from "../http/problem.js";

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

/**
 * A request that carries a body, or names its type, must be JSON (`application/json`, or a
 * `+json` type); anything else is 415 naming the header, before the body is read. A bodiless
 * POST without a content type passes (a route that needs a body then says so with 400).
 */
export function requireJsonBody(): MiddlewareHandler {
  return async (c, next) => {
    const method = c.req.method;
    if (method === "POST" || method === "PUT" || method === "PATCH") {
      const type = c.req.header("content-type") ?? "";
      const hasBody =
        Number(c.req.header("content-length") ?? 0) > 0 || c.req.header("transfer-encoding") !== undefined;
      if ((type || hasBody) && !JSON_TYPE.test(type)) {
        const rule = `content-type must be application/json (got ${type ? JSON.stringify(type.slice(0, 100)) : "none"})`;
        fail(415, "unsupported_media_type", `The request body must be JSON — ${rule}.`, {
          errors: [{ field: "header.content-type", message: rule }],
        });
      }
    }
    await next();
  };
}
