import {
  decodeLatents,
  describeError,
  enqueueStage,
  encodeLatents,
  isKilnError,
  isTerminal,
  KilnError,
  blobKeys,
  queueForStage,
  stageMessage,
  stageMessageSchema,
  type JobEventSink,
  type JobEventType,
  type JobRecord,
  type Latents,
  type Ports,
  type QueueMessage,
  type StageMessage,
} from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";
import type { StageExecutor } from "./stage-executor.js";
import type { WorkerMetrics } from "./metrics.js";

export interface StageRunnerOptions {
  ports: Ports;
  execute: StageExecutor;
  logger: Logger;
  metrics?: WorkerMetrics;
  workerId: string;
  visibilitySeconds: number;
  maxReceives: number;
  /** How often a running stage re-reads its job to notice a cancel request. */
  cancelPollMs?: number;
  /** Progress is written at most this often (and always on a stage's last step). */
  progressIntervalMs?: number;
  /** Aborted when the worker's drain grace period runs out: the stage stops and its message is released. */
  drainSignal?: AbortSignal;
  /** Told of every stored transition (webhooks). */
  events?: JobEventSink;
  now?: () => Date;
}

/** How many times a stage re-runs its producer after finding the input latents missing or corrupt. */
const MAX_RECOVERIES = 2;

export type StageOutcome = "succeeded" | "handed-over" | "skipped" | "canceled" | "expired" | "failed" | "retry" | "released";

class StageStop extends Error {
  constructor(readonly reason: "canceled" | "drain") {
    super(reason);
  }
}

/**
 * Runs one delivery of a stage message to its end: the job moves only through conditional
 * transitions, outputs go to deterministic keys, and the message is acknowledged only after the
 * stage's effects are durable. So a crash at any point is repaired by redelivery, and a duplicate
 * delivery can neither finish a job twice nor move it backwards.
 */
export async function runStageMessage(options: StageRunnerOptions, delivery: QueueMessage): Promise<StageOutcome> {
  const { ports, logger } = options;
  const now = () => options.now?.() ?? new Date();
  const queueName = queueOf(delivery);
  const parsed = stageMessageSchema.safeParse(delivery.body);
  if (!parsed.success) {
    // Unreadable messages cannot succeed; let them reach the dead-letter queue quickly for inspection.
    logger.error({ messageId: delivery.id, issues: parsed.error.issues }, "stage message is invalid; releasing it towards the dead-letter queue");
    await ports.queue.release(queueName, delivery.receipt, 0);
    return "released";
  }
  const message = parsed.data;
  const log = logger.child({ jobId: message.jobId, stage: message.stage, kind: message.kind, attempt: delivery.receiveCount });
  const heartbeat = setInterval(
    () => {
      ports.queue.extend(queueName, delivery.receipt, options.visibilitySeconds).catch((e) => log.warn({ err: describeError(e) }, "could not extend the message's visibility"));
    },
    Math.max(1000, (options.visibilitySeconds * 1000) / 3),
  );
  try {
    return await runStage(options, delivery, message, log, now);
  } finally {
    clearInterval(heartbeat);
  }
}

function queueOf(delivery: QueueMessage): string {
  const body = delivery.body as { kind?: string };
  return queueForStage(body?.kind === "refine" ? "refine" : "base");
}

async function runStage(options: StageRunnerOptions, delivery: QueueMessage, message: StageMessage, log: Logger, now: () => Date): Promise<StageOutcome> {
  const { ports, metrics } = options;
  const queueName = queueForStage(message.kind);
  const ack = () => ports.queue.ack(queueName, delivery.receipt);

  let job = await ports.jobs.get(message.jobId);
  if (!job) {
    log.warn("job no longer exists (expired or deleted); dropping its stage message");
    await ack();
    return "skipped";
  }
  if (isTerminal(job.status)) {
    log.info({ status: job.status }, "job already ended; acknowledging a duplicate or late stage message");
    await ack();
    return "skipped";
  }
  const stage = job.plan.stages[message.stage];
  if (!stage || stage.kind !== message.kind) {
    await failJob(options, job, new KilnError("stage_message_mismatch", `The stage message names stage ${message.stage} (${message.kind}), which the job's plan does not have.`), now, log);
    await ack();
    return "failed";
  }
  if (job.cancelRequested) {
    await finishAs(options, job, "canceled", now, log);
    await ack();
    return "canceled";
  }
  if (job.status === "queued" && job.deadlineAt && Date.parse(job.deadlineAt) < now().getTime()) {
    const expired = await ports.jobs.update(job.id, { version: job.version, status: ["queued"] }, {
      status: "expired",
      finishedAt: now().toISOString(),
      error: { code: "deadline_passed", message: `The job was not started before its deadline (${job.deadlineAt}); it never ran. Submit it again with a later deadline_seconds.` },
    });
    emit(options, "expired", expired, log);
    await ack();
    return "expired";
  }
  metrics?.queueWait.observe({ kind: stage.kind }, Math.max(0, (Date.now() - delivery.sentAt) / 1000));

  // A hand-over stage whose latents are already stored and verify was finished by an earlier delivery
  // that died before acknowledging: re-send the next stage instead of recomputing.
  if (stage.output === "latents") {
    const existing = await readLatents(ports, message.outputKey).catch(() => undefined);
    if (existing && existing.meta.jobId === job.id && existing.meta.stage === stage.index) {
      log.info("stage output already stored; re-sending the next stage without recomputing");
      await enqueueStage(ports.queue, stageMessage(job.id, job.plan, stage.index + 1, message.traceparent));
      await ack();
      return "handed-over";
    }
  }

  const startedAt = now().toISOString();
  const running = await ports.jobs.update(job.id, { version: job.version, status: ["queued", "running"] }, {
    status: "running",
    startedAt: job.startedAt ?? startedAt,
    progress: { stage: stage.index, stageKind: stage.kind, step: 0, steps: 0 },
    stageTimings: [...job.stageTimings.filter((t) => t.stage !== stage.index), { stage: stage.index, kind: stage.kind, worker: options.workerId, startedAt }],
  });
  if (!running) {
    // Someone else moved the job (cancel, a concurrent delivery): start over from the fresh record.
    await ports.queue.release(queueName, delivery.receipt, 0);
    return "released";
  }
  if (!job.startedAt) emit(options, "started", running, log);
  job = running;

  let input: Latents | undefined;
  if (message.inputKey) {
    try {
      input = await readLatents(ports, message.inputKey);
      if (!input) throw new KilnError("latents_missing", `The latents of stage ${stage.index - 1} (${message.inputKey}) are missing.`, { retryable: true });
      if (input.meta.jobId !== job.id) throw new KilnError("latents_corrupt", `The latents at ${message.inputKey} belong to job ${input.meta.jobId}.`, { retryable: true });
    } catch (e) {
      return recoverProducer(options, job, message, e, delivery, log, now);
    }
  }

  const stop = new AbortController();
  const onDrain = () => stop.abort(new StageStop("drain"));
  options.drainSignal?.addEventListener("abort", onDrain, { once: true });
  if (options.drainSignal?.aborted) onDrain();
  const cancelWatch = setInterval(async () => {
    const fresh = await ports.jobs.get(job!.id).catch(() => null);
    if (fresh?.cancelRequested || (fresh && isTerminal(fresh.status))) stop.abort(new StageStop("canceled"));
  }, options.cancelPollMs ?? 1000);
  let lastProgress = 0;
  const stageStarted = performance.now();
  try {
    const result = await options.execute(job, stage, input, {
      signal: stop.signal,
      logger: log,
      onStep(step, steps) {
        metrics?.steps.inc({ kind: stage.kind });
        const t = Date.now();
        if (step === steps || t - lastProgress >= (options.progressIntervalMs ?? 250)) {
          lastProgress = t;
          const progress = { stage: stage.index, stageKind: stage.kind, step, steps };
          ports.jobs.setProgress(job!.id, progress).catch((e) => log.warn({ err: describeError(e) }, "could not record progress"));
          emit(options, "progress", { ...job!, progress }, log);
        }
      },
    });
    metrics?.unetSeconds.observe({ kind: stage.kind }, result.unetSeconds);
    const timing = { stage: stage.index, kind: stage.kind, worker: options.workerId, startedAt, finishedAt: now().toISOString(), seconds: (performance.now() - stageStarted) / 1000 };
    const timings = [...job.stageTimings.filter((t) => t.stage !== stage.index), timing];

    if (result.kind === "latents") {
      const handoff = performance.now();
      await ports.blobs.put(message.outputKey, await encodeLatents(result.latents), { contentType: "application/x-kiln-latents" });
      await ports.jobs.update(job.id, { status: ["running"] }, { stageTimings: timings });
      await enqueueStage(ports.queue, stageMessage(job.id, job.plan, stage.index + 1, message.traceparent));
      metrics?.handoffSeconds.observe({ kind: stage.kind }, (performance.now() - handoff) / 1000);
      await ack();
      metrics?.stageSeconds.observe({ kind: stage.kind, outcome: "handed-over" }, timing.seconds);
      log.info({ seconds: timing.seconds, steps: result.steps }, "stage done; latents handed over");
      return "handed-over";
    }

    const images = [];
    for (let i = 0; i < result.images.length; i++) {
      const image = result.images[i]!;
      const key = blobKeys.image(job.id, i, image.format === "jpeg" ? "jpg" : image.format);
      await ports.blobs.put(key, image.bytes, { contentType: image.contentType });
      images.push({ index: i, key, width: image.width, height: image.height, seed: job.plan.seed + i, format: image.format, bytes: image.bytes.length });
    }
    const done = await ports.jobs.update(job.id, { status: ["running"] }, {
      status: "succeeded",
      finishedAt: now().toISOString(),
      images,
      stageTimings: timings,
      progress: { stage: stage.index, stageKind: stage.kind, step: result.steps, steps: result.steps },
    });
    await ack();
    emit(options, "succeeded", done, log);
    metrics?.stageSeconds.observe({ kind: stage.kind, outcome: "succeeded" }, timing.seconds);
    if (!done) {
      log.info("job was finished or canceled by someone else while this stage ran; its images are not attached");
      return "skipped";
    }
    log.info({ seconds: timing.seconds, steps: result.steps, images: images.length }, "job succeeded");
    return "succeeded";
  } catch (e) {
    const reason = stop.signal.aborted && stop.signal.reason instanceof StageStop ? stop.signal.reason.reason : undefined;
    if (reason === "canceled") {
      const fresh = await ports.jobs.get(job.id);
      if (fresh && !isTerminal(fresh.status)) await finishAs(options, fresh, "canceled", now, log);
      await ack();
      log.info("stage stopped: the job was canceled");
      return "canceled";
    }
    if (reason === "drain") {
      await ports.queue.release(queueName, delivery.receipt, 0);
      log.info("stage stopped for drain; message released for another worker");
      return "released";
    }
    return handleFailure(options, job, message, delivery, e, log, now);
  } finally {
    clearInterval(cancelWatch);
    options.drainSignal?.removeEventListener("abort", onDrain);
  }
}

function emit(options: StageRunnerOptions, type: JobEventType, job: JobRecord | null | undefined, log: Logger): void {
  if (!job || !options.events) return;
  options.events({ type, job, at: new Date().toISOString() }).catch((e) => log.warn({ err: describeError(e), event: type }, "job event not delivered"));
}

async function readLatents(ports: Ports, key: string): Promise<Latents | undefined> {
  const bytes = await ports.blobs.get(key);
  return bytes ? decodeLatents(bytes) : undefined;
}

/**
 * The input latents are missing or fail their checksum: never use them. Delete them and re-run the
 * producing stage (bounded), or fail the job with the code that says why.
 */
async function recoverProducer(
  options: StageRunnerOptions,
  job: JobRecord,
  message: StageMessage,
  error: unknown,
  delivery: QueueMessage,
  log: Logger,
  now: () => Date,
): Promise<StageOutcome> {
  const { ports } = options;
  const queueName = queueForStage(message.kind);
  if (!isKilnError(error) || !["latents_corrupt", "latents_missing", "latents_version_unsupported"].includes(error.code)) {
    return handleFailure(options, job, message, delivery, error, log, now);
  }
  options.metrics?.failures.inc({ kind: message.kind, code: error.code });
  const recoveries = job.recoveries ?? 0;
  if (error.code === "latents_version_unsupported" || recoveries >= MAX_RECOVERIES) {
    await failJob(options, job, error, now, log);
    await ports.queue.ack(queueName, delivery.receipt);
    return "failed";
  }
  log.warn({ code: error.code, err: error.message }, "input latents unusable; re-running the producing stage");
  await ports.blobs.delete(message.inputKey!);
  const updated = await ports.jobs.update(job.id, { version: job.version, status: ["running"] }, { recoveries: recoveries + 1 });
  if (updated) await enqueueStage(ports.queue, stageMessage(job.id, job.plan, message.stage - 1, message.traceparent));
  await ports.queue.ack(queueName, delivery.receipt);
  return "retry";
}

async function handleFailure(
  options: StageRunnerOptions,
  job: JobRecord,
  message: StageMessage,
  delivery: QueueMessage,
  error: unknown,
  log: Logger,
  now: () => Date,
): Promise<StageOutcome> {
  const { ports } = options;
  const queueName = queueForStage(message.kind);
  const code = isKilnError(error) ? error.code : "stage_error";
  options.metrics?.failures.inc({ kind: message.kind, code });
  const permanent = isKilnError(error) && !error.retryable;
  if (permanent) {
    log.error({ code, err: describeError(error) }, "stage failed; the job fails (retrying cannot help)");
    await failJob(options, job, error as KilnError, now, log);
    await ports.queue.ack(queueName, delivery.receipt);
    return "failed";
  }
  if (delivery.receiveCount >= options.maxReceives) {
    log.error({ code, err: describeError(error) }, "stage failed on its last allowed delivery; the job fails and the message goes to the dead-letter queue");
    await failJob(
      options,
      job,
      new KilnError("stage_failed_repeatedly", `Stage ${message.stage} (${message.kind}) failed on all ${delivery.receiveCount} attempts; last error: ${describeError(error)}. An operator can re-run it with \`kiln dlq replay\` once the cause is fixed.`),
      now,
      log,
    );
    await ports.queue.release(queueName, delivery.receipt, 0);
    return "failed";
  }
  const backoff = Math.min(60, 2 ** (delivery.receiveCount - 1));
  log.warn({ code, err: describeError(error), retryInSeconds: backoff }, "stage failed; it will be retried");
  await ports.queue.release(queueName, delivery.receipt, backoff);
  return "retry";
}

async function failJob(options: StageRunnerOptions, job: JobRecord, error: KilnError, now: () => Date, log: Logger): Promise<void> {
  const failed = await options.ports.jobs.update(job.id, { status: ["queued", "running"] }, {
    status: "failed",
    finishedAt: now().toISOString(),
    error: { code: error.code, message: error.message },
  });
  emit(options, "failed", failed, log);
}

async function finishAs(options: StageRunnerOptions, job: JobRecord, status: "canceled", now: () => Date, log: Logger): Promise<void> {
  const canceled = await options.ports.jobs.update(job.id, { status: ["queued", "running"] }, {
    status,
    finishedAt: now().toISOString(),
    error: { code: "canceled", message: "The job was canceled at its owner's request." },
  });
  emit(options, status, canceled, log);
}
