import { OpenAPIHono, z } from "@hono/zod-openapi";

import type { ApiEnv } from "../deps.js";
import { PROBLEM_CONTENT_TYPE, validationProblem } from "./problem.js";

export const problemSchema = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string().openapi({ description: "What was wrong and what to do." }),
    code: z.string().openapi({ description: "Stable machine-readable code." }),
    errors: z
      .array(z.object({ field: z.string(), message: z.string() }))
      .optional()
      .openapi({ description: "One entry per offending field, with the rule it broke (400)." }),
  })
  .passthrough()
  .openapi("Problem", { description: "RFC 9457 problem details; every error Kiln answers has this shape." });

const problemResponse = (description: string) => ({
  description,
  content: { [PROBLEM_CONTENT_TYPE]: { schema: problemSchema } },
});

const STANDARD_PROBLEMS = {
  400: "The request is invalid; `errors` names each field and the rule it broke",
  401: "Missing, unknown or revoked API key",
  403: "The key lacks the scope this route needs",
  404: "No such resource for this key",
  409: "The resource is in a state that does not allow this",
  413: "The body is larger than the server accepts",
  415: "The body is not `application/json`",
  422: "The request conflicts with an earlier one (an Idempotency-Key reused with another body)",
  429: "Over a rate limit or quota; see `Retry-After`, `RateLimit` and `RateLimit-Policy`",
  504: "The render did not finish in time; it was canceled",
} as const;

/** Problem responses for a route's OpenAPI entry, by status. */
export function problems<S extends keyof typeof STANDARD_PROBLEMS>(
  ...statuses: S[]
): Record<S, ReturnType<typeof problemResponse>> {
  return Object.fromEntries(statuses.map((s) => [s, problemResponse(STANDARD_PROBLEMS[s])])) as Record<
    S,
    ReturnType<typeof problemResponse>
  >;
}

const TARGET_NAMES: Record<string, string> = { json: "body", query: "query", param: "path", header: "header" };

/** A router whose zod validation failures answer problem+json naming each field (body, query or path). */
export function apiRouter() {
  return new OpenAPIHono<ApiEnv>({
    defaultHook: (result) =>
      result.success ? undefined : validationProblem(result.error.issues, TARGET_NAMES[result.target] ?? result.target),
  });
}
