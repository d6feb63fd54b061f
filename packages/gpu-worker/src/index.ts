export { loadSdxlModel, type SdxlModel } from "./engine/sdxl-model.js";
export {
  runPipelineStage,
  stageSchedule,
  generationParameters,
  type StageHooks,
  type StageResult,
} from "./engine/sdxl-pipeline.js";
export { readPngText } from "./engine/image-files.js";
export { writeTinyModel, writeTinyModels } from "./models/tiny-models.js";
export { sdxlExecutor, type ModelSet, type StageExecutor } from "./runtime/stage-executor.js";
export { runStageMessage, type StageOutcome } from "./runtime/stage-runner.js";
export { Worker, type WorkerOptions, type WorkerStatus } from "./runtime/worker.js";
export { startHealthServer } from "./runtime/health-server.js";
export { createWorkerMetrics } from "./runtime/metrics.js";
export { eventLogSink, fanOutEvents, type EventLogLine } from "./runtime/event-log.js";
export { nullExecutor } from "./runtime/null-executor.js";
export { BestEffortWrites } from "./runtime/best-effort-writes.js";
