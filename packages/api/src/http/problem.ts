import { KilnError } from "@kiln/shared";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";

import { LimitExceededError } from "../quotas/limit-exceeded.js";

/** RFC 9457 problem details: every error Kiln's API returns has this shape. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  [extra: string]: unknown;
}

export const PROBLEM_CONTENT_TYPE = "application/problem+json";

export function problem(
  status: number,
  code: string,
  detail: string,
  extra: Record<string, unknown> = {},
  headers: Record<string, string> = {},
): Response {
  const body: Problem = {
    type: `https://kiln.dev/problems/${code}`,
    title: titleFor(status),
    status,
    detail,
    code,
    ...extra,
  };
  return new Response(JSON.stringify(body), { status, headers: { ...headers, "content-type": PROBLEM_CONTENT_TYPE } });
}

/**
 * Fails the request with a problem: thrown as Hono's `HTTPException` carrying the problem+json
 * response, which the app's `onError` returns as it is. The one way a route or middleware refuses.
 */
export function fail(
  status: number,
  code: string,
  detail: string,
  extra: Record<string, unknown> = {},
  headers: Record<string, string> = {},
): never {
  throw problemException(problem(status, code, detail, extra, headers));
}

/** Wraps a ready problem Response (e.g. from `validationProblem`) so it can be thrown. */
export function problemException(res: Response): HTTPException {
  return new HTTPException(res.status as ContentfulStatusCode, { res });
}

export function problemFromError(e: unknown): Response {
  if (e instanceof LimitExceededError) return problem(e.status, e.code, e.message, e.details ?? {}, e.headers);
  if (e instanceof KilnError) return problem(e.status >= 400 ? e.status : 500, e.code, e.message, e.details ?? {});
  return problem(
    500,
    "internal_error",
    "Kiln hit an unexpected error; the request was not completed. Retry, and report it if it persists.",
  );
}

/** zod issues → one entry per offending field, with the rule it broke. */
export function validationProblem(
  issues: readonly { path: readonly PropertyKey[]; message: string; code?: string; keys?: readonly string[] }[],
  where = "body",
): Response {
  const errors = issues.flatMap((i) =>
    i.code === "unrecognized_keys" && i.keys
      ? i.keys.map((k) => ({
          field: k,
          message: `unknown field "${k}"; remove it (see GET /openapi.json for the accepted fields)`,
        }))
      : [{ field: i.path.map(String).join(".") || where, message: i.message }],
  );
  const detail = errors.map((e) => `${e.field}: ${e.message}`).join("; ");
  return problem(400, "invalid_request", `The request ${where} is invalid — ${detail}.`, { errors });
}

function titleFor(status: number): string {
  return (
    {
      400: "Bad Request",
      401: "Unauthorized",
      403: "Forbidden",
      404: "Not Found",
      405: "Method Not Allowed",
      409: "Conflict",
      410: "Gone",
      413: "Content Too Large",
      415: "Unsupported Media Type",
      422: "Unprocessable Content",
      429: "Too Many Requests",
      500: "Internal Server Error",
      502: "Bad Gateway",
      503: "Service Unavailable",
      504: "Gateway Timeout",
    }[status] ?? "Error"
  );
}
