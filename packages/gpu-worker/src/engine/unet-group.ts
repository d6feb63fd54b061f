import type { Logger } from "@kiln/shared/node";

import type { GpuTurn } from "../runtime/pipeline/gpu-turns.js";
import {
  type DenoiseMember,
  type DenoiseTimes,
  denoiseTogether,
  splitBySession,
  unetBatchSignature,
} from "./unet-batch.js";

/**
 * How long a group's prepared members wait for the rest before they denoise without them: far above a stage's
 * preparation (prompt encoding, input read: ~0.1 s, ~1 s on a loaded machine), far below a store retry's 30 s.
 */
export const GROUP_WAIT_MS = 10_000;

/** One stage's place in a `UnetGroup`: what its `runPipelineStage` gets as `hooks.group` and `hooks.gpu`. */
export interface UnetGroupSeat {
  /**
   * Joins the group's denoising with this stage's prepared member; resolves with its own times once its slice
   * of the schedule is done, or rejects with its own error (its cancel, its failure) or the batch's.
   */
  denoise(member: DenoiseMember): Promise<DenoiseTimes>;
  /** This stage will not denoise (it ended before, or failed preparing): the group no longer waits for it. */
  leave(): void;
  /**
   * The stage's share of the group's GPU turn: `release` (after its last GPU call) gives the turn back once
   * every seat has released or left. `acquire` takes the group's one turn.
   */
  readonly gpu: GpuTurn;
}

interface Arrival {
  member: DenoiseMember;
  resolve(times: DenoiseTimes): void;
  reject(reason: unknown): void;
}

/**
 * Stages of several jobs claimed together (KILN_WORKER_BATCH), denoised as one UNet batch per step. Each seat's
 * stage runs its own `runPipelineStage`: steps 1–5 (prompts, noise, latents) and step 7 (hand-over, or decode and
 * image encoding) stay per job; step 6 waits here until every seat has arrived or left, so no stage is held
 * longer than its group-mates' preparation. Members then run in batches of equal `unetBatchSignature` (one
 * after another within the group's one GPU turn), so a job that cannot share a batch still runs, alone.
 */
export class UnetGroup {
  private waitingFor: number;
  private readonly arrivals: Arrival[] = [];
  private started = false;
  private unreleased: number;
  private acquired?: Promise<void>;
  private readonly seats: UnetGroupSeat[] = [];
  private lateTimer?: ReturnType<typeof setTimeout>;

  constructor(
    size: number,
    /** The group's GPU turn (the pipelined worker's); absent: the group runs as soon as it is complete. */
    private readonly turn?: GpuTurn,
    private readonly logger?: Logger,
    /**
     * How long the members that have arrived wait for the others (ms): a stage slow to prepare (its input read
     * retried through a store outage) must not hold its group-mates for as long. It denoises alone when it comes.
     */
    private readonly waitMs = GROUP_WAIT_MS,
  ) {
    this.waitingFor = size;
    this.unreleased = size;
    for (let i = 0; i < size; i++) this.seats.push(this.makeSeat());
  }

  /** The i-th stage's seat. */
  seat(i: number): UnetGroupSeat {
    const seat = this.seats[i];
    if (!seat) throw new RangeError(`a group of ${this.seats.length} has no seat ${i}`);
    return seat;
  }

  private makeSeat(): UnetGroupSeat {
    let state: "seated" | "joined" | "left" = "seated";
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      if (--this.unreleased === 0) this.turn?.release();
    };
    const leave = () => {
      if (state !== "seated") return;
      state = "left";
      this.waitingFor--;
      release();
      this.maybeStart();
    };
    return {
      gpu: { acquire: (signal) => this.acquire(signal), release },
      leave,
      denoise: (member) => {
        if (state !== "seated") return Promise.reject(new Error("a group seat denoises once"));
        state = "joined";
        // Late: the group started without it (see `waitMs`). It runs alone, within the group's GPU turn.
        if (this.started) return this.denoiseAlone(member);
        return new Promise<DenoiseTimes>((resolve, reject) => {
          const arrival: Arrival = { member, resolve, reject };
          // Canceled or drained while the group waits for its other members: out at once.
          // (It has arrived, so the group no longer waits for it either way.)
          const onAbort = () => {
            if (this.started) return;
            this.arrivals.splice(this.arrivals.indexOf(arrival), 1);
            reject(member.signal!.reason);
          };
          member.signal?.addEventListener("abort", onAbort, { once: true });
          arrival.resolve = (t) => (member.signal?.removeEventListener("abort", onAbort), resolve(t));
          arrival.reject = (e) => (member.signal?.removeEventListener("abort", onAbort), reject(e));
          this.arrivals.push(arrival);
          this.waitingFor--;
          if (member.signal?.aborted) onAbort();
          this.maybeStart();
          if (!this.started && !this.lateTimer) {
            this.lateTimer = setTimeout(() => {
              if (this.started || this.arrivals.length === 0) return;
              this.logger?.warn(
                { waitingFor: this.waitingFor, waitMs: this.waitMs },
                "stages claimed together: starting the UNet batch without the ones not yet prepared; they run alone",
              );
              this.started = true;
              void this.run();
            }, this.waitMs);
          }
        });
      },
    };
  }

  private async denoiseAlone(member: DenoiseMember): Promise<DenoiseTimes> {
    const [result] = await denoiseTogether([member], {
      gpu: { acquire: (signal) => this.acquire(signal), release: () => undefined },
      signal: member.signal,
      logger: this.logger,
    });
    if (result!.status === "rejected") throw result!.reason;
    return result!.value;
  }

  /** The group's one turn, taken once for all its batches (a failed take is tried again by the next batch). */
  private acquire(signal?: AbortSignal): Promise<void> {
    if (!this.turn) return Promise.resolve();
    this.acquired ??= this.turn.acquire(signal).catch((e) => {
      this.acquired = undefined;
      throw e;
    });
    return this.acquired;
  }

  private maybeStart(): void {
    if (this.started || this.waitingFor > 0) return;
    clearTimeout(this.lateTimer);
    this.started = true;
    void this.run();
  }

  private async run(): Promise<void> {
    const bySignature = new Map<string, DenoiseMember[]>();
    for (const { member } of this.arrivals) {
      const key = unetBatchSignature(member);
      bySignature.set(key, [...(bySignature.get(key) ?? []), member]);
    }
    const batches = [...bySignature.values()].flatMap((members) => splitBySession(members));
    if (batches.length > 1)
      this.logger?.info(
        { batches: batches.map((b) => b.length) },
        "stages claimed together need different UNet batches; running them one batch after another",
      );
    const arrivalOf = new Map(this.arrivals.map((a) => [a.member, a]));
    for (const members of batches) {
      const settled = await denoiseTogether(members, {
        gpu: { acquire: (signal) => this.acquire(signal), release: () => undefined },
        signal: allAborted(members.map((m) => m.signal)),
        logger: this.logger,
      }).catch((e: unknown) =>
        members.map((): PromiseSettledResult<DenoiseTimes> => ({ status: "rejected", reason: e })),
      );
      settled.forEach((r, k) => {
        const arrival = arrivalOf.get(members[k]!)!;
        if (r.status === "fulfilled") arrival.resolve(r.value);
        else arrival.reject(r.reason);
      });
    }
  }
}

/** Aborts once every one of `signals` has (a batch waits for the GPU while any of its members still wants it). */
function allAborted(signals: (AbortSignal | undefined)[]): AbortSignal | undefined {
  if (signals.some((s) => !s)) return undefined;
  const controller = new AbortController();
  const check = () => {
    if (signals.every((s) => s!.aborted)) controller.abort(signals[0]!.reason);
  };
  for (const s of signals) s!.addEventListener("abort", check, { once: true });
  check();
  return controller.signal;
}
