import { z } from "zod";

/**
 * A stage message on the queue: small, versioned JSON. Output keys are deterministic so a
 * re-run stage overwrites the same blob and a finished stage is recognised without recomputing.
 * The plan itself is read from the job record (immutable once planned).
 */
export const stageMessageSchema = z
  .object({
    v: z.literal(1),
    jobId: z.string().min(1),
    stage: z.number().int().min(0),
    kind: z.enum(["base", "refine"]),
    /** Blob key of the latents this stage reads (absent for stage 0). */
    inputKey: z.string().min(1).optional(),
    /** Blob key this stage writes: latents for a hand-over stage, a prefix for images. */
    outputKey: z.string().min(1),
    /** W3C trace context of the submit request. */
    traceparent: z.string().optional(),
    // Batch lanes: absent means the interactive lane.
    lane: z.enum(["batch"]).optional(),
    // Resolution buckets (`lanes` routing): the bucket whose queue carries this job's stages.
    route: z
      .string()
      .regex(/^\d{2,5}x\d{2,5}$/)
      .optional(),
  })
  .strict();

export type StageMessage = z.infer<typeof stageMessageSchema>;

export const blobKeys = {
  latents: (jobId: string, stage: number) => `jobs/${jobId}/stage-${stage}.latents`,
  imagesPrefix: (jobId: string) => `jobs/${jobId}/images/`,
  image: (jobId: string, index: number, ext: string) => `jobs/${jobId}/images/${index}.${ext}`,
  /** A picture the user sent (img2img, inpaint, outpaint): `image` or `mask`, stored once, read by every stage. */
  input: (jobId: string, name: "image" | "mask", ext: string) => `jobs/${jobId}/inputs/${name}.${ext}`,
};

// Lanes and stage queue names live in the queue registry; re-exported for the batch code's imports.
export { type Lane, LANES, queueForStage, stageQueues } from "../queues/registry.js";
