import { describeError } from "@kiln/shared";

import type { SdxlModel } from "../engine/sdxl-model.js";
import {
  createSession,
  type ExecutionProviderName,
  type LoadedSession,
  type SessionLogger,
  type SessionOpener,
} from "../onnx/session-factory.js";
import { batchRange, MAX_IMAGES_PER_REQUEST } from "./build-plan.js";
import { type Bucket, bucketLabel, type EnginePart, type EngineTarget, modelIdOf, partHash } from "./engine-key.js";
import { type EngineState, type EngineStore, lookupEngine } from "./engine-store.js";
import { probeTarget } from "./toolchain.js";

/**
 * A worker's TensorRT engines, per model part and bucket. At boot each slot looks up the engine
 * built for this GPU in the store, fetches it and opens its EPContext wrapper on the TensorRT
 * provider; a slot whose engine is missing, incompatible, still building, or refused by TensorRT
 * falls back to the model's own session for that part (already open on CUDA, else CPU), with one
 * log line saying why. `/healthz` reports each slot and the provider it really runs on.
 */

export interface EngineSlotHealth {
  part: EnginePart;
  bucket: string;
  state: EngineState;
  /** The provider this slot's session runs on: tensorrt with its engine, else the fallback's. */
  provider: ExecutionProviderName;
  reason?: string;
  engine?: string;
}

export interface LoadEngineSessionsOptions {
  modelDir: string;
  parts: readonly EnginePart[];
  buckets: readonly Bucket[];
  store: EngineStore;
  /** Engines are copied here (the instance disk) before they are opened. */
  cacheDir: string;
  /** This machine's target, or why it could not be determined (no GPU, no TensorRT runtime). */
  target: EngineTarget | Error;
  /** The model's own session per part: the fallback, open on the providers after TensorRT. */
  fallback: (part: EnginePart) => LoadedSession;
  /** Providers tried for an engine; default ["tensorrt"]. Tests pass a name the binding rejects. */
  engineProviders?: readonly ExecutionProviderName[];
  deviceId?: number;
  logger?: SessionLogger;
  /** Opens an engine's session: the model's device thread (`SdxlModel.openGpuSession`); default this thread. */
  open?: SessionOpener;
}

interface Slot {
  health: EngineSlotHealth;
  session: LoadedSession;
  own: boolean;
}

export class EngineSessions {
  private constructor(private readonly slots: Map<string, Slot>) {}

  static async load(options: LoadEngineSessionsOptions): Promise<EngineSessions> {
    const { logger } = options;
    const slots = new Map<string, Slot>();
    const modelId = await modelIdOf(options.modelDir);
    const manifest = options.target instanceof Error ? null : await options.store.manifest(modelId);
    for (const part of options.parts) {
      const hash = await partHash(`${options.modelDir}/${part}`);
      const bucketFree = part === "text_encoder" || part === "text_encoder_2";
      for (const bucket of bucketFree ? [null] : options.buckets) {
        const label = bucketLabel(bucket);
        const fallback = options.fallback(part);
        const fallBack = (state: EngineState, reason: string, engine?: string): void => {
          logger?.warn(
            { part, bucket: label, engineState: state, reason, provider: fallback.provider, engine },
            `TensorRT engine for ${part} ${label} ${state}: ${reason}; running ${part} ${label} on ${fallback.provider} with the model's own session`,
          );
          slots.set(`${part}/${label}`, {
            health: { part, bucket: label, state, provider: fallback.provider, reason, ...(engine ? { engine } : {}) },
            session: fallback,
            own: false,
          });
        };
        if (options.target instanceof Error) {
          fallBack("missing", options.target.message);
          continue;
        }
        const found = lookupEngine(manifest, { modelId, part, partHash: hash, bucket, target: options.target });
        if (found.state !== "ready") {
          fallBack(found.state, found.reason);
          continue;
        }
        let wrapper: string;
        try {
          wrapper = await options.store.fetch(found.entry, options.cacheDir);
        } catch (e) {
          fallBack("incompatible", `could not fetch it: ${describeError(e)}`, found.entry.id);
          continue;
        }
        try {
          // ORT's TensorRT provider advises no graph optimization on EPContext models: there is
          // nothing for ORT to optimise in one node, and the engine is already optimised.
          const session = await (options.open ?? createSession)(wrapper, {
            providers: options.engineProviders ?? ["tensorrt"],
            deviceId: options.deviceId,
            graphOptimizationLevel: "disabled",
          });
          logger?.info(
            { part, bucket: label, engine: found.entry.id, provider: session.provider },
            `TensorRT engine for ${part} ${label} loaded on ${session.provider}`,
          );
          slots.set(`${part}/${label}`, {
            health: { part, bucket: label, state: "ready", provider: session.provider, engine: found.entry.id },
            session,
            own: true,
          });
        } catch (e) {
          fallBack("incompatible", `the engine would not load: ${describeError(e)}`, found.entry.id);
        }
      }
    }
    return new EngineSessions(slots);
  }

  /**
   * The session for one part at one size and batch: the slot's engine session when the size is a
   * bucket and the batch is inside the engine's profile, else undefined (the caller uses the
   * model's own session). Text encoders ignore the size.
   */
  sessionFor(part: EnginePart, width: number, height: number, batch: number): LoadedSession | undefined {
    const bucketFree = part === "text_encoder" || part === "text_encoder_2";
    const slot = this.slots.get(`${part}/${bucketFree ? "any" : bucketLabel({ width, height })}`);
    if (!slot) return undefined;
    const range = batchRange(part, MAX_IMAGES_PER_REQUEST);
    if (batch < range.min || batch > range.max) return undefined;
    return slot.session;
  }

  health(): EngineSlotHealth[] {
    return [...this.slots.values()].map((s) => s.health);
  }

  async release(): Promise<void> {
    for (const slot of this.slots.values()) if (slot.own) await slot.session.session.release();
  }
}

/** The model parts a worker runs on engines: the UNet and the VAE decoder carry nearly all the time of a render. */
export const WORKER_ENGINE_PARTS: readonly EnginePart[] = ["unet", "vae_decoder"];

export interface AttachEnginesOptions {
  store: EngineStore;
  cacheDir: string;
  buckets: readonly Bucket[];
  deviceId?: number;
  logger?: SessionLogger;
  /** This machine's target; probed (nvidia-smi, libnvinfer, libcudart) when absent. */
  target?: EngineTarget | Error;
  /** Default ["tensorrt"]; tests pass a name the binding rejects. */
  engineProviders?: readonly ExecutionProviderName[];
}

/**
 * Opens the engines of every loaded model (base, refiner) and attaches them, so the pipeline picks
 * the engine of a request's bucket. Returns the health callback for `/healthz`.
 */
export async function attachEngineSessions(
  models: { base?: SdxlModel; refiner?: SdxlModel },
  options: AttachEnginesOptions,
): Promise<() => Record<string, EngineSlotHealth[]>> {
  let target = options.target;
  if (!target) {
    try {
      target = await probeTarget(options.deviceId ?? 0);
    } catch (e) {
      target = e instanceof Error ? e : new Error(String(e));
    }
  }
  for (const model of Object.values(models)) {
    if (!model) continue;
    const m = model;
    m.engines = await EngineSessions.load({
      modelDir: m.dir,
      parts: WORKER_ENGINE_PARTS,
      buckets: options.buckets,
      store: options.store,
      cacheDir: options.cacheDir,
      target,
      fallback: (part) => (part === "unet" ? m.unet : m.vaeDecoder),
      ...(options.engineProviders ? { engineProviders: options.engineProviders } : {}),
      deviceId: options.deviceId,
      logger: options.logger,
      open: m.openGpuSession,
    });
  }
  return () =>
    Object.fromEntries(
      Object.entries(models)
        .filter(([, m]) => m?.engines)
        .map(([role, m]) => [role, m!.engines!.health()]),
    );
}
