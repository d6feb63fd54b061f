import type { GpuProfile } from "../../simulated-gpu/gpu-profiles.js";
import type { SimulatedPart } from "../../simulated-gpu/simulated-calls.js";
import type { CreateSessionOptions, ExecutionProviderName, IoSpec } from "../session-factory.js";

/** The messages between the worker's main thread and its device thread (structured-cloned by `postMessage`). */

export interface WireTensor {
  type: string;
  dims: readonly number[];
  data: ArrayBufferView;
}

/** A feed sent whole (`pin`: the thread keeps it under that id), or a reference to one the thread keeps. */
export type FeedMessage = (WireTensor & { pin?: number }) | { ref: number };

export type ThreadRequest =
  | { type: "open"; id: number; session: number; modelPath: string; options: Omit<CreateSessionOptions, "logger"> }
  | {
      type: "run";
      id: number;
      session: number;
      feeds: Record<string, FeedMessage>;
      fetches?: string[];
      /** Pinned feeds the main side no longer refers to. */
      unpin: number[];
    }
  | {
      type: "simulate";
      id: number;
      session: number;
      part: SimulatedPart;
      profile: GpuProfile;
      stats: SharedArrayBuffer;
    }
  | { type: "release"; id: number; session: number };

export interface ThreadErrorShape {
  name: string;
  message: string;
  code?: string;
  retryable?: boolean;
  details?: Record<string, unknown>;
  stack?: string;
}

export type ThreadReply =
  | {
      type: "opened";
      id: number;
      provider: ExecutionProviderName;
      inputs: IoSpec[];
      outputs: IoSpec[];
      inputNames: string[];
      outputNames: string[];
    }
  | { type: "ran"; id: number; outputs: Record<string, WireTensor> }
  | { type: "done"; id: number }
  | { type: "error"; id: number; error: ThreadErrorShape }
  | { type: "log"; level: "info" | "warn"; obj: object; msg: string }
  | { type: "ready" }
  | { type: "failed"; error: string };
