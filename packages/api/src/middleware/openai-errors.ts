import type { MiddlewareHandler } from "hono";

import { type Problem, PROBLEM_CONTENT_TYPE } from "../http/problem.js";

/** OpenAI's error `type` for an HTTP status, as its SDKs expect to find it. */
export function openAiErrorType(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 403) return "permission_error";
  if (status === 429) return "rate_limit_error";
  return status >= 500 ? "server_error" : "invalid_request_error";
}

/**
 * On OpenAI-compatible routes every problem document also carries OpenAI's `error` member
 * (`{message, type, param, code}`), so OpenAI SDKs show Kiln's sentence while problem+json
 * clients see what they always do. Registered outermost, so it covers the auth, body-size and
 * media-type answers of middleware too.
 */
export function openAiErrorShape(): MiddlewareHandler {
  return async (c, next) => {
    await next();
    const res = c.res;
    if (res.status < 400 || !res.headers.get("content-type")?.startsWith(PROBLEM_CONTENT_TYPE)) return;
    let body: Problem;
    try {
      body = (await res.clone().json()) as Problem;
    } catch {
      return;
    }
    if (body.error !== undefined) return;
    const errors = body.errors as { field?: string }[] | undefined;
    body.error = {
      message: body.detail,
      type: openAiErrorType(res.status),
      param: errors?.[0]?.field ?? null,
      code: body.code,
    };
    const headers = new Headers(res.headers);
    headers.delete("content-length");
    c.res = undefined as unknown as Response;
    c.res = new Response(JSON.stringify(body), { status: res.status, headers });
  };
}
