import { Worker } from "node:worker_threads";

import { KilnError } from "@kiln/shared";

import type { EncodedImage } from "../image-files.js";
import type { FinishRequest } from "./finish-image.js";

/**
 * Finishing threads: the CPU work after a VAE decode (non-finite check, watermark, rounding, composite, image
 * file) on `node:worker_threads`, off the event loop that drives the GPU calls.
 *
 * Why: that work is ~0.25 s of synchronous JS per 1024² image. On the worker's main thread it holds the event loop
 * while the next stage's UNet step is due (with onnxruntime-node's `run`, itself synchronous on the main thread, it
 * cannot overlap a GPU call at all). On a thread it overlaps the next stage's denoising, and its garbage is
 * collected in the thread's own heap.
 *
 * Bounded: a fixed number of threads, each taking one image at a time from a FIFO; the stage pipeline's
 * `finishing` limit bounds how many stages wait here. A request's error comes back as the same `KilnError`; a
 * thread that dies fails the requests it held as retryable (`finishing_thread_failed`) and is replaced on the
 * next request. Threads are referenced only while they hold work, so an idle pool never keeps the process alive.
 */

// The thread runs Kiln's own finishing module: through tsx when Kiln runs from its TypeScript sources.
const THREAD_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
(async () => {
  // Below the threads that feed the GPU: on Linux a thread's nice value is its own (no privilege needed to lower it).
  try { require("node:os").setPriority(0, workerData.nice); } catch {}
  if (workerData.tsxApi) (await import(workerData.tsxApi)).register();
  const { finishImage } = await import(workerData.module);
  parentPort.on("message", async (m) => {
    try {
      const image = await finishImage(m.request);
      // An exact-size copy: small encoder outputs may sit in Buffer's shared pool, which must not be transferred.
      const bytes = new Uint8Array(image.bytes);
      parentPort.postMessage({ id: m.id, image: { ...image, bytes } }, [bytes.buffer]);
    } catch (e) {
      parentPort.postMessage({
        id: m.id,
        error: { name: e && e.name, code: e && e.code, message: String((e && e.message) || e), retryable: !!(e && e.retryable), stack: e && e.stack },
      });
    }
  });
  parentPort.postMessage({ type: "ready" });
})().catch((e) => parentPort.postMessage({ type: "failed", error: String((e && e.stack) || e) }));
`;

/**
 * The finishing threads' nice value. Their work is behind the GPU (the image of a stage already off it); the event
 * loop and the device thread, which feed the GPU its next call, are not. Where cores are few, the scheduler then
 * runs those first, and finishing takes the cycles left over.
 */
export const BEHIND_THE_GPU_NICE = 10;

/** Staging buffers kept per image size. */
const STAGING_KEPT = 4;

interface Pending {
  resolve(image: EncodedImage): void;
  reject(error: unknown): void;
}

interface ThreadError {
  name?: string;
  code?: string;
  message: string;
  retryable: boolean;
  stack?: string;
}

/** The part of a logger the pool uses (pino's and the session factory's both fit). */
interface WarnLogger {
  warn(obj: object, msg: string): void;
}

class FinishingThread {
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  dead = false;

  constructor(
    readonly worker: Worker,
    private readonly onDeath: (thread: FinishingThread, reason: string) => void,
  ) {
    worker.on("message", (m: { id?: number; image?: EncodedImage; error?: ThreadError }) => {
      if (m.id === undefined) return;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) worker.unref();
      if (m.error) p.reject(threadError(m.error));
      else p.resolve(m.image!);
    });
    worker.on("error", (e) => this.die(String(e)));
    worker.on("exit", (code) => this.die(`exit code ${code}`));
  }

  get load(): number {
    return this.pending.size;
  }

  /** Throws (DataCloneError) before anything is sent when a buffer in `transfer` cannot be transferred. */
  finish(request: FinishRequest, transfer: ArrayBuffer[] = []): Promise<EncodedImage> {
    if (this.dead) return Promise.reject(threadFailed("it had stopped"));
    const id = this.nextId++;
    this.worker.postMessage({ id, request }, transfer);
    return new Promise<EncodedImage>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
    });
  }

  private die(reason: string): void {
    if (this.dead) return;
    this.dead = true;
    for (const p of this.pending.values()) p.reject(threadFailed(reason));
    this.pending.clear();
    this.onDeath(this, reason);
  }
}

const threadFailed = (reason: string) =>
  new KilnError(
    "finishing_thread_failed",
    `The thread that watermarks and encodes the images stopped (${reason}); the stage can be retried.`,
    { retryable: true },
  );

function threadError(e: ThreadError): Error {
  if (e.name === "KilnError" && e.code) return new KilnError(e.code, e.message, { retryable: e.retryable });
  const error = new Error(e.message);
  if (e.stack) error.stack = e.stack;
  return error;
}

export interface FinishingPoolOptions {
  threads: number;
  logger?: WarnLogger;
  /** The module whose `finishImage` the threads run (tests point it at a wrapper with fault hooks). */
  module?: string;
}

export class FinishingPool {
  private readonly threads: (Promise<FinishingThread | undefined> | undefined)[];
  private closed = false;
  private readonly module: string;
  private started: FinishingThread[] = [];

  constructor(private readonly options: FinishingPoolOptions) {
    this.threads = Array.from({ length: Math.max(1, options.threads) }, () => undefined);
    this.module = options.module ?? import.meta.resolve("./finish-image.js");
  }

  /** Images the threads hold (sent, not yet answered). */
  get pending(): number {
    return this.started.reduce((sum, t) => sum + (t.dead ? 0 : t.load), 0);
  }

  /** Starts the threads now, so the first image does not wait for them. */
  warm(): void {
    for (let i = 0; i < this.threads.length; i++) void this.thread(i);
  }

  /**
   * Finishes one image on the least loaded thread. Resolves to undefined when no thread can run (it did not
   * start, or the pool is closed): the caller then finishes in-line.
   */
  async finish(request: FinishRequest, options: { owned?: boolean } = {}): Promise<EncodedImage | undefined> {
    if (this.closed) return undefined;
    const live = (await Promise.all(this.threads.map((_, i) => this.thread(i)))).filter(
      (t): t is FinishingThread => !!t && !t.dead,
    );
    if (live.length === 0 || this.closed) return undefined;
    const thread = live.reduce((a, b) => (b.load < a.load ? b : a));
    const { pixels: given } = request;
    // `owned`: the caller gives the pixels away. A whole buffer of its own is transferred, not copied: the copy of a
    // 1024² image (12 MiB) held the event loop for milliseconds while the next stage's UNet step was due.
    if (
      options.owned &&
      given.buffer instanceof ArrayBuffer &&
      given.byteOffset === 0 &&
      given.byteLength === given.buffer.byteLength
    ) {
      const sent = (() => {
        try {
          return thread.finish(request, [given.buffer]);
        } catch {
          return undefined; // not transferable (memory the binding owns): copied below
        }
      })();
      if (sent) return await sent;
    }
    // Else a copy the thread owns (the decoder's output may be shared or reused), in reused shared memory: a fresh
    // 12 MiB buffer per 1024² image costs the main thread page faults and zero-filling, a copy only a memcpy.
    const staging = this.stagingFor(request.pixels.byteLength);
    const pixels = new Float32Array(staging);
    pixels.set(request.pixels);
    try {
      return await thread.finish({ ...request, pixels });
    } finally {
      this.returnStaging(staging);
    }
  }

  /** Stops the threads; requests they held fail retryably. */
  async close(): Promise<void> {
    this.closed = true;
    const threads = await Promise.all(this.threads.map((t) => t));
    await Promise.all(threads.map((t) => t?.worker.terminate()));
  }

  private readonly staging = new Map<number, SharedArrayBuffer[]>();

  private stagingFor(bytes: number): SharedArrayBuffer {
    return this.staging.get(bytes)?.pop() ?? new SharedArrayBuffer(bytes);
  }

  /** Kept for reuse up to a few per size (the stages in finishing × their images); more are left to the GC. */
  private returnStaging(buffer: SharedArrayBuffer): void {
    const free = this.staging.get(buffer.byteLength) ?? [];
    if (free.length < STAGING_KEPT) free.push(buffer);
    this.staging.set(buffer.byteLength, free);
  }

  private thread(i: number): Promise<FinishingThread | undefined> {
    this.threads[i] ??= this.start(i);
    return this.threads[i];
  }

  private start(i: number): Promise<FinishingThread | undefined> {
    const module = this.module;
    const tsxApi = module.endsWith(".ts") ? import.meta.resolve("tsx/esm/api") : undefined;
    return new Promise((resolve) => {
      const worker = new Worker(THREAD_SOURCE, {
        eval: true,
        workerData: { module, tsxApi, nice: BEHIND_THE_GPU_NICE },
        name: "kiln-finishing",
      });
      let ready = false;
      const fail = (error: string) => {
        if (ready) return;
        ready = true;
        this.options.logger?.warn(
          { error },
          "a finishing thread did not start; images are finished on the main thread",
        );
        void worker.terminate();
        resolve(undefined);
      };
      worker.once("error", (e) => fail(String(e)));
      worker.once("exit", (code) => fail(`exit code ${code}`));
      const onMessage = (m: { type?: string; error?: string }) => {
        if (m.type === "failed") fail(m.error ?? "unknown error");
        if (m.type !== "ready" || ready) return;
        ready = true;
        worker.off("message", onMessage);
        worker.unref();
        const thread = new FinishingThread(worker, (dead, reason) => {
          // Replaced on the next request; the requests it held have failed retryably.
          if (!this.closed)
            this.options.logger?.warn({ error: reason }, "a finishing thread stopped; starting another");
          this.threads[i] = undefined;
          this.started = this.started.filter((t) => t !== dead);
        });
        this.started.push(thread);
        resolve(thread);
      };
      worker.on("message", onMessage);
    });
  }
}

let shared: { pool: FinishingPool; users: number } | undefined;

/**
 * The process's finishing pool, shared by the models loaded in it (the first caller's thread count wins) and
 * closed when the last of them releases it. `threads` 0: no pool, images are finished in-line.
 */
export function acquireFinishingPool(
  threads: number,
  logger?: WarnLogger,
): { pool: FinishingPool; release(): Promise<void> } | undefined {
  if (threads <= 0) return undefined;
  if (!shared) {
    shared = { pool: new FinishingPool({ threads, logger }), users: 0 };
    shared.pool.warm();
  }
  const entry = shared;
  entry.users++;
  let released = false;
  return {
    pool: entry.pool,
    async release() {
      if (released) return;
      released = true;
      if (--entry.users > 0) return;
      if (shared === entry) shared = undefined;
      await entry.pool.close();
    },
  };
}
