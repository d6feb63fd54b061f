export { createApp, type KilnApp } from "./app.js";
export { DEFAULT_TIMING, type ApiDeps, type ApiTiming } from "./deps.js";
export {
  submitRender,
  cancelRender,
  expireIfOverdue,
  waitForEnd,
  type CancelOutcome,
} from "./renders/render-service.js";
export { sweepExpiredJobs, retentionEnd, type SweepResult } from "./renders/retention.js";
export { problem } from "./http/problem.js";
// Batches
export { BatchScheduler, schedulerTick, fireManifest, nextFires } from "./batches/schedule.js";
export { batchDepsFrom, type BatchOptions } from "./batches/routes.js";
export { pumpAll, startRun, type BatchDeps } from "./batches/batch-service.js";
export type { BatchChatNotifier, BatchChatMessage } from "./batches/notify.js";
