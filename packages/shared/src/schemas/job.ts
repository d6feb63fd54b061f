import type { RenderPlan } from "../plan/render-plan.js";
import type { ChatOrigin } from "./chat-origin.js";
import type { JobEventType } from "./job-event.js";

export const JOB_STATUSES = ["queued", "running", "succeeded", "failed", "canceled", "expired"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const TERMINAL_STATUSES: readonly JobStatus[] = ["succeeded", "failed", "canceled", "expired"];
export const isTerminal = (s: JobStatus): boolean => TERMINAL_STATUSES.includes(s);

export type StageKind = "base" | "refine";

export interface JobProgress {
  /** Index of the stage running or last run. */
  stage: number;
  stageKind: StageKind;
  /** Denoising steps done in this stage. */
  step: number;
  /** Denoising steps this stage runs. */
  steps: number;
}

export interface JobImage {
  index: number;
  key: string;
  width: number;
  height: number;
  seed: number;
  format: "png" | "webp" | "jpeg";
  bytes: number;
}

export interface JobError {
  /** Machine-readable, stable (see docs/errors.md). */
  code: string;
  /** A sentence for a person: what happened and what to do. */
  message: string;
}

export interface StageTiming {
  stage: number;
  kind: StageKind;
  /** Worker that ran the stage. */
  worker?: string;
  startedAt: string;
  finishedAt?: string;
  seconds?: number;
}

export interface JobRecord {
  id: string;
  ownerKeyId: string;
  status: JobStatus;
  /** Bumped by every conditional update. */
  version: number;
  createdAt: string;
  updatedAt: string;
  startedAt?: string;
  finishedAt?: string;
  plan: RenderPlan;
  progress?: JobProgress;
  images: JobImage[];
  error?: JobError;
  cancelRequested?: boolean;
  /** Times a stage found its input latents missing or corrupt and re-ran the producing stage. */
  recoveries?: number;
  stageTimings: StageTiming[];
  /** When stage 0 was known to be on its queue (the submit's outbox mark); absent: the reconciler may re-send it. */
  enqueuedAt?: string;
  /** Not started by then → `expired` (ISO time). */
  deadlineAt?: string;
  /** How long the record and outputs are kept after the job ends (set at submit). */
  retentionSeconds?: number;
  /** Epoch seconds after which the record and its outputs may be deleted (DynamoDB TTL); moved to the end when it ends. */
  expiresAt?: number;
  /** Where this job's events are POSTed (signed with the owner key's webhook secret). */
  webhook?: WebhookTarget;
  /** Chat channels: where a Discord or Slack render reports progress and delivers its images. */
  chat?: ChatOrigin;
  /**
   * Event outbox: events stored with their transition (in the same write) and not yet handed to
   * the event sink; cleared once told, re-told by the next delivery or the sweep after a crash.
   */
  eventsDue?: JobEventType[];
}

export interface WebhookTarget {
  url: string;
  /** Absent: every event but `progress`. */
  events?: JobEventType[];
}
