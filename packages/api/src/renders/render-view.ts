import { z } from "@hono/zod-openapi";
import { type BlobStore, isTerminal, JOB_STATUSES, type JobRecord, outputSize, RENDER_MODES } from "@kiln/shared";

import { retentionEnd } from "./retention.js";

export const WAITING_CODES = ["unknown", "no_workers", "workers_silent", "workers_busy", "next_in_line"] as const;
export type WaitingCode = (typeof WAITING_CODES)[number];

export const waitingReasonSchema = z
  .object({
    code: z.enum(WAITING_CODES),
    message: z.string(),
    stage_kind: z.enum(["base", "refine"]),
  })
  .openapi("WaitingReason", {
    description:
      "Why a job is not running yet. `no_workers` / `workers_silent`: no capacity for that stage (nothing will happen until a worker polls); `workers_busy`: workers are polling and the job waits its turn; `next_in_line`: about to be claimed; `unknown`: this deployment does not report worker liveness.",
  });

export const etaSchema = z
  .object({
    seconds: z.number().openapi({ description: "Estimated seconds until the job finishes." }),
    at: z.string().openapi({ description: "The same as a time." }),
    basis: z.string().openapi({ description: "What the estimate rests on, in words." }),
  })
  .openapi("Eta");

export const jobViewSchema = z
  .object({
    id: z.string(),
    status: z.enum(JOB_STATUSES),
    mode: z.enum(RENDER_MODES),
    created_at: z.string(),
    started_at: z.string().optional(),
    finished_at: z.string().optional(),
    seed: z.number().int(),
    width: z.number().int().openapi({ description: "Width of the output images." }),
    height: z.number().int(),
    n: z.number().int(),
    progress: z.object({
      stage: z.number().int(),
      stage_kind: z.enum(["base", "refine"]),
      step: z.number().int(),
      steps: z.number().int(),
      stages: z.number().int(),
    }),
    queue_position: z
      .number()
      .int()
      .optional()
      .openapi({ description: "Queued jobs ahead of this one (while queued; GET of one render only)." }),
    waiting_reason: waitingReasonSchema.optional(),
    eta: etaSchema
      .nullable()
      .optional()
      .openapi({ description: "null when there are no recent finished stages to estimate from." }),
    stage_timings: z.array(
      z.object({
        stage: z.number().int(),
        kind: z.enum(["base", "refine"]),
        worker: z.string().optional(),
        started_at: z.string(),
        finished_at: z.string().optional(),
        seconds: z.number().optional(),
      }),
    ),
    cancel_requested: z
      .boolean()
      .optional()
      .openapi({ description: "A running job stops at its next denoising step." }),
    deadline_at: z.string().optional(),
    expires_at: z
      .string()
      .optional()
      .openapi({ description: "Once the job has ended: its outputs and record may be deleted after this time." }),
    images: z.array(
      z.object({
        url: z.string(),
        width: z.number().int(),
        height: z.number().int(),
        seed: z.number().int(),
        format: z.string(),
      }),
    ),
    error: z.object({ code: z.string(), message: z.string() }).optional(),
    links: z.object({ self: z.string(), events: z.string(), cancel: z.string().optional() }),
  })
  .openapi("Render");

export type JobView = z.infer<typeof jobViewSchema>;

export interface ViewContext {
  blobs: BlobStore;
  /** Base URL for links, without a trailing slash. */
  base: string;
  urlSeconds: number;
}

export interface JobInsight {
  queuePosition?: number;
  waitingReason?: z.infer<typeof waitingReasonSchema>;
  eta?: z.infer<typeof etaSchema> | null;
}

/** A job record as clients see it: snake_case, image URLs that expire, nothing internal. */
export async function jobView(job: JobRecord, ctx: ViewContext, insight: JobInsight = {}): Promise<JobView> {
  const first = job.plan.stages[0]!;
  const progress = job.progress ?? { stage: 0, stageKind: first.kind, step: 0, steps: 0 };
  const size = outputSize(job.plan);
  const self = `${ctx.base}/v1/renders/${job.id}`;
  const retention = retentionEnd(job);
  return {
    id: job.id,
    status: job.status,
    mode: job.plan.mode,
    created_at: job.createdAt,
    started_at: job.startedAt,
    finished_at: job.finishedAt,
    seed: job.plan.seed,
    width: size.width,
    height: size.height,
    n: job.plan.n,
    progress: {
      stage: progress.stage,
      stage_kind: progress.stageKind,
      step: progress.step,
      steps: progress.steps,
      stages: job.plan.stages.length,
    },
    queue_position: insight.queuePosition,
    waiting_reason: insight.waitingReason,
    eta: insight.eta,
    stage_timings: job.stageTimings.map((t) => ({
      stage: t.stage,
      kind: t.kind,
      worker: t.worker,
      started_at: t.startedAt,
      finished_at: t.finishedAt,
      seconds: t.seconds,
    })),
    cancel_requested: job.cancelRequested,
    deadline_at: job.deadlineAt,
    expires_at: retention === undefined ? undefined : new Date(retention * 1000).toISOString(),
    images: await Promise.all(
      job.images.map(async (img) => ({
        url: await ctx.blobs.downloadUrl(img.key, {
          expiresSeconds: ctx.urlSeconds,
          filename: `${job.id}-${img.index}.${img.format === "jpeg" ? "jpg" : img.format}`,
        }),
        width: img.width,
        height: img.height,
        seed: img.seed,
        format: img.format,
      })),
    ),
    error: job.error,
    links: { self, events: `${self}/events`, cancel: isTerminal(job.status) ? undefined : self },
  };
}
