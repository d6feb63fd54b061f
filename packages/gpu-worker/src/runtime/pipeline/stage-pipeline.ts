import type { PausePoint } from "@kiln/shared";

import { type GpuTurn, GpuTurns } from "./gpu-turns.js";

export interface PipelineLimits {
  /** Claimed stages that do not hold the GPU yet (received, prompt being encoded, waiting their turn). */
  prefetch: number;
  /** Stages past their GPU work whose images or latents are still being encoded, stored, recorded, acknowledged. */
  finishing: number;
  /** Stages on the GPU at once (`KILN_WORKER_CONCURRENCY`). */
  gpuSlots: number;
}

export const DEFAULT_PIPELINE_LIMITS: PipelineLimits = { prefetch: 1, finishing: 2, gpuSlots: 1 };

type Phase = "waiting" | "gpu" | "finishing";

/** One claimed delivery's place in the pipeline. */
export interface PipelineEntry {
  /** What the delivery passes to the engine as its GPU turn. */
  readonly turn: GpuTurn;
  /** The delivery's drain signal: aborted at the drain's start while it waits, at the grace's end once it runs. */
  readonly signal: AbortSignal;
  /** The delivery ended (acknowledged, released, or left to its visibility timeout). */
  done(): void;
}

interface Entry {
  phase: Phase;
  stop: AbortController;
}

/**
 * The pipelined worker's bookkeeping: while one stage holds the GPU, the next message is already claimed and
 * its prompt encoded (at most `prefetch` such stages), and the stages before it encode, store, record and
 * acknowledge their results (at most `finishing`). Back-pressure: no message is claimed while either bound
 * is reached, so a slow store stops claims instead of piling up finished images in memory.
 *
 * Durability is the delivery's own: a claimed message keeps its visibility extended by the delivery's
 * heartbeat while it waits for the GPU, is acknowledged only once its effects are stored, and comes back
 * after its visibility timeout if the process dies. A drain releases the waiting stages at once.
 */
export class StagePipeline {
  readonly turns: GpuTurns;
  private readonly entries = new Set<Entry>();
  private wakers: (() => void)[] = [];
  private draining = false;

  constructor(
    private readonly limits: PipelineLimits = DEFAULT_PIPELINE_LIMITS,
    /** Fault tests hold a stage at `gpu-wait` when it is claimed ahead and must wait for the GPU. */
    private readonly pause?: PausePoint,
  ) {
    this.turns = new GpuTurns(limits.gpuSlots);
  }

  /** How many entries are in each phase. */
  count(phase: Phase): number {
    let n = 0;
    for (const e of this.entries) if (e.phase === phase) n++;
    return n;
  }

  /** Resolves true once another message may be claimed, false if `signal` aborts first. */
  async room(signal: AbortSignal): Promise<boolean> {
    while (!this.hasRoom()) {
      if (signal.aborted) return false;
      await new Promise<void>((resolve) => {
        const wake = () => {
          signal.removeEventListener("abort", wake);
          resolve();
        };
        this.wakers.push(wake);
        signal.addEventListener("abort", wake, { once: true });
      });
    }
    return !signal.aborted;
  }

  /** Claimed deliveries not yet ended. */
  get inFlight(): number {
    return this.entries.size;
  }

  /**
   * Waits for a change (a stage took or gave back the GPU, or ended — a hand-over has then sent the next
   * stage) or `ms`, whichever comes first. The busy worker polls its queues briefly between these instead
   * of long-polling one of them, so the refine stage its own hand-over just sent is claimed next.
   */
  async changed(ms: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    await new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.wakers.push(wake);
      signal.addEventListener("abort", wake, { once: true });
    });
  }

  /** Waits until every claimed delivery has ended. */
  async idle(): Promise<void> {
    while (this.entries.size > 0) await new Promise<void>((resolve) => this.wakers.push(resolve));
  }

  enter(info: { jobId: string; stage: number; worker: string }): PipelineEntry {
    const entry: Entry = { phase: "waiting", stop: new AbortController() };
    // A message received while the drain began is released like any other waiting one.
    if (this.draining) entry.stop.abort();
    this.entries.add(entry);
    const turns = this.turns;
    const turn: GpuTurn = {
      acquire: async (signal) => {
        if (turns.busy >= this.limits.gpuSlots || turns.waiting > 0) await this.pause?.("gpu-wait", info);
        await turns.acquire(signal);
        if (entry.phase !== "waiting") return;
        entry.phase = "gpu";
        this.wake();
      },
      release: () => {
        if (entry.phase !== "gpu") return;
        entry.phase = "finishing";
        turns.release();
        this.wake();
      },
    };
    return {
      turn,
      signal: entry.stop.signal,
      done: () => {
        turn.release();
        this.entries.delete(entry);
        this.wake();
      },
    };
  }

  /** The drain began: stages not yet on the GPU stop now, and their messages are released for another worker. */
  releaseWaiting(): void {
    this.draining = true;
    for (const e of this.entries) if (e.phase === "waiting") e.stop.abort();
  }

  /** The drain's grace ran out: every stage stops at its next step and is released. */
  stopAll(): void {
    this.draining = true;
    for (const e of this.entries) e.stop.abort();
  }

  private hasRoom(): boolean {
    return this.count("waiting") < this.limits.prefetch && this.count("finishing") < this.limits.finishing;
  }

  private wake(): void {
    const wakers = this.wakers;
    this.wakers = [];
    for (const w of wakers) w();
  }
}
