import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { DEFAULT_RENDER_LIMITS, type KilnConfig, type Ports } from "@kiln/shared";
import { openLocalPorts } from "@kiln/shared/local";
import { openAwsPorts } from "@kiln/shared/aws";
import { verifyDownloadSignature } from "@kiln/shared/signed-url";
import type { Logger } from "@kiln/shared/node";
import { createApp, type ApiDeps } from "@kiln/api";
import { loadSdxlModel, writeTinyModel, type SdxlModel, type ModelSet } from "@kiln/gpu-worker";

/** The local family signs download URLs with a per-data-dir secret unless one is configured. */
export function localUrlSecret(config: KilnConfig): string {
  if (config.urlSecret) return config.urlSecret;
  const file = path.join(config.dataDir, "url-secret");
  if (!fs.existsSync(file)) {
    fs.mkdirSync(config.dataDir, { recursive: true });
    try {
      fs.writeFileSync(file, randomBytes(32).toString("hex"), { mode: 0o600, flag: "wx" });
    } catch (e) {
      // Another process sharing the data dir wrote it first; use theirs.
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
  }
  return fs.readFileSync(file, "utf8").trim();
}

export function openPorts(config: KilnConfig): Ports {
  if (config.backend === "aws") {
    return openAwsPorts({
      region: config.aws.region,
      endpoint: config.aws.endpoint,
      queuePrefix: config.aws.queuePrefix,
      bucket: config.aws.bucket!,
      table: config.aws.table!,
      maxReceives: config.maxReceives,
    });
  }
  return openLocalPorts({ dataDir: config.dataDir, publicBaseUrl: config.publicUrl, urlSecret: localUrlSecret(config), maxReceives: config.maxReceives });
}

export function apiDeps(config: KilnConfig, ports: Ports, logger: Logger): ApiDeps {
  const secret = config.backend === "local" ? localUrlSecret(config) : undefined;
  return {
    ports,
    publicUrl: config.publicUrl,
    limits: { ...DEFAULT_RENDER_LIMITS, minSide: config.limits.minSide, maxSide: config.limits.maxSide },
    maxBodyBytes: config.limits.maxBodyBytes,
    downloadUrlSeconds: config.downloadUrlSeconds,
    retentionHours: config.retentionHours,
    serveFiles: secret ? { verify: (key, expires, sig) => verifyDownloadSignature(key, expires, sig, secret, Date.now()) } : undefined,
    log: (level, obj, msg) => logger[level](obj, msg),
  };
}

export const buildApi = (config: KilnConfig, ports: Ports, logger: Logger) => createApp(apiDeps(config, ports, logger));

/**
 * The models this worker runs. Without KILN_MODEL_DIR, Kiln generates its tiny test models into the
 * data dir and says loudly that the images are noise: the whole pipeline is real, the weights are not.
 */
export async function loadModels(config: KilnConfig, logger: Logger): Promise<ModelSet> {
  let baseDir = config.modelDir;
  let refinerDir = config.refinerDir;
  if (!baseDir) {
    if (!config.allowTinyModels) {
      throw new Error("KILN_MODEL_DIR is not set and KILN_TINY_MODELS=false: point KILN_MODEL_DIR at a diffusers SDXL ONNX folder.");
    }
    const root = path.join(config.dataDir, "models");
    baseDir = path.join(root, "tiny-sdxl-base");
    refinerDir ??= path.join(root, "tiny-sdxl-refiner");
    if (!fs.existsSync(path.join(baseDir, "model_index.json"))) writeTinyModel(baseDir, { role: "base" });
    if (!fs.existsSync(path.join(refinerDir, "model_index.json"))) writeTinyModel(refinerDir, { role: "refiner" });
    logger.warn(
      { baseDir, refinerDir },
      "KILN_MODEL_DIR is not set: using Kiln's tiny test models. The pipeline is real but the weights are random — images are noise. Set KILN_MODEL_DIR (and KILN_REFINER_DIR) to an SDXL ONNX export for real images.",
    );
  }
  const options = { providers: config.providers, deviceId: config.deviceId, logger };
  const needBase = config.stages.includes("base") || !refinerDir;
  const models: ModelSet = {};
  if (needBase) models.base = await loadSdxlModel(baseDir, "base", options);
  if (refinerDir && config.stages.includes("refine")) models.refiner = await loadSdxlModel(refinerDir, "refiner", options);
  for (const m of Object.values(models) as SdxlModel[]) {
    logger.info({ role: m.role, dir: m.dir, providers: m.providers, tiny: m.isTinyTestModel }, "model loaded");
  }
  return models;
}
