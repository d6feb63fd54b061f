import { KilnError } from "@kiln/shared";

/**
 * One quota policy as the IETF RateLimit fields name it (draft-ietf-httpapi-ratelimit-headers-11):
 * `RateLimit-Policy: "<name>";q=<quota>;w=<window>` and `RateLimit: "<name>";r=<left>;t=<seconds>`.
 */
export interface LimitPolicy {
  name: string;
  /** Quota units per window. */
  quota: number;
  windowSeconds?: number;
}

export function rateLimitPolicyField(policy: LimitPolicy): string {
  return `"${policy.name}";q=${policy.quota}${policy.windowSeconds === undefined ? "" : `;w=${policy.windowSeconds}`}`;
}

export function rateLimitField(policy: LimitPolicy, remaining: number, resetSeconds?: number): string {
  return `"${policy.name}";r=${Math.max(0, Math.floor(remaining))}${resetSeconds === undefined ? "" : `;t=${Math.max(0, Math.ceil(resetSeconds))}`}`;
}

/**
 * Past this, a 429 tells clients not to retry on their own (`x-should-retry: false`, which the
 * official OpenAI SDKs obey): a daily quota's Retry-After of hours would otherwise hold a client
 * asleep. Retry-After still says when the limit resets.
 */
export const AUTO_RETRY_MAX_SECONDS = 60;

/** The headers of a 429 for `policy`: when to retry and what the policy is. */
export function limitHeaders(
  policy: LimitPolicy,
  remaining: number,
  retryAfterSeconds: number,
  resetSeconds?: number,
): Record<string, string> {
  return {
    "retry-after": String(Math.max(1, Math.ceil(retryAfterSeconds))),
    "ratelimit-policy": rateLimitPolicyField(policy),
    ratelimit: rateLimitField(policy, remaining, resetSeconds),
    ...(retryAfterSeconds > AUTO_RETRY_MAX_SECONDS ? { "x-should-retry": "false" } : {}),
  };
}

/**
 * A 429 from deep in the submit path (quotas), carrying the headers its response needs;
 * `problemFromError` copies them. The body names the violated policy as the draft's
 * `violated-policies` member.
 */
export class LimitExceededError extends KilnError {
  constructor(
    code: string,
    message: string,
    readonly headers: Record<string, string>,
    policy: LimitPolicy,
  ) {
    super(code, message, { status: 429, retryable: true, details: { "violated-policies": [policy.name] } });
  }
}
