import type { MiddlewareHandler } from "hono";

import { fail } from "../http/problem.js";

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;
// Batches: manifest bodies may be YAML.
const YAML_TYPE = /^(?:application|text)\/(?:x-)?yaml\s*(?:;|$)/i;
const MULTIPART_TYPE = /^multipart\/form-data\s*;/i;

/**
 * A request that carries a body, or names its type, must be JSON (`application/json`, or a
 * `+json` type); anything else is 415 naming the header, before the body is read. A bodiless
 * POST without a content type passes (a route that needs a body then says so with 400).
 */
export function requireJsonBody(
  options: { alsoYaml?: boolean; multipart?: (method: string, path: string) => boolean } = {},
): MiddlewareHandler {
  return async (c, next) => {
    const method = c.req.method;
    if (method === "POST" || method === "PUT" || method === "PATCH") {
      const type = c.req.header("content-type") ?? "";
      // Routes that take pictures also accept them as multipart/form-data parts.
      if (MULTIPART_TYPE.test(type) && options.multipart?.(method, c.req.path)) return next();
      const hasBody =
        Number(c.req.header("content-length") ?? 0) > 0 || c.req.header("transfer-encoding") !== undefined;
      const yamlOk = options.alsoYaml === true && YAML_TYPE.test(type);
      if ((type || hasBody) && !JSON_TYPE.test(type) && !yamlOk) {
        const rule = `content-type must be application/json (got ${type ? JSON.stringify(type.slice(0, 100)) : "none"})`;
        fail(415, "unsupported_media_type", `The request body must be JSON — ${rule}.`, {
          errors: [{ field: "header.content-type", message: rule }],
        });
      }
    }
    await next();
  };
}
