import { describeError, isTransientError } from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";

/**
 * Writes a worker can do without for a while — step progress, visibility extensions, registry
 * beats — go through one gate per process. After one fails transiently the gate stays shut for
 * `pauseMs`, so a store that is down costs one failure per pause, not one per step. That matters
 * most on the local family: better-sqlite3 is synchronous, so each write against a lock another
 * process holds blocks the whole worker for SQLite's busy timeout (5 s) before failing.
 */
export class BestEffortWrites {
  private shutUntil = 0;

  constructor(
    private readonly logger: Logger,
    private readonly pauseMs = 5_000,
  ) {}

  get open(): boolean {
    return Date.now() >= this.shutUntil;
  }

  /** Runs `op` unless the gate is shut; never rejects. Resolves true if the write happened. */
  async run(what: string, op: () => Promise<unknown>, log: Logger = this.logger): Promise<boolean> {
    if (!this.open) return false;
    try {
      await op();
      return true;
    } catch (e) {
      if (isTransientError(e)) this.shutUntil = Date.now() + this.pauseMs;
      log.warn(
        { err: describeError(e), pauseMs: isTransientError(e) ? this.pauseMs : 0 },
        `could not ${what}${isTransientError(e) ? "; pausing such writes" : ""}`,
      );
      return false;
    }
  }
}
