import type { ModelSet } from "@kiln/gpu-worker";
import type * as ort from "onnxruntime-node";

/**
 * Measures time inside `session.run` for every session of a model set by wrapping each session's
 * `run` — an instrument for benchmarks only; the service itself never runs wrapped sessions.
 */
export function timeSessions(models: ModelSet): { totalMs(): number; reset(): void } {
  let total = 0;
  const seen = new Set<ort.InferenceSession>();
  for (const model of Object.values(models)) {
    if (!model) continue;
    const { textEncoder, textEncoder2, unet, vaeDecoder } = model.folder.sessions;
    for (const loaded of [textEncoder, textEncoder2, unet, vaeDecoder]) {
      if (!loaded || seen.has(loaded.session)) continue;
      seen.add(loaded.session);
      const original = loaded.session.run.bind(loaded.session) as (
        ...a: unknown[]
      ) => Promise<ort.InferenceSession.ReturnType>;
      (loaded.session as { run: unknown }).run = async (...args: unknown[]) => {
        const t = performance.now();
        try {
          return await original(...args);
        } finally {
          total += performance.now() - t;
        }
      };
    }
  }
  return { totalMs: () => total, reset: () => void (total = 0) };
}
