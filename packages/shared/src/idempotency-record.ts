import type { IdempotencyRecord } from "./ports/key-store.js";

/** Live: not expired, and not a pending claim whose holder is presumed dead. Both families decide alike. */
export function isLiveIdempotency(record: IdempotencyRecord, nowMs: number): boolean {
  return record.expiresAt > Math.floor(nowMs / 1000) && !(record.state === "pending" && record.lockedUntil <= nowMs);
}
