import { type KeyScope, verifyApiKey } from "@kiln/shared";
import type { MiddlewareHandler } from "hono";

import type { ApiDeps, ApiEnv } from "../deps.js";
import { fail } from "../http/problem.js";

/** `Authorization: Bearer <key>`; the key's record is put on the context for quotas and ownership. */
export function requireKey(deps: ApiDeps, scope: KeyScope = "render"): MiddlewareHandler<ApiEnv> {
  return async (c, next) => {
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match) {
      fail(
        401,
        "unauthorized",
        "Send your API key as `Authorization: Bearer <key>`; create one with `kiln keys create --name NAME`.",
        {},
        { "www-authenticate": 'Bearer realm="kiln"' },
      );
    }
    const key = await verifyApiKey(deps.ports.keys, match[1]!);
    if (!key)
      fail(
        401,
        "unauthorized",
        "This API key is unknown or revoked; create a new one with `kiln keys create --name NAME`.",
        {},
        { "www-authenticate": 'Bearer realm="kiln", error="invalid_token"' },
      );
    if (!key.scopes.includes(scope) && !key.scopes.includes("admin")) {
      fail(
        403,
        "forbidden",
        `This API key lacks the "${scope}" scope.`,
        {},
        {
          "www-authenticate": `Bearer realm="kiln", error="insufficient_scope", scope="${scope}"`,
        },
      );
    }
    c.set("key", key);
    await next();
  };
}
