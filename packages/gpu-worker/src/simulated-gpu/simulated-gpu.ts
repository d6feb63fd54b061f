import * as ort from "onnxruntime-node";

import { RemoteSession } from "../onnx/device-thread/device-thread.js";
import type { ModelSet } from "../runtime/stage-executor.js";
import type { GpuProfile } from "./gpu-profiles.js";
import { GPU_STATS_SLOTS, runSimulatedCall, type SimulatedPart } from "./simulated-calls.js";

/**
 * A simulated GPU for measurement: the worker runs for real — queues, stores, text encoders, the
 * hand-over, image encoding — but each UNet and VAE-decoder `session.run` is replaced by a wait of the
 * profile's time for that call, and returns zeros (UNet) or a fixed noise picture (VAE) of the right shape.
 *
 * The wait blocks the thread the call runs on without using the CPU, as onnxruntime-node's synchronous `run`
 * does during a real GPU call: the device thread (`KILN_GPU_THREAD`, the default), or with the thread off the
 * worker's main thread, whose event loop then stops for every call as it would on a real GPU. So the CPU work
 * the GPU waits for shows as GPU idle time, and what the event loop could not overlap is not flattered.
 *
 * `busySeconds()` is the time the simulated GPU was busy; with wall time it gives the duty cycle.
 * Not for serving: the images are noise.
 */
export interface SimulatedGpu {
  busySeconds(): number;
  /** Seconds from the first call's start to the last call's end since `reset` (0 before any call). */
  spanSeconds(): number;
  reset(): void;
  /** Resolves when the device thread runs its sessions' calls simulated (immediate on the main thread). */
  ready: Promise<void>;
}

export function simulateGpu(models: ModelSet, profile: GpuProfile): SimulatedGpu {
  const shared = new SharedArrayBuffer(GPU_STATS_SLOTS * Float64Array.BYTES_PER_ELEMENT);
  const stats = new Float64Array(shared);
  const seen = new Set<unknown>();
  const pending: Promise<void>[] = [];
  const simulate = (session: { run: unknown }, part: SimulatedPart, input: string) => {
    if (seen.has(session)) return;
    seen.add(session);
    if (session instanceof RemoteSession) {
      pending.push(session.simulate(part, profile, shared));
      return;
    }
    session.run = async (feeds: Record<string, ort.Tensor>) => {
      const { output, name } = runSimulatedCall(part, feeds[input]!.dims, profile, stats);
      return { [name]: new ort.Tensor("float32", output.data, output.dims) };
    };
  };
  for (const model of Object.values(models)) {
    if (!model) continue;
    const { unet, vaeDecoder } = model.folder.sessions;
    simulate(unet.session, "unet", "sample");
    simulate(vaeDecoder.session, "vae_decoder", "latent_sample");
  }
  return {
    busySeconds: () => stats[0]!,
    spanSeconds: () => (stats[1] === 0 ? 0 : (stats[2]! - stats[1]!) / 1000),
    reset: () => stats.fill(0),
    ready: Promise.all(pending).then(() => undefined),
  };
}
