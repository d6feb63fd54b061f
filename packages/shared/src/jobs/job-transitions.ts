import type { PausePoint } from "../orchestration/submit-outbox.js";
import type { JobCondition, JobPatch, JobStore } from "../ports/job-store.js";
import type { JobError, JobImage, JobProgress, JobRecord, JobStatus, StageTiming } from "../schemas/job.js";
import type { JobEventSink, JobEventType } from "../schemas/job-event.js";
import { tellEvent } from "./event-outbox.js";

/**
 * Kiln's one job state machine: `queued → running → succeeded | failed | canceled | expired`.
 * Each transition is a condition (the states it leaves, and the version read where a concurrent
 * move must win), a patch, and the event it causes once stored. The API, the worker and the sweeps
 * all move jobs through these, so an ended job's retention, TTL and events are the same whoever
 * ends it.
 */
export interface JobTransition {
  condition: JobCondition;
  patch: JobPatch;
  /** Told to the event sink once the transition is stored; none for bookkeeping moves. */
  event?: JobEventType;
}

export type EndStatus = "succeeded" | "failed" | "canceled" | "expired";

/** Where each end status may be reached from. */
const END_FROM: Record<EndStatus, readonly JobStatus[]> = {
  succeeded: ["running"],
  failed: ["queued", "running"],
  canceled: ["queued", "running"],
  expired: ["queued"],
};

/**
 * How long an ended job's record and outputs are kept: `retentionSeconds` where the record has it,
 * else (records written before it existed) what `expiresAt` was set to at submit.
 */
export function retentionSecondsOf(job: JobRecord): number | undefined {
  if (job.retentionSeconds !== undefined) return job.retentionSeconds;
  if (job.expiresAt === undefined) return undefined;
  return Math.max(0, job.expiresAt - Date.parse(job.createdAt) / 1000);
}

/** `expiresAt` for a job that ends at `at`: retention counts from the end, and DynamoDB's TTL reads this attribute. */
export function expiresAtOnEnd(job: JobRecord, at: Date): number | undefined {
  const retention = retentionSecondsOf(job);
  return retention === undefined ? undefined : Math.ceil(at.getTime() / 1000 + retention);
}

/**
 * The end of an ended job's retention (epoch seconds). A job ended through `endJob` stores it as
 * `expiresAt`; older records that ended without moving it count from `finishedAt`.
 */
export function retentionEnd(job: JobRecord): number | undefined {
  if (!["succeeded", "failed", "canceled", "expired"].includes(job.status)) return undefined;
  const retention = retentionSecondsOf(job);
  if (retention === undefined) return undefined;
  const finished = Date.parse(job.finishedAt ?? job.updatedAt) / 1000;
  return Math.ceil(finished + retention);
}

/**
 * Event outbox: a job with somewhere to tell (a webhook, a chat channel) stores the event in the
 * transition's own write, so a crash between the write and the event sink cannot lose it. The patch
 * names only this transition's event; the store adds it to what the record holds at the write (see
 * `JobStore.update`). Built from the caller's copy of the outbox instead, a transition from an old
 * copy brought back events already told (the worker's `succeeded` re-added `started`) and could drop
 * ones stored since.
 */
export function owing(job: JobRecord, event: JobEventType | undefined): JobPatch {
  if (!event || (!job.webhook && !job.chat)) return {};
  return { eventsDue: [event] };
}

/** Any end: the status, when, why (not for success), and the expiry moved to the end. */
function endJob(
  job: JobRecord,
  status: EndStatus,
  at: Date,
  extra: JobPatch,
  condition: JobCondition = {},
): JobTransition {
  return {
    condition: { ...condition, status: END_FROM[status] },
    patch: {
      ...extra,
      status,
      finishedAt: at.toISOString(),
      expiresAt: expiresAtOnEnd(job, at),
      ...owing(job, status),
    },
    event: status,
  };
}

export const CANCELED_ERROR: JobError = {
  code: "canceled",
  message: "The job was canceled at its owner's request.",
};

export const jobTransitions = {
  /** A worker claims the job for a stage (from `queued`, or `running` for a later stage or a retry). */
  start(job: JobRecord, stage: { index: number; kind: StageTiming["kind"] }, worker: string, at: Date): JobTransition {
    const startedAt = at.toISOString();
    const event = job.startedAt ? undefined : "started";
    return {
      condition: { version: job.version, status: ["queued", "running"] },
      patch: {
        status: "running",
        startedAt: job.startedAt ?? startedAt,
        progress: { stage: stage.index, stageKind: stage.kind, step: 0, steps: 0 },
        stageTimings: [
          ...job.stageTimings.filter((t) => t.stage !== stage.index),
          { stage: stage.index, kind: stage.kind, worker, startedAt },
        ],
        ...owing(job, event),
      },
      event,
    };
  },

  /** A drained worker gives a first stage back: nothing of the job is done, so it is queued again. */
  requeue(job: JobRecord): JobTransition {
    return {
      condition: { status: ["running"] },
      patch: { status: "queued", progress: undefined, stageTimings: job.stageTimings.filter((t) => t.stage !== 0) },
    };
  },

  /** The last stage stored its images. */
  succeed(
    job: JobRecord,
    result: { images: JobImage[]; stageTimings: StageTiming[]; progress: JobProgress },
    at: Date,
  ): JobTransition {
    return endJob(job, "succeeded", at, result);
  },

  /** `version` makes the failure lose to any concurrent move (the dead-letter sweep uses it). */
  fail(job: JobRecord, error: JobError, at: Date, options: { version?: number } = {}): JobTransition {
    return endJob(job, "failed", at, { error }, options.version === undefined ? {} : { version: options.version });
  },

  /** `from: ["queued"]` cancels only a job no worker has started (the API asks a running one to stop instead). */
  cancel(job: JobRecord, at: Date, options: { from?: readonly JobStatus[] } = {}): JobTransition {
    const transition = endJob(job, "canceled", at, { cancelRequested: true, error: CANCELED_ERROR });
    if (options.from) transition.condition.status = options.from;
    return transition;
  },

  /** A queued job not started before its deadline. */
  expire(job: JobRecord, at: Date): JobTransition {
    return endJob(
      job,
      "expired",
      at,
      {
        error: {
          code: "deadline_passed",
          message: `The job was not started before its deadline (${job.deadlineAt}); it never ran. Submit it again with a later deadline_seconds.`,
        },
      },
      { version: job.version },
    );
  },

  /** An operator re-runs a dead-lettered job: it is queued again with its retention as at submit. */
  replay(job: JobRecord, at: Date): JobTransition {
    const retention = retentionSecondsOf(job);
    return {
      condition: { version: job.version, status: ["failed"] },
      patch: {
        status: "queued",
        error: undefined,
        finishedAt: undefined,
        updatedAt: at.toISOString(),
        ...(retention === undefined ? {} : { expiresAt: Math.ceil(Date.parse(job.createdAt) / 1000 + retention) }),
      },
    };
  },
};

/** Whether a queued job is past its start-by deadline at `at`. */
export function isOverdue(job: JobRecord, at: Date): boolean {
  return job.status === "queued" && !job.startedAt && !!job.deadlineAt && Date.parse(job.deadlineAt) < at.getTime();
}

/**
 * Stores a transition and tells its event (see `tellEvent`). Returns the stored record, or null
 * when the condition failed (someone else moved the job first: no event). A failed delivery is
 * the sink's to report; the event then stays due on the record for the sweep.
 */
export async function applyTransition(
  jobs: JobStore,
  id: string,
  transition: JobTransition,
  options: {
    events?: JobEventSink;
    at?: Date;
    onEventError?: (e: unknown, type: JobEventType) => void;
    pause?: PausePoint;
  } = {},
): Promise<JobRecord | null> {
  const stored = await jobs.update(id, transition.condition, transition.patch);
  if (stored && transition.event && options.events) {
    await tellEvent(jobs, options.events, transition.event, stored, {
      at: options.at,
      pause: options.pause,
      onError: options.onEventError,
    });
  }
  return stored;
}
