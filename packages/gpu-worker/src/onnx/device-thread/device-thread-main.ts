import type { MessagePort } from "node:worker_threads";

import { describeError, KilnError } from "@kiln/shared";
import * as ort from "onnxruntime-node";

import type { GpuProfile } from "../../simulated-gpu/gpu-profiles.js";
import { runSimulatedCall, type SimulatedPart } from "../../simulated-gpu/simulated-calls.js";
import { createSession, type LoadedSession } from "../session-factory.js";
import type { FeedMessage, ThreadReply, ThreadRequest, WireTensor } from "./device-thread-protocol.js";

/**
 * The device thread's side: it owns the sessions of one GPU and runs their calls one at a time, in the order they
 * were sent — as the GPU does. onnxruntime-node's `run` is a synchronous native call; here it holds only this
 * thread, so the worker's event loop goes on claiming, encoding prompts and storing results while the GPU works.
 */
export function serveDeviceThread(port: MessagePort): void {
  const sessions = new Map<number, { loaded: LoadedSession; simulated?: Simulated }>();
  /** Feeds pinned by the main side (a stage's conditioning, the same on every step), by id. */
  const pinned = new Map<number, ort.Tensor>();
  const reply = (m: ThreadReply, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
  const logger = {
    info: (obj: object, msg: string) => reply({ type: "log", level: "info", obj, msg }),
    warn: (obj: object, msg: string) => reply({ type: "log", level: "warn", obj, msg }),
  };

  /**
   * Buffers for feeds sent in shared memory, free for reuse by byte length. onnxruntime-node does not take shared
   * memory, and the sender rewrites it after the call: each call copies its feed into one of these (a copy in place
   * of the structured clone, into memory already mapped) and gives it back when the call ends.
   */
  const spare = new Map<number, ArrayBuffer[]>();
  const tensorOf = (f: FeedMessage, borrowed: ArrayBuffer[]): ort.Tensor => {
    if ("ref" in f) {
      const t = pinned.get(f.ref);
      if (!t) throw new Error(`pinned feed ${f.ref} is not held by the device thread`);
      return t;
    }
    let data = f.data;
    if (data.buffer instanceof SharedArrayBuffer) {
      // A pinned feed is kept past the call: its copy is its own.
      const buffer =
        (f.pin === undefined ? spare.get(data.byteLength)?.pop() : undefined) ?? new ArrayBuffer(data.byteLength);
      if (f.pin === undefined) borrowed.push(buffer);
      const copy = new (data.constructor as Float32ArrayConstructor)(buffer);
      copy.set(data as Float32Array);
      data = copy;
    }
    const t = new ort.Tensor(f.type as "float32", data as Float32Array, f.dims);
    if (f.pin !== undefined) pinned.set(f.pin, t);
    return t;
  };

  port.on("message", (m: ThreadRequest) => {
    void handle(m).catch((e: unknown) => {
      reply({ type: "error", id: m.id, error: errorOf(e) });
    });
  });

  async function handle(m: ThreadRequest): Promise<void> {
    switch (m.type) {
      case "open": {
        const loaded = await createSession(m.modelPath, { ...m.options, logger });
        sessions.set(m.session, { loaded });
        reply({
          type: "opened",
          id: m.id,
          provider: loaded.provider,
          inputs: loaded.inputs,
          outputs: loaded.outputs,
          inputNames: [...loaded.session.inputNames],
          outputNames: [...loaded.session.outputNames],
        });
        return;
      }
      case "run": {
        for (const id of m.unpin) pinned.delete(id);
        const feeds: Record<string, ort.Tensor> = {};
        const borrowed: ArrayBuffer[] = [];
        try {
          for (const [name, f] of Object.entries(m.feeds)) feeds[name] = tensorOf(f, borrowed);
          await runOn(m, feeds);
        } finally {
          for (const b of borrowed) {
            const free = spare.get(b.byteLength) ?? [];
            if (free.length < SPARE_KEPT) free.push(b);
            spare.set(b.byteLength, free);
          }
        }
        return;
      }
      case "simulate": {
        sessionOf(m.session).simulated = {
          part: m.part,
          profile: m.profile,
          stats: new Float64Array(m.stats),
        };
        reply({ type: "done", id: m.id });
        return;
      }
      case "release": {
        const entry = sessions.get(m.session);
        sessions.delete(m.session);
        await entry?.loaded.session.release();
        reply({ type: "done", id: m.id });
        return;
      }
    }
  }

  async function runOn(m: Extract<ThreadRequest, { type: "run" }>, feeds: Record<string, ort.Tensor>): Promise<void> {
    const entry = sessionOf(m.session);
    if (entry.simulated) {
      const { part, profile, stats } = entry.simulated;
      const input = feeds[part === "unet" ? "sample" : "latent_sample"]!;
      const { output, name } = runSimulatedCall(part, input.dims, profile, stats);
      reply({ type: "ran", id: m.id, outputs: { [name]: output } }, [output.data.buffer as ArrayBuffer]);
      return;
    }
    const out = m.fetches ? await entry.loaded.session.run(feeds, m.fetches) : await entry.loaded.session.run(feeds);
    const outputs: Record<string, WireTensor> = {};
    const transfer: ArrayBuffer[] = [];
    for (const [name, t] of Object.entries(out)) {
      let data = (t as ort.Tensor).data as Float32Array;
      // Transferred, not copied: the binding gives each output its own buffer (copied when it does not).
      if (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength) data = data.slice();
      outputs[name] = { type: (t as ort.Tensor).type, dims: (t as ort.Tensor).dims, data };
      transfer.push(data.buffer as ArrayBuffer);
    }
    reply({ type: "ran", id: m.id, outputs }, transfer);
  }

  function sessionOf(id: number) {
    const entry = sessions.get(id);
    if (!entry) throw new Error(`session ${id} is not open on the device thread`);
    return entry;
  }
}

/** Spare feed buffers kept per size (calls queued at once × their unpinned feeds). */
const SPARE_KEPT = 4;

interface Simulated {
  part: SimulatedPart;
  profile: GpuProfile;
  stats: Float64Array;
}

function errorOf(e: unknown) {
  return e instanceof KilnError
    ? { name: "KilnError", code: e.code, message: e.message, retryable: e.retryable, details: e.details }
    : {
        name: e instanceof Error ? e.name : "Error",
        message: describeError(e),
        stack: e instanceof Error ? e.stack : undefined,
      };
}
