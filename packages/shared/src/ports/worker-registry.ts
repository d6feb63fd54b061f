import type { StageKind } from "../schemas/job.js";

/**
 * Which workers have polled recently, per stage kind, so a queued job can say why it waits:
 * "no worker for the refine stage has polled in 5 minutes" (no capacity) differs from "3 workers
 * are busy" (just wait) and from a crash-looping worker. Local family: SQLite. AWS family: DynamoDB.
 */
export interface WorkerBeat {
  workerId: string;
  stages: StageKind[];
  /** Epoch ms of the worker's last receive call. */
  lastPollAt: number;
  /** Jobs the worker is running now. */
  busy: number;
}

export interface WorkerRegistry {
  /** Records a worker's poll; cheap enough to call on every receive (adapters may coalesce). */
  heartbeat(beat: WorkerBeat): Promise<void>;
  /** Workers seen since `sinceMs` (epoch ms). */
  list(sinceMs: number): Promise<WorkerBeat[]>;
}
