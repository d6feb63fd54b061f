import type { MiddlewareHandler } from "hono";

import type { ApiDeps, ApiEnv } from "../deps.js";
import { fail } from "../http/problem.js";
import { limitHeaders, type LimitPolicy, rateLimitField, rateLimitPolicyField } from "../quotas/limit-exceeded.js";
import { effectiveLimits } from "../renders/render-admission.js";

/**
 * Requests per second per API key, as a token bucket kept in the KeyStore (so every API instance
 * shares it). Runs after `requireKey`. Every answer to a limited key carries the IETF
 * `RateLimit-Policy` and `RateLimit` fields; over the limit it is a 429 with `Retry-After`.
 *
 * The policy is advertised as `q=<burst>;w=<burst/rate>`: the most a client may send at once, and
 * the window over which the bucket refills that much.
 */
export function rateLimit(deps: ApiDeps): MiddlewareHandler<ApiEnv> {
  return async (c, next) => {
    const key = c.get("key");
    const limits = effectiveLimits(key, deps.keyLimits);
    if (!(limits.requestsPerSecond > 0)) return next();
    const nowMs = (deps.now?.() ?? new Date()).getTime();
    const policy: LimitPolicy = {
      name: "kiln-rps",
      quota: limits.burst,
      windowSeconds: Math.max(1, Math.round(limits.burst / limits.requestsPerSecond)),
    };
    const taken = await deps.ports.keys.takeToken(`rps:${key.id}`, limits.requestsPerSecond, limits.burst, nowMs);
    if (!taken.allowed) {
      const retryAfter = taken.retryAfterMs / 1000;
      fail(
        429,
        "rate_limited",
        `This API key may send ${limits.requestsPerSecond} request${limits.requestsPerSecond === 1 ? "" : "s"} per second (bursts of ${limits.burst}); wait ${Math.max(1, Math.ceil(retryAfter))} s (Retry-After) before the next one.`,
        { "violated-policies": [policy.name] },
        limitHeaders(policy, 0, retryAfter, retryAfter),
      );
    }
    await next();
    // Appended, not set: when a quota of the submit path answered (a 429 for the daily images),
    // its own fields stay and this one joins them as another member of the lists.
    c.header("RateLimit-Policy", rateLimitPolicyField(policy), { append: true });
    c.header("RateLimit", rateLimitField(policy, taken.remaining, taken.resetMs / 1000), { append: true });
  };
}
