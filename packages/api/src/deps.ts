import type { JobEventSink, KeyRecord, PausePoint, Ports, RenderLimits } from "@kiln/shared";

import type { BatchOptions } from "./batches/routes.js";
import type { ChatDeps } from "./channels/core/chat-deps.js";
import type { ImageInputLimits } from "./inputs/image-inputs.js";
import type { EffectiveLimits, WebhookSubmitPolicy } from "./renders/render-admission.js";

/** What the API needs from its host: the ports of one family and a few settings. Web-standard only. */
export interface ApiDeps {
  ports: Ports;
  /** Base URL for links; empty means "the origin the request arrived at" (Lambda without KILN_PUBLIC_URL). */
  publicUrl: string;
  limits: RenderLimits;
  maxBodyBytes: number;
  /** Input pictures (img2img, inpaint, outpaint): per-file bytes, pixels, URL fetch time; defaults when absent. */
  imageInputs?: ImageInputLimits;
  downloadUrlSeconds: number;
  retentionHours: number;
  /** Serves `/v1/files/*` from the BlobStore with signed URLs (local family). */
  serveFiles?: { verify(key: string, expires: string, sig: string): Promise<boolean> };
  /** Reports whether the API can accept renders (ports reachable, config loaded). */
  ready?: () => Promise<boolean>;
  /** Limits of keys whose record does not set them (config `KILN_RATE_LIMIT_RPS` …); absent: none. */
  keyLimits?: EffectiveLimits;
  /** Where webhooks may point; absent: public addresses only, and no DNS check at submit. */
  webhooks?: WebhookSubmitPolicy;
  /** Told when the API itself moves a job (cancel of a queued job, deadline expiry); webhooks listen here. */
  events?: JobEventSink;
  /** Discord and Slack bots (channels/); absent or without secrets, their routes answer 404. */
  chat?: ChatDeps;
  /** Timing knobs; the defaults suit a long-running Node server. */
  timing?: Partial<ApiTiming>;
  /** Batches: estimate rate, lane window, contact-sheet maker (Node: sharp) and chat notifier. */
  batches?: BatchOptions;
  now?: () => Date;
  /** Crash-safe submit: fault tests' pause points (KILN_TEST_HOOKS=1); absent in production. */
  pause?: PausePoint;
  log?: (level: "info" | "warn" | "error", obj: Record<string, unknown>, msg: string) => void;
}

export interface ApiTiming {
  /** How often waits and event streams re-read the job (no pub/sub, so it works on both families). */
  pollMs: number;
  /**
   * `Prefer: wait=N` waits at most this long (≤ 60) and says so in Preference-Applied: behind API
   * Gateway, whose integrations time out after 30 s, the Lambda entry lowers it.
   */
  preferWaitCapSeconds: number;
  /** Longest wait of `POST /v1/images/generations` before it cancels the job and answers 504. */
  syncWaitSeconds: number;
  /** An event stream ends after this long; clients reconnect with Last-Event-ID (Lambda: under its timeout). */
  eventStreamSeconds: number;
  /** SSE comment lines this often keep proxies from closing an idle stream. */
  heartbeatMs: number;
  /** Progress events at most this often per stream (the last step of a stage always goes out). */
  progressEveryMs: number;
}

export const DEFAULT_TIMING: ApiTiming = {
  pollMs: 250,
  preferWaitCapSeconds: 60,
  syncWaitSeconds: 300,
  eventStreamSeconds: 900,
  heartbeatMs: 15_000,
  progressEveryMs: 500,
};

export type ApiEnv = {
  Variables: {
    key: KeyRecord;
    requestId: string;
    /** Crash-safe submit: the job id an Idempotency-Key stands for, so every retry finds the same job. */
    submitJobId?: string;
  };
};
