import { KilnError } from "./errors.js";
import type { TokenResult } from "./ports/key-store.js";

/**
 * The token bucket as GCRA (generic cell rate algorithm): a bucket is one number, its "theoretical
 * arrival time" (TAT, epoch µs). A request is allowed when `max(tat, now) + interval` stays within
 * `burst` intervals of now, and then moves TAT there. One number means one conditional write, which
 * both families can do atomically (SQLite: one UPSERT; DynamoDB: a conditional SET or ADD).
 * Whole microseconds keep the arithmetic exact in both stores.
 */
export interface BucketWindow {
  /** µs between tokens. */
  intervalUs: number;
  nowUs: number;
  /** An allowed request may move TAT up to here: `now + burst · interval`. */
  ceilingUs: number;
}

export function bucketWindow(ratePerSecond: number, burst: number, nowMs: number): BucketWindow {
  if (!Number.isFinite(ratePerSecond) || ratePerSecond <= 0) {
    throw new KilnError("rate_invalid", `A token bucket needs a positive rate (got ${ratePerSecond} per second).`);
  }
  if (!Number.isInteger(burst) || burst < 1) {
    throw new KilnError("burst_invalid", `A token bucket needs a whole burst of at least 1 (got ${burst}).`);
  }
  const intervalUs = Math.max(1, Math.round(1e6 / ratePerSecond));
  const nowUs = Math.round(nowMs * 1000);
  return { intervalUs, nowUs, ceilingUs: nowUs + burst * intervalUs };
}

/** After an allowed take that moved TAT to `tatUs`. */
export function allowedResult(w: BucketWindow, tatUs: number): TokenResult {
  return {
    allowed: true,
    remaining: Math.max(0, Math.floor((w.ceilingUs - tatUs) / w.intervalUs)),
    retryAfterMs: 0,
    resetMs: Math.max(0, Math.ceil((tatUs - w.nowUs) / 1000)),
  };
}

/** A denied take against the stored `tatUs`. */
export function deniedResult(w: BucketWindow, tatUs: number): TokenResult {
  return {
    allowed: false,
    remaining: 0,
    retryAfterMs: Math.max(1, Math.ceil((tatUs + w.intervalUs - w.ceilingUs) / 1000)),
    resetMs: Math.max(0, Math.ceil((tatUs - w.nowUs) / 1000)),
  };
}
