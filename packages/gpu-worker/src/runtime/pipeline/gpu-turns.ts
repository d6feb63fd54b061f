/**
 * One stage's turn on the GPU, as the engine sees it: `acquire` before the first UNet call, `release` after
 * the last GPU call (the last UNet step of a hand-over, the VAE decode of a finishing stage). What a stage
 * does before (prompt encoding, reading its input) and after (PNG encoding, storing, recording,
 * acknowledging) runs while another stage holds the GPU.
 */
export interface GpuTurn {
  /** Resolves when this stage may use the GPU; rejects with the signal's reason if it is aborted first. */
  acquire(signal?: AbortSignal): Promise<void>;
  /** Idempotent; a no-op unless `acquire` resolved. */
  release(): void;
}

/**
 * The GPU's turns: a FIFO semaphore with `slots` holders at once (1: one stage on the GPU, in the order the
 * stages asked). A waiter whose signal aborts leaves the line without taking a turn.
 */
export class GpuTurns {
  private holders = 0;
  private readonly line: { grant: () => void }[] = [];

  constructor(private readonly slots = 1) {}

  /** Stages holding a turn now. */
  get busy(): number {
    return this.holders;
  }

  /** Stages waiting in line. */
  get waiting(): number {
    return this.line.length;
  }

  acquire(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (this.holders < this.slots && this.line.length === 0) {
      this.holders++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        grant: () => {
          signal?.removeEventListener("abort", onAbort);
          this.holders++;
          resolve();
        },
      };
      const onAbort = () => {
        const i = this.line.indexOf(waiter);
        if (i >= 0) this.line.splice(i, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.line.push(waiter);
    });
  }

  release(): void {
    this.holders = Math.max(0, this.holders - 1);
    while (this.holders < this.slots && this.line.length > 0) this.line.shift()!.grant();
  }
}
