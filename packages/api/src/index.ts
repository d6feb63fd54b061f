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
