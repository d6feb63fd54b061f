import fs from "node:fs";
import path from "node:path";

import { type ApiDeps, createApp } from "@kiln/api";
import { apiDeps as apiDepsFromConfig } from "@kiln/api/config";
import {
  loadSdxlModel,
  type ModelSet,
  REFERENCE_MODEL_VERSION,
  type SdxlModel,
  type SyncReport,
  writeReferenceModel,
  writeTinyModel,
} from "@kiln/gpu-worker";
import type { KilnConfig, Ports } from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";

import { localModelDir } from "./models/remote-model-dirs.js";

// Ports and API settings from config live with the API, so its Lambda entry can share them.
export { localUrlSecret } from "@kiln/api/config";
export { openPorts } from "@kiln/api/ports";

export function apiDeps(config: KilnConfig, ports: Ports, logger: Logger): ApiDeps {
  return apiDepsFromConfig(config, ports, (level, obj, msg) => logger[level](obj, msg));
}

export const buildApi = (config: KilnConfig, ports: Ports, logger: Logger) => createApp(apiDeps(config, ports, logger));

/**
 * The models this worker runs. Without KILN_MODEL_DIR, Kiln generates its reference models (or, with
 * KILN_BUILTIN_MODELS=tiny, its tiny random ones) into the data dir and says loudly that they are not SDXL.
 */
export async function loadModels(
  config: KilnConfig,
  logger: Logger,
  /** Model sync: filled with the report of each folder synced from s3:// (absent: local folders). */
  syncs: Partial<Record<"base" | "refiner", SyncReport>> = {},
): Promise<ModelSet> {
  let baseDir = config.modelDir && (await localModelDir(config.modelDir, "base", config, logger, syncs));
  let refinerDir = config.refinerDir && (await localModelDir(config.refinerDir, "refiner", config, logger, syncs));
  if (!baseDir) {
    if (!config.allowTinyModels) {
      throw new Error(
        "KILN_MODEL_DIR is not set and KILN_TINY_MODELS=false: point KILN_MODEL_DIR at a diffusers SDXL ONNX folder.",
      );
    }
    const root = path.join(config.dataDir, "models");
    const kind = config.builtinModels;
    // The reference generator's version is in the folder name, so an upgrade never reuses stale graphs.
    const folder = kind === "reference" ? `reference-v${REFERENCE_MODEL_VERSION}` : "tiny";
    baseDir = path.join(root, `${folder}-sdxl-base`);
    refinerDir ??= path.join(root, `${folder}-sdxl-refiner`);
    const write = kind === "reference" ? writeReferenceModel : writeTinyModel;
    if (!fs.existsSync(path.join(baseDir, "model_index.json"))) write(baseDir, { role: "base" });
    if (!fs.existsSync(path.join(refinerDir, "model_index.json"))) write(refinerDir, { role: "refiner" });
    if (kind === "reference") {
      logger.warn(
        { baseDir, refinerDir },
        'KILN_MODEL_DIR is not set: using Kiln\'s reference models, which draw only coloured shapes (e.g. "a red circle on a blue background"); they are not SDXL. Set KILN_MODEL_DIR (and KILN_REFINER_DIR) to an SDXL ONNX export for real images.',
      );
    } else {
      logger.warn(
        { baseDir, refinerDir },
        "KILN_MODEL_DIR is not set: using Kiln's tiny test models. The pipeline is real but the weights are random — images are noise. Set KILN_MODEL_DIR (and KILN_REFINER_DIR) to an SDXL ONNX export for real images.",
      );
    }
  }
  // TensorRT engines: with tensorrt first, TensorRT runs only the prebuilt EPContext engines (attached by the
  // worker); the model's own sessions open on the providers after it, so no engine is ever built at boot.
  const providers =
    config.providers[0] === "tensorrt"
      ? config.providers.length > 1
        ? config.providers.slice(1)
        : (["cpu"] as const)
      : config.providers;
  const options = {
    providers: [...providers],
    deviceId: config.deviceId,
    logger,
    finishingThreads: config.finishingThreads,
    gpuThread: config.gpuThread,
  };
  const needBase = config.stages.includes("base") || !refinerDir;
  const models: ModelSet = {};
  if (needBase) models.base = await loadSdxlModel(baseDir, "base", options);
  if (refinerDir && config.stages.includes("refine"))
    models.refiner = await loadSdxlModel(refinerDir, "refiner", options);
  for (const m of Object.values(models) as SdxlModel[]) {
    logger.info({ role: m.role, dir: m.dir, providers: m.providers, tiny: m.isTinyTestModel }, "model loaded");
  }
  return models;
}
