import { isTerminal, type JobRecord, type StageKind, type WorkerBeat, type WorkerRegistry } from "@kiln/shared";

import type { WaitingCode } from "./render-view.js";

/** An idle worker polls at least every long-poll wait (≤ 20 s); silence past this means it is gone or stuck. */
export const IDLE_LIVENESS_MS = 60_000;
/**
 * A busy worker does not poll until its stage ends, but beats every 10 s (the worker's
 * BUSY_BEAT_MS); silence past this means it was killed mid-stage, not that it is busy.
 */
export const BUSY_LIVENESS_MS = 60_000;
/** How far back the registry is asked; older workers count as never seen. */
export const LOOKBACK_MS = 60 * 60_000;

export interface WaitingReason {
  code: WaitingCode;
  message: string;
  stage_kind: StageKind;
}

/**
 * The stage a job is waiting to start, if it is waiting: stage 0 while queued, or the next stage
 * after a hand-over (the job is `running`, its current stage finished, the next not yet claimed).
 */
export function waitingStage(job: JobRecord): { index: number; kind: StageKind } | undefined {
  if (isTerminal(job.status)) return undefined;
  if (job.status === "queued") return { index: 0, kind: job.plan.stages[0]!.kind };
  const current = job.progress?.stage ?? 0;
  const timing = job.stageTimings.find((t) => t.stage === current);
  const next = job.plan.stages[current + 1];
  return timing?.finishedAt && next ? { index: next.index, kind: next.kind } : undefined;
}

const alive = (beat: WorkerBeat, nowMs: number) =>
  nowMs - beat.lastPollAt <= (beat.busy > 0 ? BUSY_LIVENESS_MS : IDLE_LIVENESS_MS);

/**
 * Says why a job waits, telling "no capacity" (no worker for the stage has polled recently, so
 * nothing will happen by itself) from "busy" (workers poll; the job waits its turn).
 * `position` is the number of queued jobs ahead (0 for a hand-over, whose queue is not counted).
 */
export async function waitingReason(
  registry: WorkerRegistry | undefined,
  kind: StageKind,
  position: number,
  nowMs: number,
): Promise<{ reason: WaitingReason; liveWorkers?: number }> {
  const stage = `the ${kind} stage`;
  if (!registry) {
    return {
      reason: {
        code: "unknown",
        stage_kind: kind,
        message: `This deployment does not report worker liveness, so Kiln cannot tell whether a worker for ${stage} is running${position > 0 ? `; ${position} job(s) are ahead` : ""}.`,
      },
    };
  }
  const beats = (await registry.list(nowMs - LOOKBACK_MS)).filter((b) => b.stages.includes(kind));
  const live = beats.filter((b) => alive(b, nowMs));
  if (beats.length === 0) {
    return {
      liveWorkers: 0,
      reason: {
        code: "no_workers",
        stage_kind: kind,
        message: `No worker for ${stage} has polled in the last ${LOOKBACK_MS / 60_000} minutes: there is no capacity, and the job waits until one starts (\`kiln worker\`, or check the fleet's scaling).`,
      },
    };
  }
  if (live.length === 0) {
    const last = beats.reduce((a, b) => (b.lastPollAt > a.lastPollAt ? b : a));
    return {
      liveWorkers: 0,
      reason: {
        code: "workers_silent",
        stage_kind: kind,
        message: `No worker for ${stage} has polled in ${Math.round((nowMs - last.lastPollAt) / 1000)} s (last seen: ${last.workerId}): there is no capacity right now; workers may be stuck, crash-looping or scaled to zero.`,
      },
    };
  }
  const busy = live.filter((b) => b.busy > 0).length;
  const freshest = Math.round((nowMs - Math.max(...live.map((b) => b.lastPollAt))) / 1000);
  if (position > 0 || busy === live.length) {
    return {
      liveWorkers: live.length,
      reason: {
        code: "workers_busy",
        stage_kind: kind,
        message: `${position > 0 ? `${position} job(s) ahead; ` : ""}${live.length} worker(s) for ${stage} are polling, ${busy} busy: the job waits its turn.`,
      },
    };
  }
  return {
    liveWorkers: live.length,
    reason: {
      code: "next_in_line",
      stage_kind: kind,
      message: `Next in line: a worker for ${stage} polled ${freshest} s ago and should claim it shortly.`,
    },
  };
}
