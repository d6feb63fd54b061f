import { Worker } from "node:worker_threads";

import { KilnError } from "@kiln/shared";
import * as ort from "onnxruntime-node";

import { BEHIND_THE_GPU_NICE } from "../../engine/finishing/finishing-threads.js";
import type { GpuProfile } from "../../simulated-gpu/gpu-profiles.js";
import type { SimulatedPart } from "../../simulated-gpu/simulated-calls.js";
import type { CreateSessionOptions, LoadedSession, RunnableSession, SessionLogger } from "../session-factory.js";
import type { FeedMessage, ThreadErrorShape, ThreadReply, ThreadRequest } from "./device-thread-protocol.js";

/**
 * The device thread: one `node:worker_threads` thread per GPU that owns the UNet and VAE sessions and runs their
 * calls in order (`KILN_GPU_THREAD`, on by default).
 *
 * Why: onnxruntime-node's `session.run` is a synchronous native call (its backend calls the binding inside a
 * `setImmediate`), so on the worker's main thread a 45 ms UNet step holds the event loop for 45 ms, and nothing the
 * pipelined worker does between GPU calls — claiming the next message, encoding its prompt, storing and recording the
 * last result — can overlap the GPU's work. On this thread only the thread waits; the main thread sends the next
 * call while the current one runs, so the GPU finds it queued.
 *
 * What crosses: each call's feeds (structured-cloned: the sample, ~0.5 MiB at 1024²) and its outputs (transferred,
 * not copied). A stage's conditioning, the same on every step, is sent once: `pinFeed` marks a tensor whose data
 * does not change, and the thread keeps it until the main side lets go of it.
 *
 * Faults: a call's error comes back as the same `KilnError`. A thread that dies fails the calls it held as
 * retryable (`device_thread_failed`); the next call starts a new thread and reopens every session on it.
 */

const THREAD_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
(async () => {
  if (workerData.nice) try { require("node:os").setPriority(0, workerData.nice); } catch {}
  if (workerData.tsxApi) (await import(workerData.tsxApi)).register();
  const { serveDeviceThread } = await import(workerData.module);
  serveDeviceThread(parentPort);
  parentPort.postMessage({ type: "ready" });
})().catch((e) => parentPort.postMessage({ type: "failed", error: String((e && e.stack) || e) }));
`;

/** Pinned feeds a thread keeps at most; past this, feeds are sent whole (a safety bound, not a working limit). */
const MAX_PINNED = 64;

const pinnable = new WeakSet<ort.Tensor>();

/** Marks a feed whose data will not change (a stage's conditioning): a device thread receives it once. */
export function pinFeed<T extends ort.Tensor>(tensor: T): T {
  pinnable.add(tensor);
  return tensor;
}

interface Pending {
  resolve(reply: ThreadReply): void;
  reject(error: unknown): void;
}

interface OpenSpec {
  modelPath: string;
  options: Omit<CreateSessionOptions, "logger">;
  simulate?: { part: SimulatedPart; profile: GpuProfile; stats: SharedArrayBuffer };
}

interface Running {
  worker: Worker;
  /** Sessions opened on this thread (a new thread reopens them). */
  open: Set<number>;
  pins: WeakMap<ort.Tensor, number>;
  pinned: number;
}

export class DeviceThread {
  private running: Promise<Running> | undefined;
  /** The thread `running` resolved to, while it lives. */
  private current: Running | undefined;
  private readonly pending = new Map<number, Pending>();
  private readonly specs = new Map<number, OpenSpec>();
  private nextId = 0;
  private nextSession = 0;
  private nextPin = 0;
  private closed = false;
  private unpin: number[] = [];
  /** A pinned feed the main side has let go of is dropped by the thread with the next call. */
  private readonly released = new FinalizationRegistry<{ pin: number; thread: Running }>(({ pin, thread }) => {
    if (thread !== this.current) return;
    this.unpin.push(pin);
    thread.pinned--;
  });

  constructor(
    private readonly options: {
      name?: string;
      logger?: SessionLogger;
      /** The module whose `serveDeviceThread` the thread runs (tests point it at one with fault hooks). */
      module?: string;
      /** The thread's nice value on Linux (0: as the process). */
      nice?: number;
    } = {},
  ) {}

  /** Opens a session on the device thread: the same checks and provider fall-back as `createSession`. */
  async open(modelPath: string, options: CreateSessionOptions): Promise<LoadedSession> {
    // Only what `createSession` reads: callers pass wider option objects (functions do not cross threads).
    const { providers, deviceId, intraOpThreads, graphOptimizationLevel } = options;
    const plain = { providers, deviceId, intraOpThreads, graphOptimizationLevel };
    const session = this.nextSession++;
    const spec: OpenSpec = {
      modelPath,
      options: Object.fromEntries(Object.entries(plain).filter(([, v]) => v !== undefined)) as typeof plain,
    };
    const thread = await this.thread();
    const reply = await this.openOn(thread, session, spec);
    this.specs.set(session, spec);
    return {
      session: new RemoteSession(this, session, reply.inputNames, reply.outputNames),
      provider: reply.provider,
      modelPath,
      inputs: reply.inputs,
      outputs: reply.outputs,
    };
  }

  /** Stops the thread; calls it held fail retryably. */
  async close(): Promise<void> {
    this.closed = true;
    const running = await this.running?.catch(() => undefined);
    this.running = undefined;
    this.current = undefined;
    await running?.worker.terminate();
  }

  /** @internal */
  async simulate(session: number, simulate: NonNullable<OpenSpec["simulate"]>): Promise<void> {
    const spec = this.specs.get(session);
    if (!spec) throw new Error(`session ${session} is not open`);
    spec.simulate = simulate;
    await this.request(await this.thread(), { type: "simulate", id: 0, session, ...simulate });
  }

  /** @internal */
  async run(
    session: number,
    feeds: ort.InferenceSession.FeedsType,
    fetches: readonly string[] | undefined,
  ): Promise<ort.InferenceSession.ReturnType> {
    const thread = await this.thread();
    const wire: Record<string, FeedMessage> = {};
    for (const [name, value] of Object.entries(feeds)) {
      const t = value as ort.Tensor;
      const pin = thread.pins.get(t);
      if (pin !== undefined) {
        wire[name] = { ref: pin };
        continue;
      }
      const whole = { type: t.type, dims: t.dims, data: t.data as ArrayBufferView };
      if (pinnable.has(t) && thread.pinned < MAX_PINNED) {
        const id = this.nextPin++;
        thread.pins.set(t, id);
        thread.pinned++;
        this.released.register(t, { pin: id, thread });
        wire[name] = { ...whole, pin: id };
      } else wire[name] = whole;
    }
    const unpin = this.unpin;
    this.unpin = [];
    const reply = await this.request(thread, {
      type: "run",
      id: 0,
      session,
      feeds: wire,
      unpin,
      ...(fetches ? { fetches: [...fetches] } : {}),
    });
    if (reply.type !== "ran") throw new Error(`device thread answered ${reply.type} to a run`);
    const out: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(reply.outputs))
      out[name] = new ort.Tensor(t.type as "float32", t.data as Float32Array, t.dims);
    return out;
  }

  /** @internal */
  async release(session: number): Promise<void> {
    this.specs.delete(session);
    const running = await this.running?.catch(() => undefined);
    if (!running || !running.open.has(session)) return;
    running.open.delete(session);
    await this.request(running, { type: "release", id: 0, session });
  }

  private async openOn(thread: Running, session: number, spec: OpenSpec) {
    const reply = await this.request(thread, {
      type: "open",
      id: 0,
      session,
      modelPath: spec.modelPath,
      options: spec.options,
    });
    if (reply.type !== "opened") throw new Error(`device thread answered ${reply.type} to an open`);
    thread.open.add(session);
    if (spec.simulate) await this.request(thread, { type: "simulate", id: 0, session, ...spec.simulate });
    return reply;
  }

  private request(thread: Running, message: ThreadRequest): Promise<ThreadReply> {
    const id = this.nextId++;
    return new Promise<ThreadReply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      thread.worker.ref();
      thread.worker.postMessage({ ...message, id });
    });
  }

  /** The running thread; after a death, a new one with every session reopened. */
  private thread(): Promise<Running> {
    if (this.closed) return Promise.reject(threadFailed("it was closed"));
    if (!this.running) {
      const started = this.start();
      this.running = started.then(async (thread) => {
        this.current = thread;
        this.unpin = [];
        for (const [session, spec] of this.specs) await this.openOn(thread, session, spec);
        return thread;
      });
      // A thread that could not start is tried again on the next call.
      this.running.catch(() => (this.running = undefined));
    }
    return this.running;
  }

  private start(): Promise<Running> {
    const module = this.options.module ?? import.meta.resolve("./device-thread-main.js");
    const tsxApi = module.endsWith(".ts") ? import.meta.resolve("tsx/esm/api") : undefined;
    return new Promise((resolve, reject) => {
      const worker = new Worker(THREAD_SOURCE, {
        eval: true,
        workerData: { module, tsxApi, nice: this.options.nice ?? 0 },
        name: this.options.name ?? "kiln-device",
      });
      const thread: Running = { worker, open: new Set(), pins: new WeakMap(), pinned: 0 };
      let ready = false;
      let dead = false;
      const die = (reason: string) => {
        if (dead) return;
        dead = true;
        if (!ready) {
          ready = true;
          reject(threadFailed(reason));
        }
        if (this.current === thread) {
          this.current = undefined;
          this.running = undefined;
        }
        const error = threadFailed(reason);
        for (const p of this.pending.values()) p.reject(error);
        this.pending.clear();
        if (!this.closed)
          this.options.logger?.warn({ error: reason }, "the device thread stopped; the next call starts another");
      };
      worker.on("message", (m: ThreadReply) => {
        if (m.type === "ready") {
          ready = true;
          worker.unref();
          resolve(thread);
          return;
        }
        if (m.type === "failed") return die(m.error);
        if (m.type === "log") {
          this.options.logger?.[m.level](m.obj, m.msg);
          return;
        }
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (this.pending.size === 0) worker.unref();
        if (m.type === "error") p.reject(threadError(m.error));
        else p.resolve(m);
      });
      worker.on("error", (e) => die(String(e)));
      worker.on("exit", (code) => die(`exit code ${code}`));
    });
  }
}

/** True for a session whose calls run on a device thread (its feeds may be in shared memory; see `FloatFeed`). */
export function isRemote(session: RunnableSession): boolean {
  return session instanceof RemoteSession;
}

/** A session open on a device thread: `run` sends the call there and resolves with its outputs. */
export class RemoteSession implements RunnableSession {
  constructor(
    private readonly thread: DeviceThread,
    private readonly id: number,
    readonly inputNames: readonly string[],
    readonly outputNames: readonly string[],
  ) {}

  run(feeds: ort.InferenceSession.FeedsType, fetches?: readonly string[]): Promise<ort.InferenceSession.ReturnType> {
    return this.thread.run(this.id, feeds, fetches);
  }

  release(): Promise<void> {
    return this.thread.release(this.id);
  }

  /** Makes this session's calls simulated GPU calls on its thread (see simulated-gpu/). */
  simulate(part: SimulatedPart, profile: GpuProfile, stats: SharedArrayBuffer): Promise<void> {
    return this.thread.simulate(this.id, { part, profile, stats });
  }
}

const threadFailed = (reason: string) =>
  new KilnError(
    "device_thread_failed",
    `The thread that runs the GPU sessions stopped (${reason}); the stage can be retried.`,
    { retryable: true },
  );

function threadError(e: ThreadErrorShape): Error {
  if (e.name === "KilnError" && e.code)
    return new KilnError(e.code, e.message, {
      retryable: e.retryable ?? false,
      ...(e.details ? { details: e.details } : {}),
    });
  const error = new Error(e.message);
  if (e.stack) error.stack = e.stack;
  return error;
}

const shared = new Map<string, { thread: DeviceThread; users: number }>();

/**
 * The process's device thread for one GPU (`deviceId`), shared by the models loaded on it (base and refiner take
 * turns on one GPU) and closed when the last of them releases it. `role` "encoders": the thread the text encoders
 * run on, beside it (prompt encoding is short GPU work that need not wait behind UNet steps, nor hold the event loop).
 */
export function acquireDeviceThread(
  deviceId: number,
  logger?: SessionLogger,
  role: "unet" | "encoders" = "unet",
): { thread: DeviceThread; release(): Promise<void> } {
  const key = `${role}-${deviceId}`;
  let entry = shared.get(key);
  if (!entry) {
    const name = role === "unet" ? `kiln-device-${deviceId}` : `kiln-encoders-${deviceId}`;
    // Prompt encoding is ahead of the GPU (the next stage's, pipelined): it yields the CPU to the threads feeding it.
    const nice = role === "unet" ? 0 : BEHIND_THE_GPU_NICE;
    entry = { thread: new DeviceThread({ name, logger, nice }), users: 0 };
    shared.set(key, entry);
  }
  const held = entry;
  held.users++;
  let released = false;
  return {
    thread: held.thread,
    release: async () => {
      if (released) return;
      released = true;
      if (--held.users > 0) return;
      shared.delete(key);
      await held.thread.close();
    },
  };
}
