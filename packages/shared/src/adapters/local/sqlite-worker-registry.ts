import type { WorkerBeat, WorkerRegistry } from "../../ports/worker-registry.js";
import type { StageKind } from "../../schemas/job.js";
import type { SqliteDatabase } from "./sqlite-database.js";

interface BeatRow {
  worker_id: string;
  stages: string;
  last_poll_at: number;
  busy: number;
}

/** Beats older than this are deleted now and then, so workers that came and went do not pile up. */
const FORGET_AFTER_MS = 24 * 3600 * 1000;
const SWEEP_INTERVAL_MS = 3600 * 1000;

/** WorkerRegistry on SQLite: one row per worker, shared by every process on the data dir. */
export class SqliteWorkerRegistry implements WorkerRegistry {
  private readonly upsertStmt;
  private readonly listStmt;
  private readonly sweepStmt;
  private lastSweep = Number.NEGATIVE_INFINITY;

  constructor(db: SqliteDatabase) {
    // The MAX keeps a late write from rolling a newer beat back.
    this.upsertStmt = db.prepare<{ id: string; stages: string; at: number; busy: number }>(
      `INSERT INTO worker_beats (worker_id, stages, last_poll_at, busy) VALUES (@id, @stages, @at, @busy)
       ON CONFLICT (worker_id) DO UPDATE SET stages = excluded.stages, last_poll_at = excluded.last_poll_at, busy = excluded.busy
       WHERE excluded.last_poll_at >= worker_beats.last_poll_at`,
    );
    this.listStmt = db.prepare<[number], BeatRow>(
      "SELECT * FROM worker_beats WHERE last_poll_at >= ? ORDER BY last_poll_at DESC",
    );
    this.sweepStmt = db.prepare<[number]>("DELETE FROM worker_beats WHERE last_poll_at < ?");
  }

  async heartbeat(beat: WorkerBeat): Promise<void> {
    this.upsertStmt.run({
      id: beat.workerId,
      stages: JSON.stringify(beat.stages),
      at: beat.lastPollAt,
      busy: beat.busy,
    });
    if (beat.lastPollAt - this.lastSweep >= SWEEP_INTERVAL_MS) {
      this.lastSweep = beat.lastPollAt;
      this.sweepStmt.run(beat.lastPollAt - FORGET_AFTER_MS);
    }
  }

  async list(sinceMs: number): Promise<WorkerBeat[]> {
    return this.listStmt.all(sinceMs).map((row) => ({
      workerId: row.worker_id,
      stages: JSON.parse(row.stages) as StageKind[],
      lastPollAt: row.last_poll_at,
      busy: row.busy,
    }));
  }
}
