import { z } from "@hono/zod-openapi";
import { JOB_STATUSES, RENDER_MODES, type BlobStore, type JobRecord } from "@kiln/shared";

export const jobViewSchema = z
  .object({
    id: z.string(),
    status: z.enum(JOB_STATUSES),
    mode: z.enum(RENDER_MODES),
    created_at: z.string(),
    started_at: z.string().optional(),
    finished_at: z.string().optional(),
    seed: z.number().int(),
    progress: z.object({ stage: z.number().int(), stage_kind: z.enum(["base", "refine"]), step: z.number().int(), steps: z.number().int(), stages: z.number().int() }),
    images: z.array(z.object({ url: z.string(), width: z.number().int(), height: z.number().int(), seed: z.number().int(), format: z.string() })),
    error: z.object({ code: z.string(), message: z.string() }).optional(),
    links: z.object({ self: z.string(), events: z.string().optional() }),
  })
  .openapi("Render");

export type JobView = z.infer<typeof jobViewSchema>;

/** A job record as clients see it: snake_case, image URLs that expire, nothing internal. */
export async function jobView(job: JobRecord, blobs: BlobStore, publicUrl: string, urlSeconds: number): Promise<JobView> {
  const first = job.plan.stages[0]!;
  const progress = job.progress ?? { stage: 0, stageKind: first.kind, step: 0, steps: 0 };
  return {
    id: job.id,
    status: job.status,
    mode: job.plan.mode,
    created_at: job.createdAt,
    started_at: job.startedAt,
    finished_at: job.finishedAt,
    seed: job.plan.seed,
    progress: { stage: progress.stage, stage_kind: progress.stageKind, step: progress.step, steps: progress.steps, stages: job.plan.stages.length },
    images: await Promise.all(
      job.images.map(async (img) => ({
        url: await blobs.downloadUrl(img.key, { expiresSeconds: urlSeconds, filename: `${job.id}-${img.index}.${img.format === "jpeg" ? "jpg" : img.format}` }),
        width: img.width,
        height: img.height,
        seed: img.seed,
        format: img.format,
      })),
    ),
    error: job.error,
    links: { self: `${publicUrl}/v1/renders/${job.id}` },
  };
}
