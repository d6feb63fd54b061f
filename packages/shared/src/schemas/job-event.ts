import type { JobRecord } from "./job.js";

export const JOB_EVENT_TYPES = ["started", "progress", "succeeded", "failed", "canceled", "expired"] as const;
export type JobEventType = (typeof JOB_EVENT_TYPES)[number];

/** Something that happened to a job, after its transition was stored. Webhooks and logs consume these. */
export interface JobEvent {
  type: JobEventType;
  job: JobRecord;
  /** ISO time of the event. */
  at: string;
}

/** Receives job events. Must not throw into its caller: a failed delivery is the sink's to retry. */
export type JobEventSink = (event: JobEvent) => Promise<void>;
