export { createApp, type KilnApp } from "./app.js";
export { DEFAULT_TIMING, type ApiDeps, type ApiTiming } from "./deps.js";
export { submitRender, cancelRender, expireIfOverdue, waitForEnd, type CancelOutcome } from "./render-service.js";
export { sweepExpiredJobs, retentionEnd, type SweepResult } from "./retention.js";
export { problem } from "./problem.js";
