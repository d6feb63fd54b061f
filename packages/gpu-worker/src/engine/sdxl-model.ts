import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

import { KilnError } from "@kiln/shared";

import type { EngineSessions } from "../engines/engine-sessions.js";
import {
  loadModelFolder,
  type LoadModelFolderOptions,
  type ModelFolder,
  type ModelRole,
} from "../models/model-folder.js";
import { SDXL_VAE_SCALING_FACTOR, type SdxlTimeIdsWidth } from "../models/sdxl-spec.js";
import { acquireDeviceThread, type DeviceThread } from "../onnx/device-thread/device-thread.js";
import { createSession, type SessionLogger, type SessionOpener } from "../onnx/session-factory.js";
import type { LoadedSession } from "../onnx/tensors.js";
import { acquireFinishingPool, type FinishingPool } from "./finishing/finishing-threads.js";
import { noiseHelper } from "./noise-helper.js";
import type { TextEncoderPair } from "./prompt-encoder.js";
import { parseSchedulerConfigText } from "./schedulers/index.js";
import type { SchedulerConfig } from "./schedulers/scheduler.js";
import { ClipTokenizer } from "./tokenizer/clip-tokenizer.js";

/** A loaded SDXL model folder: validated sessions, tokenizers, scheduler config and the flags the pipeline needs. */
export interface SdxlModel {
  /** Folder name, reported in image metadata. */
  name: string;
  dir: string;
  role: ModelRole;
  isTinyTestModel: boolean;
  encoders: TextEncoderPair;
  unet: LoadedSession;
  unetEmbedWidth: number;
  timeIdsWidth: SdxlTimeIdsWidth;
  vaeDecoder: LoadedSession;
  /** optimum's `vae_encoder`, when the folder has one (img2img, inpaint, outpaint). */
  vaeEncoder?: LoadedSession;
  /** 4, or 9 for an inpainting UNet (latents ‖ mask ‖ masked-image latents), read from its `sample` input. */
  unetInChannels: 4 | 9;
  vaeScalingFactor: number;
  schedulerConfig: SchedulerConfig;
  schedulerConfigHash: string;
  forceZerosForEmptyPrompt: boolean;
  providers: string[];
  /** TensorRT engines per part and bucket (KILN_PROVIDERS=tensorrt,…); absent: the sessions above run everything. */
  engines?: EngineSessions;
  /** Opens a session where this model's UNet and VAE run (its device thread, or this thread): for its engines. */
  openGpuSession: SessionOpener;
  folder: ModelFolder;
  /** Threads that watermark and encode decoded images (KILN_FINISHING_THREADS); absent: in-line. */
  finishing?: FinishingPool;
  release(): Promise<void>;
}

export interface LoadSdxlModelOptions extends LoadModelFolderOptions {
  /** Finishing threads, shared by the models of the process (default 1; 0 finishes images on the main thread). */
  finishingThreads?: number;
  /**
   * Where the sessions run (KILN_GPU_THREAD): by default the UNet and VAE on the process's device thread for
   * `deviceId` and the text encoders on its encoder thread (both shared with the other model on that GPU); `false`
   * all on this thread.
   */
  gpuThread?: boolean;
}

export async function loadSdxlModel(dir: string, role: ModelRole, options: LoadSdxlModelOptions): Promise<SdxlModel> {
  // Started alongside the sessions so the first ancestral render does not wait for the helper thread.
  void noiseHelper(options.logger);
  const finishing = acquireFinishingPool(options.finishingThreads ?? 1, options.logger);
  const device = options.gpuThread === false ? undefined : acquireDeviceThread(options.deviceId ?? 0, options.logger);
  const encoders =
    options.gpuThread === false ? undefined : acquireDeviceThread(options.deviceId ?? 0, options.logger, "encoders");
  const openGpuSession = device ? onDeviceThread(device.thread, options.logger) : createSession;
  let folder: ModelFolder;
  try {
    folder = await loadModelFolder(dir, role, {
      ...options,
      openGpuSession,
      ...(encoders ? { openEncoderSession: onDeviceThread(encoders.thread, options.logger) } : {}),
    });
  } catch (e) {
    await finishing?.release();
    await device?.release();
    await encoders?.release();
    throw e;
  }
  const schedulerFile = path.join(folder.dir, "scheduler", "scheduler_config.json");
  const schedulerConfig = parseSchedulerConfigText(folder.schedulerConfigJson, schedulerFile);
  const tokenizer = folder.tokenizerDirs.tokenizer
    ? await ClipTokenizer.fromFolder(folder.tokenizerDirs.tokenizer)
    : undefined;
  const tokenizer2 = await ClipTokenizer.fromFolder(folder.tokenizerDirs.tokenizer2);
  const sessions = folder.sessions;
  return {
    name: path.basename(folder.dir),
    dir: folder.dir,
    role,
    isTinyTestModel: folder.isTinyTestModel,
    encoders: { tokenizer, textEncoder: sessions.textEncoder, tokenizer2, textEncoder2: sessions.textEncoder2 },
    unet: sessions.unet,
    unetEmbedWidth: folder.unet.embedWidth,
    timeIdsWidth: folder.unet.timeIdsWidth,
    vaeDecoder: sessions.vaeDecoder,
    vaeEncoder: sessions.vaeEncoder,
    unetInChannels: folder.unet.inChannels,
    vaeScalingFactor: readVaeScalingFactor(folder.dir),
    schedulerConfig,
    schedulerConfigHash: createHash("sha256").update(folder.schedulerConfigJson).digest("hex").slice(0, 16),
    forceZerosForEmptyPrompt:
      folder.index.force_zeros_for_empty_prompt !== false && folder.index.requires_aesthetics_score !== true,
    providers: [
      ...new Set(
        Object.values(sessions)
          .filter(Boolean)
          .map((s) => (s as LoadedSession).provider),
      ),
    ],
    folder,
    openGpuSession,
    finishing: finishing?.pool,
    release: async () => {
      await finishing?.release();
      await folder.release();
      await device?.release();
      await encoders?.release();
    },
  };
}

/**
 * Opens a session on the device thread; if the thread itself cannot start (not a session's fault), on this thread
 * with a warning, so a worker still serves, only without the overlap.
 */
function onDeviceThread(thread: DeviceThread, logger: SessionLogger | undefined): SessionOpener {
  return async (file, options) => {
    try {
      return await thread.open(file, options);
    } catch (e) {
      if (!(e instanceof KilnError) || e.code !== "device_thread_failed") throw e;
      logger?.warn(
        { modelPath: file, error: e.message },
        "the device thread did not start; this session runs on the main thread (GPU calls will hold its event loop)",
      );
      return createSession(file, options);
    }
  };
}

/** `vae_decoder/config.json`'s `scaling_factor` when the export ships it (0.13025 for SDXL). */
function readVaeScalingFactor(dir: string): number {
  const file = path.join(dir, "vae_decoder", "config.json");
  if (!fs.existsSync(file)) return SDXL_VAE_SCALING_FACTOR;
  const value = (JSON.parse(fs.readFileSync(file, "utf8")) as { scaling_factor?: unknown }).scaling_factor;
  return typeof value === "number" && value > 0 ? value : SDXL_VAE_SCALING_FACTOR;
}
