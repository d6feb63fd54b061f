import type { MiddlewareHandler } from "hono";
import { verifyApiKey, type KeyScope } from "@kiln/shared";
import type { ApiDeps, ApiEnv } from "../deps.js";
import { problem } from "../http/problem.js";

/** `Authorization: Bearer <key>`; the key's record is put on the context for quotas and ownership. */
export function requireKey(deps: ApiDeps, scope: KeyScope = "render"): MiddlewareHandler<ApiEnv> {
  return async (c, next) => {
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match) {
      return problem(
        401,
        "unauthorized",
        "Send your API key as `Authorization: Bearer <key>`; create one with `kiln keys create --name NAME`.",
      );
    }
    const key = await verifyApiKey(deps.ports.keys, match[1]!);
    if (!key)
      return problem(
        401,
        "unauthorized",
        "This API key is unknown or revoked; create a new one with `kiln keys create --name NAME`.",
      );
    if (!key.scopes.includes(scope) && !key.scopes.includes("admin")) {
      return problem(403, "forbidden", `This API key lacks the "${scope}" scope.`);
    }
    c.set("key", key);
    await next();
  };
}
