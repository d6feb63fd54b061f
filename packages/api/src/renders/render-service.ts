import {
  enqueueStage,
  isTerminal,
  type JobEventSink,
  type JobEventType,
  type JobRecord,
  KilnError,
  planRender,
  type Ports,
  randomId,
  type RenderRequest,
  stageMessage,
} from "@kiln/shared";

import { sleep } from "../http/sleep.js";
import { admitRender, type RenderAdmission } from "./render-admission.js";
import { expiresAtOnEnd } from "./retention.js";

/**
 * Submitting a render, whatever the channel (HTTP, Slack, Discord, batch): plan it, write the job
 * `queued`, then enqueue stage 0. The job is written first so a crash between the two leaves a
 * visible queued job rather than an orphan message; the enqueue is retried by the caller.
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
  },
): Promise<JobRecord> {
  const seed = input.request.seed ?? crypto.getRandomValues(new Uint32Array(1))[0]!;
  const plan = planRender(input.request, seed);
  const created = input.now.toISOString();
  const retention = input.request.retention_hours ?? input.retentionHours;
  const job: JobRecord = {
    id: `job_${randomId(12)}`,
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
    expiresAt: Math.ceil(input.now.getTime() / 1000 + retention * 3600),
    ...(input.request.webhook ? { webhook: input.request.webhook } : {}),
  };
  await admitRender(ports, input.admission, input.request, input.now, () => ports.jobs.create(job));
  await enqueueStage(ports.queue, stageMessage(job.id, plan, 0, input.traceparent));
  return job;
}

export interface JobMoveOptions {
  now: Date;
  events?: JobEventSink;
  log?: (level: "warn", obj: Record<string, unknown>, msg: string) => void;
}

function emit(options: JobMoveOptions, type: JobEventType, job: JobRecord): void {
  options
    .events?.({ type, job, at: options.now.toISOString() })
    .catch((e) => options.log?.("warn", { err: String(e), event: type, jobId: job.id }, "job event not delivered"));
}

/**
 * A queued job past its start-by deadline becomes `expired` now rather than when a worker next
 * looks, so readers see it promptly. The worker does the same check (whoever is first wins the
 * conditional update) and drops the stage message when it finds the job ended.
 */
export async function expireIfOverdue(ports: Ports, job: JobRecord, options: JobMoveOptions): Promise<JobRecord> {
  if (job.status !== "queued" || !job.deadlineAt || Date.parse(job.deadlineAt) > options.now.getTime()) return job;
  const expired = await ports.jobs.update(
    job.id,
    { status: ["queued"] },
    {
      status: "expired",
      finishedAt: options.now.toISOString(),
      expiresAt: expiresAtOnEnd(job, options.now),
      error: {
        code: "deadline_passed",
        message: `The job was not started before its deadline (${job.deadlineAt}); it never ran. Submit it again with a later deadline_seconds.`,
      },
    },
  );
  if (expired) {
    emit(options, "expired", expired);
    return expired;
  }
  return (await ports.jobs.get(job.id)) ?? job;
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
      const canceled = await ports.jobs.update(
        current.id,
        { status: ["queued"] },
        {
          status: "canceled",
          cancelRequested: true,
          finishedAt: options.now.toISOString(),
          expiresAt: expiresAtOnEnd(current, options.now),
          error: { code: "canceled", message: "The job was canceled at its owner's request." },
        },
      );
      if (canceled) {
        emit(options, "canceled", canceled);
        return { job: canceled, outcome: "canceled" };
      }
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
