import { Worker } from "node:worker_threads";

import { KilnError } from "@kiln/shared";

import { drawNoise, NoiseSource, type NoiseState } from "./noise.js";

/**
 * Draws ancestral step noise on a helper thread while the UNet runs.
 *
 * onnxruntime-node runs a session synchronously on the main thread (its `run` is a native call inside a
 * `setImmediate`), so nothing on the main thread overlaps a UNet step; yet an ancestral step needs a fresh
 * torch-compatible normal per latent value (~4 ms for 65,536 of them, the largest CPU cost of a step). The
 * helper continues each image's generator from a snapshot, so it draws exactly the values the main thread
 * would have drawn: results do not depend on whether the helper is used.
 *
 * Per step: `request()` before `session.run`, `take()` after it. Completion is signalled through shared
 * memory (`Atomics`), not a message, so `take()` needs no event-loop turn.
 */

/** Long enough for 4 × 256×256×4 normals on a slow core; only a dead helper ever reaches it. */
const TAKE_TIMEOUT_MS = 10_000;
const FAILED = -1;

// The helper runs Kiln's own noise module: through tsx when Kiln runs from its TypeScript sources.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
(async () => {
  if (workerData.tsxApi) (await import(workerData.tsxApi)).register();
  const { NoiseSource, drawNoise } = await import(workerData.noiseModule);
  const streams = new Map();
  parentPort.on("message", (m) => {
    if (m.type === "open") {
      streams.set(m.id, { sources: m.states.map((s) => NoiseSource.restore(s)), out: new Float32Array(m.data), control: new Int32Array(m.control) });
    } else if (m.type === "draw") {
      const s = streams.get(m.id);
      let done = ${FAILED};
      try {
        drawNoise(s.sources, s.out);
        done = m.seq;
      } finally {
        Atomics.store(s.control, 0, done);
        Atomics.notify(s.control, 0);
      }
    } else if (m.type === "initial") {
      let reply;
      try {
        const sources = m.states.map((s) => NoiseSource.restore(s));
        const values = drawNoise(sources, new Float32Array(m.length));
        reply = { type: "initial", id: m.id, values, states: sources.map((s) => s.snapshot()) };
        parentPort.postMessage(reply, [values.buffer]);
      } catch (e) {
        parentPort.postMessage({ type: "initial", id: m.id, error: String((e && e.stack) || e) });
      }
    } else if (m.type === "close") {
      streams.delete(m.id);
    }
  });
  parentPort.postMessage({ type: "ready" });
})().catch((e) => parentPort.postMessage({ type: "failed", error: String((e && e.stack) || e) }));
`;

interface InitialReply {
  type: "initial";
  id: number;
  values?: Float32Array;
  states?: NoiseState[];
  error?: string;
}

class NoiseHelper {
  private nextId = 0;
  private dead = false;
  private readonly initial = new Map<number, { resolve(r: InitialReply): void; reject(e: Error): void }>();

  constructor(private readonly worker: Worker) {
    const die = () => {
      this.dead = true;
      for (const p of this.initial.values()) p.reject(new Error("the noise helper stopped"));
      this.initial.clear();
    };
    worker.on("error", die);
    worker.on("exit", die);
    worker.on("message", (m: InitialReply) => {
      if (m.type !== "initial") return;
      const p = this.initial.get(m.id);
      this.initial.delete(m.id);
      if (this.initial.size === 0) worker.unref();
      if (m.error) p?.reject(new Error(m.error));
      else p?.resolve(m);
    });
  }

  /**
   * Draws a stage's initial noise on the helper and continues `sources` (replaced in place) from where the
   * helper's draw left them, so later draws are those of an in-line draw.
   */
  async drawInitial(sources: NoiseSource[], length: number): Promise<Float32Array> {
    const id = this.nextId++;
    const reply = await new Promise<InitialReply>((resolve, reject) => {
      this.initial.set(id, { resolve, reject });
      // Referenced while awaited: a one-shot render must not exit waiting for it.
      this.worker.ref();
      this.worker.postMessage({ type: "initial", id, states: sources.map((s) => s.snapshot()), length });
    });
    reply.states!.forEach((state, i) => (sources[i] = NoiseSource.restore(state)));
    return reply.values!;
  }

  get alive(): boolean {
    return !this.dead;
  }

  open(sources: readonly NoiseSource[], length: number): NoiseStream {
    const id = this.nextId++;
    const data = new SharedArrayBuffer(length * 4);
    const control = new SharedArrayBuffer(4);
    this.worker.postMessage({ type: "open", id, states: sources.map((s) => s.snapshot()), data, control });
    return new NoiseStream(this.worker, id, new Float32Array(data), new Int32Array(control));
  }
}

/** One stage's stream of step noise: the images' generators continued on the helper. */
export class NoiseStream {
  private seq = 0;
  private pending = false;

  constructor(
    private readonly worker: Worker,
    private readonly id: number,
    private readonly values: Float32Array,
    private readonly control: Int32Array,
  ) {}

  /** Starts drawing the next step's noise (all images, in image order). */
  request(): void {
    if (this.pending) throw new KilnError("noise_helper_misuse", "Step noise was requested twice without being taken.");
    this.seq++;
    this.pending = true;
    this.worker.postMessage({ type: "draw", id: this.id, seq: this.seq });
  }

  /** Waits for the requested noise. The array is reused: it is valid until the next `request()`. */
  take(): Float32Array {
    if (!this.pending) throw new KilnError("noise_helper_misuse", "Step noise was taken without being requested.");
    const deadline = performance.now() + TAKE_TIMEOUT_MS;
    for (;;) {
      const done = Atomics.load(this.control, 0);
      if (done === this.seq) break;
      const left = deadline - performance.now();
      if (done === FAILED || left <= 0 || Atomics.wait(this.control, 0, done, left) === "timed-out") {
        throw new KilnError(
          "noise_helper_failed",
          "The helper thread that draws step noise stopped answering; the stage can be retried.",
          { retryable: true },
        );
      }
    }
    this.pending = false;
    return this.values;
  }

  close(): void {
    this.worker.postMessage({ type: "close", id: this.id });
  }
}

/** The part of a logger the helper uses (pino's and the session factory's both fit). */
interface WarnLogger {
  warn(obj: object, msg: string): void;
}

let starting: Promise<NoiseHelper | undefined> | undefined;

/**
 * The process's noise helper, started on first use (model loading starts it, so renders do not wait).
 * Resolves to undefined when it cannot start; callers then draw on the main thread.
 */
export function noiseHelper(logger?: WarnLogger): Promise<NoiseHelper | undefined> {
  starting ??= startHelper(logger);
  return starting.then((helper) => {
    if (helper?.alive) return helper;
    if (helper) starting = undefined; // died since: the next call starts a new one
    return undefined;
  });
}

function startHelper(logger?: WarnLogger): Promise<NoiseHelper | undefined> {
  const noiseModule = import.meta.resolve("./noise.js");
  const tsxApi = noiseModule.endsWith(".ts") ? import.meta.resolve("tsx/esm/api") : undefined;
  return new Promise((resolve) => {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { noiseModule, tsxApi }, name: "kiln-noise" });
    const fail = (error: string) => {
      logger?.warn(
        { error },
        "the step-noise helper thread did not start; ancestral steps draw their noise on the main thread",
      );
      void worker.terminate();
      resolve(undefined);
    };
    worker.once("error", (e) => fail(String(e)));
    worker.on("message", (m: { type: string; error?: string }) => {
      if (m.type === "failed") fail(m.error ?? "unknown error");
      if (m.type !== "ready") return;
      // Idle, it must not keep the process alive; takes wait on shared memory, never on its messages.
      worker.unref();
      resolve(new NoiseHelper(worker));
    });
  });
}

/**
 * A first stage's initial latents noise (`length` values, image by image), drawn on the helper thread so the
 * ~5–25 ms of a 1024² draw does not hold the event loop while another stage's UNet step is due; in-line when
 * the helper is unavailable. Same values either way; `sources` end where an in-line draw leaves them.
 */
export async function drawInitialNoise(
  sources: NoiseSource[],
  length: number,
  logger?: WarnLogger,
): Promise<Float32Array> {
  const helper = await noiseHelper(logger);
  if (helper) {
    try {
      return await helper.drawInitial(sources, length);
    } catch (e) {
      logger?.warn(
        { error: String(e) },
        "the noise helper failed to draw initial noise; drawing it on the main thread",
      );
    }
  }
  return drawNoise(sources, new Float32Array(length));
}
