import type { StageKind, WorkerRegistry } from "@kiln/shared";

import type { BestEffortWrites } from "./best-effort-writes.js";

/**
 * Tells the WorkerRegistry that this worker polls, so a queued job can say "no capacity" apart
 * from "busy". Called after every receive but coalesced: a write goes out when the number of
 * running stages changes (a worker that claims a long stage must say it is busy, or it would look
 * silent) or when the last write is `minIntervalMs` old; at most one write is in flight.
 */
export class PollBeat {
  private lastWrite = Number.NEGATIVE_INFINITY;
  private lastBusy = -1;
  private inFlight = false;

  constructor(
    private readonly registry: WorkerRegistry | undefined,
    private readonly worker: { workerId: string; stages: StageKind[] },
    private readonly writes: BestEffortWrites,
    private readonly minIntervalMs = 5_000,
  ) {}

  record(busy: number, at = Date.now()): void {
    const registry = this.registry;
    if (!registry || this.inFlight) return;
    if (busy === this.lastBusy && at - this.lastWrite < this.minIntervalMs) return;
    this.inFlight = true;
    void this.writes
      .run("record this worker's poll in the worker registry", () =>
        registry.heartbeat({ workerId: this.worker.workerId, stages: this.worker.stages, lastPollAt: at, busy }),
      )
      .then((written) => {
        if (written) {
          this.lastWrite = at;
          this.lastBusy = busy;
        }
        this.inFlight = false;
      });
  }
}
