import { randomId, WARMUP_QUEUE } from "@kiln/shared";

import type { BatchDeps } from "./batch-service.js";
import { expansionCount } from "./expand.js";
import { manifestSchema } from "./manifest.js";
import { batchKeys, readJson } from "./run-record.js";
import type { StoredManifest } from "./schedule.js";

/**
 * The warm-up ahead of a scheduled run. The GPU fleet scales on visible messages per worker over
 * the stage queues and the warm-up queue (infra/fleet/gpu-fleet.ts), and wakes from zero when any
 * are visible. A warm-up puts as many messages on the warm-up queue (read by no worker) as the run
 * will first put in the batch lane — its renders, up to the key's window and MAX_WARMUP_MESSAGES —
 * so the fleet grows to the size the burst needs before it comes. The fire clears them; the
 * queue's retention (infra/plan/queues.ts) bounds one that was missed.
 */
export interface WarmupMessage {
  v: 1;
  kind: "warmup";
  key_id: string;
  manifest_id: string;
  /** The fire this warm-up precedes. */
  fire_at: string;
}

/** 25 workers at the default backlog target of 4 stages per worker. */
export const MAX_WARMUP_MESSAGES = 100;

export interface WarmupResult {
  ownerKeyId: string;
  manifestId: string;
  fireAt: string;
  messages: number;
  error?: string;
}

/** Emits the warm-up for one fire, once however often it is asked (a claim per key, manifest and fire). */
export async function emitWarmup(
  deps: BatchDeps,
  ownerKeyId: string,
  manifestId: string,
  fireAt: Date,
): Promise<WarmupResult> {
  const result: WarmupResult = { ownerKeyId, manifestId, fireAt: fireAt.toISOString(), messages: 0 };
  const stored = await readJson<StoredManifest>(deps.ports.blobs, batchKeys.manifest(ownerKeyId, manifestId));
  if (!stored) return { ...result, error: "the manifest was deleted" };
  const manifest = manifestSchema.parse(stored.manifest);
  const at = deps.now?.() ?? new Date();
  const claimed = await deps.ports.keys.putIdempotency(
    {
      id: `batch-warmup:${ownerKeyId}:${manifestId}:${result.fireAt}`,
      fingerprint: result.fireAt,
      state: "completed",
      token: randomId(8),
      lockedUntil: 0,
      expiresAt: Math.floor(at.getTime() / 1000) + 2 * 86_400,
      createdAt: at.toISOString(),
    },
    at.getTime(),
  );
  if (claimed) return result;
  const count = Math.max(1, Math.min(expansionCount(manifest), deps.window, MAX_WARMUP_MESSAGES));
  const message: WarmupMessage = {
    v: 1,
    kind: "warmup",
    key_id: ownerKeyId,
    manifest_id: manifestId,
    fire_at: result.fireAt,
  };
  for (let i = 0; i < count; i++) await deps.ports.queue.send(WARMUP_QUEUE, message);
  deps.log?.("info", { ownerKeyId, manifestId, fireAt: result.fireAt, messages: count }, "batch warm-up sent");
  return { ...result, messages: count };
}

const isWarmup = (b: unknown): b is WarmupMessage =>
  typeof b === "object" && b !== null && (b as WarmupMessage).kind === "warmup";

/**
 * Deletes the warm-up messages of fires that have come (this run's and any missed), and puts the
 * others back at once. Receives carry on until the queue answers empty or `maxRounds` is reached.
 */
export async function clearWarmups(deps: BatchDeps, now: Date, maxRounds = 30): Promise<number> {
  let deleted = 0;
  const held: string[] = [];
  try {
    for (let round = 0; round < maxRounds; round++) {
      const messages = await deps.ports.queue.receive(WARMUP_QUEUE, { max: 10, visibilitySeconds: 30, waitSeconds: 0 });
      if (messages.length === 0) break;
      for (const m of messages) {
        if (!isWarmup(m.body) || Date.parse(m.body.fire_at) <= now.getTime() + 60_000) {
          await deps.ports.queue.ack(WARMUP_QUEUE, m.receipt);
          deleted++;
        } else held.push(m.receipt);
      }
    }
  } finally {
    for (const receipt of held) await deps.ports.queue.release(WARMUP_QUEUE, receipt, 0);
  }
  return deleted;
}
