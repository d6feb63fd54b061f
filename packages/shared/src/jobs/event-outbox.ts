import type { PausePoint } from "../orchestration/submit-outbox.js";
import type { JobStore } from "../ports/job-store.js";
import type { JobRecord } from "../schemas/job.js";
import type { JobEventSink, JobEventType } from "../schemas/job-event.js";

/**
 * The event outbox, the same on both families: a transition of a job that has somewhere to tell
 * (webhook, chat) stores its event in `eventsDue` in the transition's own write — one SQLite row
 * update, one DynamoDB UpdateItem — so the two commit together. The event is then told to the
 * sink (which queues the webhook) and cleared. A crash in between leaves it due: the next delivery
 * of the job's stage message, or the sweep below, tells it again. Events are at least once;
 * receivers drop repeats by `webhook-id`, which is derived from the job and the event.
 */

/** How long an event may stay due before the sweep re-tells it (its teller may still be at work). */
export const EVENTS_DUE_GRACE_MS = 30_000;

/**
 * Tells one event of a stored transition; clears it from `eventsDue` once the sink has it.
 * Returns whether the sink took it. Never throws: a failure is `onError`'s, and the event stays due.
 */
export async function tellEvent(
  jobs: JobStore,
  events: JobEventSink,
  type: JobEventType,
  job: JobRecord,
  options: { at?: Date; pause?: PausePoint; onError?: (e: unknown, type: JobEventType) => void } = {},
): Promise<boolean> {
  try {
    // Fault tests hold (and kill) a process here: the transition is stored, its event not yet told.
    await options.pause?.("event:before-tell", { jobId: job.id, event: type });
    await events({ type, job, at: (options.at ?? new Date()).toISOString() });
    if (job.eventsDue?.includes(type)) await jobs.clearEventsDue(job.id, [type]);
    return true;
  } catch (e) {
    options.onError?.(e, type);
    return false;
  }
}

/** When an event happened, as the record tells it. */
function eventTime(job: JobRecord, type: JobEventType): string {
  if (type === "started") return job.startedAt ?? job.updatedAt;
  return job.finishedAt ?? job.updatedAt;
}

/** Tells every event still due on the record (a crash left them untold); returns the ones told. */
export async function tellDueEvents(
  jobs: JobStore,
  events: JobEventSink,
  job: JobRecord,
  onError?: (e: unknown, type: JobEventType) => void,
): Promise<JobEventType[]> {
  const told: JobEventType[] = [];
  for (const type of job.eventsDue ?? []) {
    try {
      await events({ type, job, at: eventTime(job, type) });
      told.push(type);
    } catch (e) {
      onError?.(e, type);
    }
  }
  if (told.length) await jobs.clearEventsDue(job.id, told);
  return told;
}

/**
 * The event outbox's sweep: jobs whose events stayed due longer than `graceMs` get them told again.
 * Runs beside the dead-letter sweep (workers, and the AWS cron Lambda).
 */
export async function redeliverDueEvents(
  jobs: JobStore,
  events: JobEventSink,
  options: { now?: Date; graceMs?: number; limit?: number; onError?: (e: unknown, type: JobEventType) => void } = {},
): Promise<string[]> {
  const now = options.now ?? new Date();
  const before = new Date(now.getTime() - (options.graceMs ?? EVENTS_DUE_GRACE_MS)).toISOString();
  const ids: string[] = [];
  for (const job of await jobs.listEventsDue(before, options.limit ?? 100)) {
    if ((await tellDueEvents(jobs, events, job, options.onError)).length) ids.push(job.id);
  }
  return ids;
}
