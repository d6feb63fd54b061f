import { describeError, KilnError } from "@kiln/shared";
import * as ort from "onnxruntime-node";

export type ExecutionProviderName = "tensorrt" | "cuda" | "cpu";

/** One input or output of a session. `dtype` and `shape` are absent when the binding exposes names only. */
export interface IoSpec {
  name: string;
  dtype?: ort.Tensor.Type;
  /** Numbers are fixed sizes; strings are symbolic dimensions (e.g. "batch_size"). */
  shape?: readonly (number | string)[];
}

/** The part of a pino logger this module uses. */
export interface SessionLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/**
 * What the engine calls on a session: an `ort.InferenceSession` on this thread, or a `RemoteSession` whose
 * `run` goes to the device thread (onnx/device-thread/), where the synchronous native call cannot hold the
 * event loop.
 */
export interface RunnableSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: ort.InferenceSession.FeedsType): Promise<ort.InferenceSession.ReturnType>;
  run(feeds: ort.InferenceSession.FeedsType, fetches: readonly string[]): Promise<ort.InferenceSession.ReturnType>;
  release(): Promise<void>;
}

/** Opens a session: `createSession` on this thread, or a device thread's `open`. */
export type SessionOpener = (modelPath: string, options: CreateSessionOptions) => Promise<LoadedSession>;

export interface LoadedSession {
  session: RunnableSession;
  /** The provider at the head of the chain that loaded; nodes it cannot run go to the providers after it. */
  provider: ExecutionProviderName;
  modelPath: string;
  inputs: IoSpec[];
  outputs: IoSpec[];
}

export interface CreateSessionOptions {
  /** Tried in order, e.g. ['tensorrt', 'cuda', 'cpu']. */
  providers: readonly ExecutionProviderName[];
  deviceId?: number;
  logger?: SessionLogger;
  intraOpThreads?: number;
  /** Default "all". EPContext wrappers (TensorRT engines) are opened with "disabled", as ORT advises. */
  graphOptimizationLevel?: ort.InferenceSession.SessionOptions["graphOptimizationLevel"];
}

function providerConfig(name: ExecutionProviderName, deviceId: number): ort.InferenceSession.ExecutionProviderConfig {
  return name === "cpu" ? "cpu" : { name, deviceId };
}

function readIo(metadata: unknown, names: readonly string[]): IoSpec[] {
  if (!Array.isArray(metadata)) return names.map((name) => ({ name }));
  return (metadata as ort.InferenceSession.ValueMetadata[]).map((m) =>
    m.isTensor ? { name: m.name, dtype: m.type, shape: [...m.shape] } : { name: m.name },
  );
}

/**
 * Opens an ONNX Runtime session on the first provider that loads. onnxruntime-node does not fall
 * back by itself — a provider whose libraries are missing makes session creation throw — so each
 * attempt registers the chain from that provider on (nodes the head cannot run are placed on the
 * later ones), and a failed attempt is logged and followed by the next.
 */
export async function createSession(modelPath: string, options: CreateSessionOptions): Promise<LoadedSession> {
  const { providers, logger } = options;
  const deviceId = options.deviceId ?? 0;
  const failures: { provider: ExecutionProviderName; error: string }[] = [];

  for (let i = 0; i < providers.length; i++) {
    const provider = providers[i];
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: providers.slice(i).map((p) => providerConfig(p, deviceId)),
      graphOptimizationLevel: options.graphOptimizationLevel ?? "all",
      ...(options.intraOpThreads !== undefined ? { intraOpNumThreads: options.intraOpThreads } : {}),
    };
    const started = performance.now();
    try {
      const session = await ort.InferenceSession.create(modelPath, sessionOptions);
      const loaded: LoadedSession = {
        session,
        provider,
        modelPath,
        inputs: readIo((session as { inputMetadata?: unknown }).inputMetadata, session.inputNames),
        outputs: readIo((session as { outputMetadata?: unknown }).outputMetadata, session.outputNames),
      };
      logger?.info(
        { modelPath, provider, deviceId, fellBackFrom: failures, loadMs: Math.round(performance.now() - started) },
        failures.length > 0
          ? `ONNX session loaded on ${provider} after ${failures.map((f) => f.provider).join(", ")} failed`
          : `ONNX session loaded on ${provider}`,
      );
      return loaded;
    } catch (e) {
      const error = describeError(e);
      failures.push({ provider, error });
      const next = providers[i + 1];
      logger?.warn(
        { modelPath, provider, deviceId, error },
        next
          ? `ONNX session could not use ${provider}; falling back to ${next}`
          : `ONNX session could not use ${provider}, the last provider listed`,
      );
    }
  }

  const tried = failures.map((f) => `${f.provider}: ${f.error}`).join("; ");
  throw new KilnError(
    "model_session_failed",
    providers.length === 0
      ? `No execution provider was listed for ${modelPath}; set KILN_PROVIDERS (e.g. "cuda,cpu").`
      : `Could not open ${modelPath} with any execution provider (${tried}). Check that the file is a complete ONNX model and that the provider libraries are installed, or add "cpu" to KILN_PROVIDERS.`,
    { details: { modelPath, failures }, retryable: false },
  );
}

/** Runs the session once so the first real request does not pay for lazy allocations; returns the time taken in ms. */
export async function warmup(session: RunnableSession, feeds: ort.InferenceSession.FeedsType): Promise<number> {
  const started = performance.now();
  await session.run(feeds);
  return performance.now() - started;
}
