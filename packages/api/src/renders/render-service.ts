import {
  applyTransition,
  blobKeys,
  type BucketPolicy,
  type ChatOrigin,
  chooseBucket,
  createQueuedJob,
  ensureEnqueued,
  isOverdue,
  isTerminal,
  type JobEventSink,
  type JobRecord,
  type JobTransition,
  jobTransitions,
  KilnError,
  outputSize,
  type PausePoint,
  type PlannedInputs,
  planRender,
  type Ports,
  randomId,
  type RenderPlan,
  type RenderRequest,
  tellEvent,
} from "@kiln/shared";

import { sleep } from "../http/sleep.js";
import type { SubmittedInputs } from "../inputs/image-inputs.js";
import { admitRender, type RenderAdmission } from "./render-admission.js";

/**
 * Submitting a render, whatever the channel (HTTP, Slack, Discord, batch): plan it, then write the
 * job `queued` with its stage-0 message through the submit outbox (`createQueuedJob`: one
 * transaction on local, create → send → mark with a reconciler on AWS).
 *
 * With `jobId` (derived from an Idempotency-Key) a retry of a submit — after a crash, after its
 * lock lapsed, or a replay — finds the job it created and answers with it as it is now, re-sending
 * stage 0 if the first attempt died before sending it; it is not admitted (charged) twice.
 */
export async function submitRender(
  ports: Ports,
  input: {
    ownerKeyId: string;
    request: RenderRequest;
    now: Date;
    retentionHours: number;
    traceparent?: string;
    /** The key's quotas and webhook policy; absent for trusted internal callers. */
    admission?: RenderAdmission;
    /**
     * A deterministic id (from the Idempotency-Key, or a batch render's canonical parameters); random
     * when absent. A second submit with the same id answers with the stored job.
     */
    jobId?: string;
    /** Fault tests' pause points (off in production). */
    pause?: PausePoint;
    /** img2img, inpaint, outpaint: the checked pictures, and the size bounds the picture's own size is fitted to. */
    inputs?: SubmittedInputs;
    limits?: { minSide: number; maxSide: number; maxPixels: number };
    /** Chat channels: where progress and the result go (see channels/). */
    chat?: ChatOrigin;
    /** Batch renders travel in the batch lane. */
    lane?: "batch";
    /** Resolution buckets (KILN_BUCKETS): the size is mapped to one, or refused when strict; absent: kept as asked. */
    buckets?: BucketPolicy;
  },
): Promise<JobRecord> {
  if (input.jobId) {
    const existing = await ports.jobs.get(input.jobId);
    if (existing?.ownerKeyId === input.ownerKeyId) return ensureEnqueued(ports, existing, input.now);
    if (existing) throw new KilnError("submit_conflict", "This render id belongs to another key.", { status: 409 });
  }
  const seed = input.request.seed ?? crypto.getRandomValues(new Uint32Array(1))[0]!;
  const id = input.jobId ?? `job_${randomId(12)}`;
  const pictures = storedInputs(id, input.inputs);
  const planned = plannedInputs(pictures, input.inputs, input.limits);
  const plan = {
    ...bucketedPlan(input.request, seed, planned, input.buckets, input.limits),
    ...(input.lane ? { lane: input.lane } : {}),
  };
  if (input.inputs && input.limits && plan.width * plan.height > input.limits.maxPixels) {
    const message = `the render would be ${plan.width}×${plan.height}, over ${input.limits.maxPixels} pixels; lower width/height or expand`;
    throw new KilnError("invalid_request", `The request body is invalid — width: ${message}.`, {
      status: 400,
      details: { errors: [{ field: input.request.mode === "outpaint" ? "expand" : "width", message }] },
    });
  }
  const created = input.now.toISOString();
  const retention = input.request.retention_hours ?? input.retentionHours;
  const job: JobRecord = {
    id,
    ownerKeyId: input.ownerKeyId,
    status: "queued",
    version: 1,
    createdAt: created,
    updatedAt: created,
    plan,
    images: [],
    stageTimings: [],
    deadlineAt: input.request.deadline_seconds
      ? new Date(input.now.getTime() + input.request.deadline_seconds * 1000).toISOString()
      : undefined,
    retentionSeconds: retention * 3600,
    expiresAt: Math.ceil(input.now.getTime() / 1000 + retention * 3600),
    ...(input.request.webhook ? { webhook: input.request.webhook } : {}),
    ...(input.chat ? { chat: input.chat } : {}),
  };
  const stored = await admitRender(ports, input.admission, input.request, input.now, async () => {
    // The pictures are stored once, under the job, before the job exists: a stage can never find its job
    // without them. A failed create removes them again (the retention sweep catches a crash in between).
    await Promise.all(pictures.map((s) => ports.blobs.put(s.key, s.bytes, { contentType: s.contentType })));
    let ok;
    try {
      ok = await createQueuedJob(ports, job, {
        traceparent: input.traceparent,
        now: input.now,
        pause: input.pause,
      });
    } catch (e) {
      await Promise.all(pictures.map((s) => ports.blobs.delete(s.key).catch(() => undefined)));
      throw e;
    }
    // Lost a race with a concurrent retry of the same Idempotency-Key: the job (and the same pictures) are theirs.
    if (!ok) throw new SubmitRaced();
    return ok;
  }).catch(async (e) => {
    if (!(e instanceof SubmitRaced)) throw e;
    return false;
  });
  if (!stored) {
    const existing = await ports.jobs.get(job.id);
    if (!existing)
      throw new KilnError("submit_conflict", "The render could not be stored; submit it again.", {
        status: 409,
        retryable: true,
      });
    return ensureEnqueued(ports, existing, input.now);
  }
  return job;
}

/**
 * Resolution buckets: plans the render, then maps its size to a bucket (see chooseBucket). A snapped
 * size is planned again at the bucket, so every size-derived field (SDXL's size conditioning, the
 * picture's resize) agrees with it. Outpaint keeps its size (its canvas is the picture plus `expand`),
 * and so does a bucket beyond the server's size limits.
 */
function bucketedPlan(
  request: RenderRequest,
  seed: number,
  inputs: PlannedInputs | undefined,
  policy: BucketPolicy | undefined,
  limits: { maxSide: number; maxPixels: number } | undefined,
): RenderPlan {
  const plan = planRender(request, seed, inputs);
  if (!policy) return plan;
  const choice = chooseBucket(plan.width, plan.height, policy);
  const tag = (bucket: string) => ({ bucket, ...(policy.routeByBucket ? { route: bucket } : {}) });
  if (!choice.snappedFrom) return choice.bucket ? { ...plan, ...tag(choice.bucket) } : plan;
  if (request.mode === "outpaint" || !choice.bucket) return plan;
  const snapped = planRender({ ...request, width: choice.width, height: choice.height }, seed, inputs);
  // The output (after an SDEdit upscale too) must stay within the server's limits, as the size asked for did.
  const out = outputSize(snapped);
  const fits =
    !limits || (Math.max(out.width, out.height) <= limits.maxSide && out.width * out.height <= limits.maxPixels);
  if (!fits) return plan;
  return { ...snapped, ...tag(choice.bucket), requestedSize: [plan.width, plan.height] };
}

/** The create lost to a concurrent submit with the same id; the admission gives back what it took. */
class SubmitRaced extends Error {}

interface StoredInput {
  name: "image" | "mask";
  key: string;
  bytes: Uint8Array;
  contentType: string;
  width: number;
  height: number;
}

function storedInputs(jobId: string, inputs: SubmittedInputs | undefined): StoredInput[] {
  if (!inputs) return [];
  return (["image", "mask"] as const).flatMap((name) => {
    const received = inputs[name];
    if (!received) return [];
    const { header, bytes } = received;
    return [
      {
        name,
        key: blobKeys.input(jobId, name, header.format),
        bytes,
        contentType: header.contentType,
        width: header.width,
        height: header.height,
      },
    ];
  });
}

function plannedInputs(
  stored: StoredInput[],
  inputs: SubmittedInputs | undefined,
  limits: { minSide: number; maxSide: number; maxPixels: number } | undefined,
): PlannedInputs | undefined {
  const image = stored.find((s) => s.name === "image");
  if (!inputs || !image) return undefined;
  const mask = stored.find((s) => s.name === "mask");
  const pick = (s: StoredInput) => ({ key: s.key, width: s.width, height: s.height });
  return {
    image: pick(image),
    ...(mask ? { mask: pick(mask) } : {}),
    maskFrom: inputs.maskFrom,
    // The picture's own size, scaled down to SDXL's native area (or the server's budget, if smaller).
    pixelBudget: Math.min(1024 * 1024, limits?.maxPixels ?? Infinity),
    minSide: limits?.minSide,
    maxSide: limits?.maxSide,
  };
}

export interface JobMoveOptions {
  now: Date;
  events?: JobEventSink;
  log?: (level: "warn", obj: Record<string, unknown>, msg: string) => void;
}

/**
 * Stores a transition of the job state machine; its event goes out without holding up the answer
 * (stored with the transition, it stays due on the record until told, so nothing is lost).
 */
async function move(ports: Ports, job: JobRecord, transition: JobTransition, options: JobMoveOptions) {
  const stored = await applyTransition(ports.jobs, job.id, transition, { at: options.now });
  if (stored && transition.event && options.events) {
    void tellEvent(ports.jobs, options.events, transition.event, stored, {
      at: options.now,
      onError: (e, event) =>
        options.log?.("warn", { err: String(e), event, jobId: job.id }, "job event not delivered; it stays due"),
    });
  }
  return stored;
}

/**
 * A queued job past its start-by deadline becomes `expired` now rather than when a worker next
 * looks, so readers see it promptly. The worker does the same check (whoever is first wins the
 * conditional update) and drops the stage message when it finds the job ended.
 */
export async function expireIfOverdue(ports: Ports, job: JobRecord, options: JobMoveOptions): Promise<JobRecord> {
  if (!isOverdue(job, options.now)) return job;
  const expired = await move(ports, job, jobTransitions.expire(job, options.now), options);
  return expired ?? (await ports.jobs.get(job.id)) ?? job;
}

export type CancelOutcome = "canceled" | "requested" | "ended";

/**
 * Cancels a job: a queued one ends `canceled` at once (conditional on still being queued); a
 * running one gets `cancelRequested`, which the worker running any of its stages notices and
 * stops at the next denoising step. An ended job is left as it is (`ended`).
 */
export async function cancelRender(
  ports: Ports,
  job: JobRecord,
  options: JobMoveOptions,
): Promise<{ job: JobRecord; outcome: CancelOutcome }> {
  let current = job;
  // A queued job may start between the read and the write; each retry re-reads it.
  for (let attempt = 0; attempt < 3; attempt++) {
    if (isTerminal(current.status)) return { job: current, outcome: "ended" };
    if (current.status === "queued") {
      const canceled = await move(
        ports,
        current,
        jobTransitions.cancel(current, options.now, { from: ["queued"] }),
        options,
      );
      if (canceled) return { job: canceled, outcome: "canceled" };
    } else {
      if (current.cancelRequested) return { job: current, outcome: "requested" };
      const requested = await ports.jobs.update(current.id, { status: ["running"] }, { cancelRequested: true });
      if (requested) return { job: requested, outcome: "requested" };
    }
    const fresh = await ports.jobs.get(current.id);
    if (!fresh) throw new KilnError("not_found", `Render ${current.id} no longer exists.`, { status: 404 });
    current = fresh;
  }
  throw new KilnError(
    "cancel_conflict",
    `Render ${job.id} kept changing state while being canceled; send the DELETE again.`,
    { status: 409, retryable: true },
  );
}

/**
 * Re-reads the job every `pollMs` until it ends, `timeoutMs` passes or `signal` aborts; returns
 * the last record read. Polling the JobStore works the same on both families (no pub/sub).
 */
export async function waitForEnd(
  ports: Ports,
  job: JobRecord,
  options: JobMoveOptions & { timeoutMs: number; pollMs: number; signal?: AbortSignal; clock?: () => Date },
): Promise<JobRecord> {
  const clock = options.clock ?? (() => new Date());
  const until = clock().getTime() + options.timeoutMs;
  let current = job;
  for (;;) {
    current = await expireIfOverdue(ports, current, { ...options, now: clock() });
    if (isTerminal(current.status) || options.signal?.aborted) return current;
    const left = until - clock().getTime();
    if (left <= 0) return current;
    await sleep(Math.min(options.pollMs, left), options.signal);
    current = (await ports.jobs.get(job.id)) ?? current;
  }
}
