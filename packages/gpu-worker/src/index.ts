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
export {
  writeReferenceModel,
  writeReferenceModels,
  REFERENCE_MODEL_MARKER,
  REFERENCE_MODEL_VERSION,
} from "./models/reference/reference-models.js";
export { ignoredWords, matchingPictures, drawPicture, type Picture } from "./models/reference/picture-set.js";
export { sdxlExecutor, type ModelSet, type StageExecutor } from "./runtime/stage-executor.js";
export { runStageMessage, type StageOutcome } from "./runtime/stage-runner.js";
export { Worker, type WorkerOptions, type WorkerStatus } from "./runtime/worker.js";
export { startHealthServer } from "./runtime/health-server.js";
export { createWorkerMetrics } from "./runtime/metrics.js";
export { eventLogSink, fanOutEvents, type EventLogLine } from "./runtime/event-log.js";
export { nullExecutor } from "./runtime/null-executor.js";
export { BestEffortWrites } from "./runtime/best-effort-writes.js";
export {
  DEFAULT_SHAPE,
  GPU_PROFILES,
  type GpuProfile,
  renderSeconds,
  type RenderShape,
  stageSeconds,
  stageSteps,
} from "./simulated-gpu/gpu-profiles.js";
export { simulateGpu, type SimulatedGpu } from "./simulated-gpu/simulated-gpu.js";
export { DeviceThread, pinFeed } from "./onnx/device-thread/device-thread.js";
export type { LoadedSession, RunnableSession } from "./onnx/session-factory.js";
// Image inputs (img2img, inpaint, outpaint).
export { prepareSource, type PreparedSource } from "./engine/img2img/source-image.js";
export { encodeImageLatents, rgb8ToVaeInput } from "./engine/img2img/vae-encoder.js";
export { type NoiseKernel, NoiseSource } from "./engine/noise.js";
// SDXL invisible watermark.
export {
  detectSdxlWatermark,
  SDXL_WATERMARK_BITS,
  WATERMARK_MATCH_THRESHOLD,
  type WatermarkDetection,
} from "./engine/watermark/sdxl-watermark.js";
export { detectSdxlWatermarkInFile } from "./engine/watermark/detect-file.js";
// TensorRT engines
export * from "./engines/index.js";
// Model and engine sync from S3
export * from "./models/sync/index.js";
