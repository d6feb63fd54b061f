import {
  type JobEventSink,
  type PausePoint,
  type Ports,
  queueForStage,
  type QueueMessage,
  stageMessageSchema,
} from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";

import type { BestEffortWrites } from "./best-effort-writes.js";
import type { WorkerMetrics } from "./metrics.js";
import type { GpuTurn } from "./pipeline/gpu-turns.js";
import { StageDelivery } from "./stage-delivery.js";
import type { StageExecutor } from "./stage-executor.js";

export interface StageRunnerOptions {
  ports: Ports;
  execute: StageExecutor;
  logger: Logger;
  metrics?: WorkerMetrics;
  workerId: string;
  visibilitySeconds: number;
  maxReceives: number;
  /** How often a running stage re-reads its job to notice a cancel request. */
  cancelPollMs?: number;
  /** Progress is written at most this often (and always on a stage's last step). */
  progressIntervalMs?: number;
  /** Aborted when the worker's drain grace period runs out: the stage stops and its message is released. */
  drainSignal?: AbortSignal;
  /** Told of every stored transition (webhooks). */
  events?: JobEventSink;
  /**
   * How long a queue or store call keeps being retried (with backoff) while it fails transiently
   * (unreachable, busy, throttled) before the delivery gives up and is left to its visibility
   * timeout. Retrying in place keeps a finished stage's work across a short outage.
   */
  ioRetryMs?: number;
  /** The process's gate for progress and visibility writes (one per worker; a fresh one if absent). */
  bestEffort?: BestEffortWrites;
  now?: () => Date;
  /** Fault tests' pause points: a stage waits at `stage<k>-step<n>` when a test armed it. */
  pause?: PausePoint;
  /** The pipelined worker's GPU turn for this delivery (absent: the stage runs as soon as it is claimed). */
  gpu?: GpuTurn;
}

export type StageOutcome =
  "succeeded" | "handed-over" | "skipped" | "stale" | "canceled" | "expired" | "failed" | "retry" | "released";

/**
 * Runs one delivery of a stage message to its end: the job moves only through conditional
 * transitions, outputs go to deterministic keys, and the message is acknowledged only after the
 * stage's effects are durable. So a crash at any point is repaired by redelivery, and a duplicate
 * delivery can neither finish a job twice nor move it backwards.
 */
export async function runStageMessage(options: StageRunnerOptions, delivery: QueueMessage): Promise<StageOutcome> {
  const parsed = stageMessageSchema.safeParse(delivery.body);
  if (!parsed.success) {
    // Unreadable messages cannot succeed; let them reach the dead-letter queue quickly for inspection.
    options.logger.error(
      { messageId: delivery.id, issues: parsed.error.issues },
      "stage message is invalid; releasing it towards the dead-letter queue",
    );
    const body = delivery.body as { kind?: string; lane?: string; route?: unknown };
    const route = typeof body?.route === "string" && /^\d{2,5}x\d{2,5}$/.test(body.route) ? body.route : undefined;
    await options.ports.queue.release(
      queueForStage(body?.kind === "refine" ? "refine" : "base", body?.lane === "batch" ? "batch" : undefined, route),
      delivery.receipt,
      0,
    );
    return "released";
  }
  return new StageDelivery(options, delivery, parsed.data).run();
}
