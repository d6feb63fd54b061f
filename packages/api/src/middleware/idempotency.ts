import { type IdempotencyRecord, randomId, sha256Hex } from "@kiln/shared";
import type { Context, MiddlewareHandler, Next } from "hono";

import type { ApiDeps, ApiEnv } from "../deps.js";
import { fail } from "../http/problem.js";

/** Records are kept this long (the issue's 24 h; Stripe keeps theirs as long). */
const RECORD_SECONDS = 24 * 3600;
/**
 * A pending claim not renewed for this long belongs to a request that died (its process killed):
 * a running request renews its claim every RENEW_MS (`Prefer: wait` may run for 60 s), so a retry
 * after a crash waits seconds, not minutes.
 */
const LOCK_MS = 15_000;
const RENEW_MS = 5_000;
/** How long a duplicate waits for the first request to finish before answering 409. */
const DUPLICATE_WAIT_MS = 10_000;
const KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;

/** JSON with object keys sorted at every level, so `{"a":1,"b":2}` and `{ "b": 2, "a": 1 }` hash alike. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

function canonicalBody(text: string): string {
  try {
    return canonicalJson(JSON.parse(text));
  } catch {
    // Not JSON: the route will refuse it; compare the bytes as sent.
    return text;
  }
}

/**
 * `Idempotency-Key` on POST (draft-ietf-httpapi-idempotency-key-header; Stripe's semantics).
 * Scoped to the API key and route. The first request claims the key atomically in the KeyStore;
 * its 2xx answer is stored and replayed to later requests with the same key and the same body as
 * `200` with `Idempotent-Replayed: true`. The same key with another body is a 422. A duplicate
 * that arrives while the first is still running waits for it (then replays) rather than creating
 * a second job. A non-2xx answer is not stored: the client may retry with the same key.
 * Runs after `requireKey`.
 */
export function idempotency(deps: ApiDeps, options: { duplicateWaitMs?: number } = {}): MiddlewareHandler<ApiEnv> {
  const nowMs = () => (deps.now?.() ?? new Date()).getTime();
  const duplicateWaitMs = options.duplicateWaitMs ?? DUPLICATE_WAIT_MS;
  return async (c, next) => {
    const raw = c.req.header("idempotency-key");
    if (c.req.method !== "POST" || raw === undefined) return next();
    // The draft sends it as a structured-field string ("…"); Stripe and most clients send it bare.
    const value = /^".*"$/.test(raw) ? raw.slice(1, -1) : raw;
    if (!KEY_PATTERN.test(value)) {
      const message = "must be 1–255 visible ASCII characters (a UUID is a good choice)";
      fail(400, "invalid_request", `The Idempotency-Key header is invalid — it ${message}.`, {
        errors: [{ field: "header.idempotency-key", message }],
      });
    }
    const keys = deps.ports.keys;
    const route = `${c.req.method} ${c.req.path}`;
    const id = await sha256Hex(`${c.get("key").id}\n${route}\n${value}`);
    const fingerprint = await sha256Hex(`${route}\n${canonicalBody(await c.req.text())}`);
    const token = randomId(16);
    const started = nowMs();
    const claim = (at: number): IdempotencyRecord => ({
      id,
      fingerprint,
      state: "pending",
      token,
      lockedUntil: at + LOCK_MS,
      expiresAt: Math.floor(at / 1000) + RECORD_SECONDS,
      createdAt: new Date(at).toISOString(),
    });

    let pause = 20;
    for (;;) {
      const at = nowMs();
      const existing = await keys.putIdempotency(claim(at), at);
      if (!existing) break;
      if (existing.fingerprint !== fingerprint) {
        fail(
          422,
          "idempotency_key_reused",
          "This Idempotency-Key was already used with a different request body; use a new key for a new request (keys are remembered for 24 hours).",
          { errors: [{ field: "header.idempotency-key", message: "already used with a different body" }] },
        );
      }
      if (existing.state === "completed" && existing.jobId === jobIdFor(id)) return replayJob(c, next, existing.jobId);
      if (existing.state === "completed" && existing.response) return replay(existing.response);
      // Crash-safe submit: a pending claim whose job is already stored (the first attempt died after
      // the commit, or is still answering) is answered with that job; nothing is created twice.
      if (existing.state === "pending" && (await deps.ports.jobs.get(jobIdFor(id))))
        return replayJob(c, next, jobIdFor(id));
      if (at - started >= duplicateWaitMs) {
        fail(
          409,
          "idempotency_key_in_progress",
          "A request with this Idempotency-Key is still being processed; retry in a moment to get its result.",
          {},
          { "retry-after": "1" },
        );
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(250, pause * 2);
    }

    c.set("submitJobId", jobIdFor(id));
    const renewal = setInterval(
      () => void keys.renewIdempotency(id, token, nowMs() + LOCK_MS).catch(() => undefined),
      RENEW_MS,
    );
    try {
      await next();
    } finally {
      clearInterval(renewal);
      const res = c.res;
      if (res.status >= 200 && res.status < 300) {
        const body = await res.clone().text();
        const jobId = jobIdOf(body);
        const completed = await keys.completeIdempotency(id, token, {
          response: {
            status: res.status,
            body,
            ...(res.headers.get("location") ? { location: res.headers.get("location")! } : {}),
          },
          ...(jobId ? { jobId } : {}),
        });
        if (!completed)
          deps.log?.(
            "warn",
            { route, jobId },
            "idempotency claim was lost before the request finished (it took longer than the lock); a retry may repeat it",
          );
      } else {
        await keys.releaseIdempotency(id, token);
      }
    }
  };
}

/**
 * The job id a submit with this idempotency record creates: derived, so a retry after the first
 * attempt died (its lock lapsed, nothing completed) finds the job that attempt stored instead of
 * creating a second one.
 */
export function jobIdFor(idempotencyId: string): string {
  return `job_${idempotencyId.slice(0, 24)}`;
}

/**
 * A replay of a submit answers with the job as it is now (fresh signed URLs, current status), not
 * the stored body: the route runs again, finds the job by its derived id and renders it.
 */
async function replayJob(c: Context<ApiEnv>, next: Next, jobId: string): Promise<Response> {
  c.set("submitJobId", jobId);
  await next();
  const res = c.res;
  if (res.status < 200 || res.status >= 300) return res;
  const headers = new Headers(res.headers);
  headers.set("idempotent-replayed", "true");
  // After `next()` Hono keeps `c.res`, not a returned Response.
  c.res = new Response(res.body, { status: 200, headers });
  return c.res;
}

function replay(response: NonNullable<IdempotencyRecord["response"]>): Response {
  const headers: Record<string, string> = { "content-type": "application/json", "idempotent-replayed": "true" };
  if (response.location) headers.location = response.location;
  return new Response(response.body, { status: 200, headers });
}

function jobIdOf(body: string): string | undefined {
  try {
    const id = (JSON.parse(body) as { id?: unknown }).id;
    return typeof id === "string" ? id : undefined;
  } catch {
    return undefined;
  }
}
