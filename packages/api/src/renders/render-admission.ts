import { type KeyRecord, KilnError, type Ports, type RenderRequest } from "@kiln/shared";

import { addressRefusal, hostOf, parseIp, type WebhookPolicy, webhookUrlRefusal } from "../outbound/address-policy.js";
import { LimitExceededError, limitHeaders, type LimitPolicy } from "../quotas/limit-exceeded.js";

/** A key's limits after defaults; 0 = no limit (burst is at least 1). */
export interface EffectiveLimits {
  requestsPerSecond: number;
  burst: number;
  concurrentJobs: number;
  imagesPerDay: number;
}

export const NO_LIMITS: EffectiveLimits = { requestsPerSecond: 0, burst: 1, concurrentJobs: 0, imagesPerDay: 0 };

/** The key's own limits where it sets them, else the configured defaults. */
export function effectiveLimits(key: KeyRecord, defaults: EffectiveLimits = NO_LIMITS): EffectiveLimits {
  const own = key.limits ?? {};
  const requestsPerSecond = own.requestsPerSecond ?? defaults.requestsPerSecond;
  // A key that sets its own rate but no burst gets twice its rate, as the config default does.
  const burst =
    own.burst ?? (own.requestsPerSecond !== undefined ? Math.max(1, Math.ceil(2 * requestsPerSecond)) : defaults.burst);
  return {
    requestsPerSecond,
    burst,
    concurrentJobs: own.concurrentJobs ?? defaults.concurrentJobs,
    imagesPerDay: own.imagesPerDay ?? defaults.imagesPerDay,
  };
}

export interface WebhookSubmitPolicy extends WebhookPolicy {
  /**
   * The host's addresses, `[]` when the name does not exist; throws when resolution failed for
   * another reason. Absent on runtimes without DNS: then only IP-literal URLs are checked at
   * submit, and the dispatcher checks every name at delivery anyway.
   */
  resolveHost?: (host: string) => Promise<string[]>;
}

/** What the submit path needs to admit a render for one key: its limits and the webhook policy. */
export interface RenderAdmission {
  keyId: string;
  limits: EffectiveLimits;
  hasWebhookSecret: boolean;
  webhooks: WebhookSubmitPolicy;
}

export function renderAdmission(
  key: KeyRecord,
  options: { keyLimits?: EffectiveLimits; webhooks?: WebhookSubmitPolicy },
): RenderAdmission {
  return {
    keyId: key.id,
    limits: effectiveLimits(key, options.keyLimits),
    hasWebhookSecret: key.webhookSecret !== undefined,
    webhooks: options.webhooks ?? { allowPrivate: false, allowedHosts: [] },
  };
}

const CONCURRENCY_POLICY = (quota: number): LimitPolicy => ({ name: "kiln-concurrent-jobs", quota });
const DAILY_POLICY = (quota: number): LimitPolicy => ({ name: "kiln-images-per-day", quota, windowSeconds: 86_400 });
/** A job slot frees when some job ends, which cannot be predicted; this is how soon to look again. */
const CONCURRENCY_RETRY_SECONDS = 5;
/**
 * Submits in progress are counted in leases of this many seconds: each submit adds itself to the
 * current lease's counter and reads the previous one's too. A submit that crashed before giving its
 * place back is counted only while its lease is current or previous, so it costs its key at most
 * two leases of a slot; a live submit takes milliseconds, well within one.
 */
const IN_FLIGHT_LEASE_SECONDS = 3;

/**
 * Runs `create` (which writes the job) only if the key may submit this render: its webhook is
 * deliverable and signable, it has a free job slot, and the images fit in today's quota. Over a
 * limit it throws a 429 `LimitExceededError`; a rejected or failed create gives back what it took.
 * Without an admission (trusted internal callers) it just runs `create`.
 */
export async function admitRender<T>(
  ports: Ports,
  admission: RenderAdmission | undefined,
  request: RenderRequest,
  now: Date,
  create: () => Promise<T>,
): Promise<T> {
  if (!admission) return create();
  if (request.webhook) await checkWebhookTarget(admission, request.webhook.url);
  const { keyId, limits } = admission;
  const releaseSlot =
    limits.concurrentJobs > 0 ? await claimJobSlot(ports, keyId, limits.concurrentJobs, now) : undefined;
  try {
    const refund =
      limits.imagesPerDay > 0 ? await takeDailyImages(ports, keyId, request.n, limits.imagesPerDay, now) : undefined;
    try {
      return await create();
    } catch (e) {
      await refund?.();
      throw e;
    }
  } finally {
    await releaseSlot?.();
  }
}

/**
 * Queued + running jobs are counted in the JobStore; submits of the same key in progress are
 * counted in leased atomic counters (see IN_FLIGHT_LEASE_SECONDS) that each holds until its job is
 * written. Of two racing submits the later counter value sees the other, in a counter or in the
 * store, so the limit holds under concurrency; a crashed submit's place heals when its lease ages
 * out. Returns the release of this submit's place.
 */
async function claimJobSlot(ports: Ports, keyId: string, limit: number, now: Date): Promise<() => Promise<void>> {
  const lease = Math.floor(now.getTime() / 1000 / IN_FLIGHT_LEASE_SECONDS);
  const name = (l: number) => `submitting:${keyId}:${l}`;
  const expiresAt = (l: number) => (l + 3) * IN_FLIGHT_LEASE_SECONDS;
  const [mine, previous] = await Promise.all([
    ports.keys.incrementCounter(name(lease), 1, expiresAt(lease)),
    ports.keys.incrementCounter(name(lease - 1), 0, expiresAt(lease - 1)),
  ]);
  const inFlight = mine + Math.max(0, previous);
  const release = async () => {
    await ports.keys.incrementCounter(name(lease), -1, expiresAt(lease));
  };
  try {
    const active = await countActiveJobs(ports, keyId, limit);
    // A counter that lapsed mid-submit restarts low; this submit is always at least one.
    if (active + Math.max(1, inFlight) > limit) {
      const policy = CONCURRENCY_POLICY(limit);
      throw new LimitExceededError(
        "concurrent_jobs_exceeded",
        `This API key may have ${limit} render${limit === 1 ? "" : "s"} queued or running at once, and has ${Math.min(active, limit)}; wait for one to finish (or cancel one), then submit again.`,
        limitHeaders(policy, 0, CONCURRENCY_RETRY_SECONDS),
        policy,
      );
    }
  } catch (e) {
    await release();
    throw e;
  }
  return release;
}

/** Queued and running jobs of the key, counted up to `cap + 1` (enough to decide). */
async function countActiveJobs(ports: Ports, keyId: string, cap: number): Promise<number> {
  let count = 0;
  for (const status of ["running", "queued"] as const) {
    const page = await ports.jobs.listByOwner(keyId, { limit: Math.min(1000, cap + 1), status });
    count += page.jobs.length;
    if (count > cap) break;
  }
  return count;
}

/** Adds the render's images to the key's count for the UTC day; over the quota it takes them back and throws. */
async function takeDailyImages(
  ports: Ports,
  keyId: string,
  images: number,
  limit: number,
  now: Date,
): Promise<() => Promise<void>> {
  const day = now.toISOString().slice(0, 10);
  const nextMidnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  const name = `images:${keyId}:${day}`;
  // Kept a day past its end so today's count can still be read tomorrow.
  const expiresAt = nextMidnight / 1000 + 86_400;
  const used = await ports.keys.incrementCounter(name, images, expiresAt);
  const refund = async () => {
    await ports.keys.incrementCounter(name, -images, expiresAt);
  };
  if (used > limit) {
    await refund();
    const before = used - images;
    const secondsLeft = (nextMidnight - now.getTime()) / 1000;
    const policy = DAILY_POLICY(limit);
    const detail =
      images > limit
        ? `This API key may request at most ${limit} image${limit === 1 ? "" : "s"} a day, fewer than the ${images} this render asks for; lower n.`
        : `This API key has used ${Math.min(before, limit)} of its ${limit} images for today (UTC) and this render asks for ${images}; the count resets at ${new Date(nextMidnight).toISOString()}.`;
    throw new LimitExceededError(
      "images_per_day_exceeded",
      detail,
      limitHeaders(policy, Math.max(0, limit - before), secondsLeft, secondsLeft),
      policy,
    );
  }
  return refund;
}

async function checkWebhookTarget(admission: RenderAdmission, raw: string): Promise<void> {
  if (!admission.hasWebhookSecret) {
    const message =
      "this API key has no webhook signing secret (it predates webhooks); create a new key to use webhooks";
    throw new KilnError("webhook_secret_missing", `The webhook cannot be signed: ${message}.`, {
      status: 400,
      details: { errors: [{ field: "webhook", message }] },
    });
  }
  const policy = admission.webhooks;
  const url = new URL(raw);
  const host = hostOf(url);
  let reason = webhookUrlRefusal(url, policy);
  if (!reason && !policy.allowPrivate && policy.resolveHost && !parseIp(host)) {
    let addresses: string[] = [];
    try {
      addresses = await policy.resolveHost(host);
      if (addresses.length === 0) reason = `${host} does not resolve to any address`;
    } catch {
      // A transient DNS failure: accept; the dispatcher resolves and checks again before each attempt.
    }
    reason ??= addresses.map((a) => addressRefusal(host, a, policy)).find((r) => r !== null) ?? null;
  }
  if (reason) {
    throw new KilnError("webhook_url_refused", `webhook.url is refused: ${reason}.`, {
      status: 400,
      details: { errors: [{ field: "webhook.url", message: reason }] },
    });
  }
}
