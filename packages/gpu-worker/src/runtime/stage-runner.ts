import {
  blobKeys,
  decodeLatents,
  describeError,
  encodeLatents,
  enqueueStage,
  isKilnError,
  isTerminal,
  type JobEventSink,
  type JobEventType,
  type JobImage,
  type JobRecord,
  KilnError,
  type Latents,
  type Ports,
  queueForStage,
  type QueueMessage,
  retryTransient,
  type StageMessage,
  stageMessage,
  stageMessageSchema,
} from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";

import { BestEffortWrites } from "./best-effort-writes.js";
import type { WorkerMetrics } from "./metrics.js";
import type { StageExecutor } from "./stage-executor.js";

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
  /**
   * How long a queue or store call keeps being retried (with backoff) while it fails transiently
   * (unreachable, busy, throttled) before the delivery gives up and is left to its visibility
   * timeout. Retrying in place keeps a finished stage's work across a short outage.
   */
  ioRetryMs?: number;
  /** The process's gate for progress and visibility writes (one per worker; a fresh one if absent). */
  bestEffort?: BestEffortWrites;
  now?: () => Date;
}

/** How many times a stage re-runs its producer after finding the input latents missing or corrupt. */
const MAX_RECOVERIES = 2;

export type StageOutcome =
  "succeeded" | "handed-over" | "skipped" | "stale" | "canceled" | "expired" | "failed" | "retry" | "released";

class StageStop extends Error {
  constructor(readonly reason: "canceled" | "drain" | "superseded") {
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
    logger.error(
      { messageId: delivery.id, issues: parsed.error.issues },
      "stage message is invalid; releasing it towards the dead-letter queue",
    );
    await ports.queue.release(queueName, delivery.receipt, 0);
    return "released";
  }
  const message = parsed.data;
  const log = logger.child({
    jobId: message.jobId,
    stage: message.stage,
    kind: message.kind,
    attempt: delivery.receiveCount,
  });
  const bestEffort = (options.bestEffort ??= new BestEffortWrites(logger));
  const heartbeat = setInterval(
    () =>
      void bestEffort.run(
        "extend the message's visibility",
        () => ports.queue.extend(queueName, delivery.receipt, options.visibilitySeconds),
        log,
      ),
    Math.max(1000, (options.visibilitySeconds * 1000) / 3),
  );
  const io: Io = (what, op) =>
    retryTransient(op, {
      maxMs: options.ioRetryMs ?? 30_000,
      onRetry: (e, attempt, delayMs) => {
        options.metrics?.ioRetries.inc({ operation: what });
        log.warn(
          { err: describeError(e), operation: what, attempt, retryInMs: delayMs },
          "queue or store call failed transiently; retrying",
        );
      },
    });
  try {
    const outcome = await runStage(options, delivery, message, log, now, io);
    options.metrics?.stageRuns.inc({ kind: message.kind, outcome });
    return outcome;
  } finally {
    clearInterval(heartbeat);
  }
}

/** A queue or store call, retried while it fails transiently. */
type Io = <T>(what: string, op: () => Promise<T>) => Promise<T>;

function queueOf(delivery: QueueMessage): string {
  const body = delivery.body as { kind?: string };
  return queueForStage(body?.kind === "refine" ? "refine" : "base");
}

async function runStage(
  options: StageRunnerOptions,
  delivery: QueueMessage,
  message: StageMessage,
  log: Logger,
  now: () => Date,
  io: Io,
): Promise<StageOutcome> {
  const { ports, metrics } = options;
  const queueName = queueForStage(message.kind);
  const ack = () => io("ack", () => ports.queue.ack(queueName, delivery.receipt));

  // The input latents are fetched beside the job read: on a hand-over both are on the critical path.
  const inputKey = message.inputKey;
  const prefetched = inputKey ? io("read latents", () => ports.blobs.get(inputKey)) : undefined;
  prefetched?.catch(() => undefined);
  let job = await io("get job", () => ports.jobs.get(message.jobId));
  if (!job) {
    log.warn("job no longer exists (expired or deleted); dropping its stage message");
    await ack();
    return "skipped";
  }
  if (isTerminal(job.status)) {
    log.info({ status: job.status }, "job already ended; acknowledging a duplicate or late stage message");
    // This very message (not a copy) ended the job and came back: its earlier delivery may have
    // died between storing the transition and telling the sink.
    if (delivery.receiveCount > 1 && job.progress?.stage === message.stage)
      await emit(options, TERMINAL_EVENTS[job.status]!, job, log);
    await ack();
    return "skipped";
  }
  const stage = job.plan.stages[message.stage];
  if (!stage || stage.kind !== message.kind) {
    await failJob(
      options,
      job,
      new KilnError(
        "stage_message_mismatch",
        `The stage message names stage ${message.stage} (${message.kind}), which the job's plan does not have.`,
      ),
      now,
      log,
    );
    await ack();
    return "failed";
  }
  if (job.progress && job.progress.stage > stage.index) {
    // A later stage has started, so this stage's output was handed over: a duplicate or late copy.
    log.info(
      { progressStage: job.progress.stage },
      "a later stage already started; acknowledging a stale stage message",
    );
    await ack();
    return "stale";
  }
  if (job.cancelRequested) {
    await io("cancel job", () => finishAs(options, job!, "canceled", now, log));
    await ack();
    return "canceled";
  }
  if (job.status === "queued" && !job.startedAt && job.deadlineAt && Date.parse(job.deadlineAt) < now().getTime()) {
    const expired = await io("expire job", () =>
      ports.jobs.update(
        job!.id,
        { version: job!.version, status: ["queued"] },
        {
          status: "expired",
          finishedAt: now().toISOString(),
          error: {
            code: "deadline_passed",
            message: `The job was not started before its deadline (${job!.deadlineAt}); it never ran. Submit it again with a later deadline_seconds.`,
          },
        },
      ),
    );
    await emit(options, "expired", expired, log);
    await ack();
    return "expired";
  }
  metrics?.queueWait.observe({ kind: stage.kind }, Math.max(0, (Date.now() - delivery.sentAt) / 1000));

  // A hand-over stage whose latents are already stored and verify was finished by an earlier delivery
  // that died before acknowledging: re-send the next stage instead of recomputing. Only a stage that
  // some delivery started (it has a timing) can have output, so first runs skip the read.
  if (stage.output === "latents" && job.stageTimings.some((t) => t.stage === stage.index)) {
    const existing = await readLatents(ports, message.outputKey).catch(() => undefined);
    if (existing && existing.meta.jobId === job.id && existing.meta.stage === stage.index) {
      log.info("stage output already stored; re-sending the next stage without recomputing");
      await io("enqueue next stage", () =>
        enqueueStage(ports.queue, stageMessage(job!.id, job!.plan, stage.index + 1, message.traceparent)),
      );
      await ack();
      return "handed-over";
    }
  }

  const startedAt = now().toISOString();
  const claimed = job;
  const transition = io("start stage", () =>
    ports.jobs.update(
      claimed.id,
      { version: claimed.version, status: ["queued", "running"] },
      {
        status: "running",
        startedAt: claimed.startedAt ?? startedAt,
        progress: { stage: stage.index, stageKind: stage.kind, step: 0, steps: 0 },
        stageTimings: [
          ...claimed.stageTimings.filter((t) => t.stage !== stage.index),
          { stage: stage.index, kind: stage.kind, worker: options.workerId, startedAt },
        ],
      },
    ),
  );
  transition.catch(() => undefined);
  // Someone else moved the job (cancel, a concurrent delivery): start over from the fresh record.
  const superseded = async (): Promise<StageOutcome> => {
    await io("release", () => ports.queue.release(queueName, delivery.receipt, 0));
    return "released";
  };

  let input: Latents | undefined;
  if (prefetched) {
    try {
      // Only the read is retried: a blob that fails to decode is corrupt, not unreachable.
      const bytes = await prefetched;
      input = bytes ? await decodeLatents(bytes) : undefined;
      if (!input)
        throw new KilnError("latents_missing", `The latents of stage ${stage.index - 1} (${inputKey}) are missing.`, {
          retryable: true,
        });
      if (input.meta.jobId !== job.id)
        throw new KilnError("latents_corrupt", `The latents at ${inputKey} belong to job ${input.meta.jobId}.`, {
          retryable: true,
        });
    } catch (e) {
      const running = await transition;
      if (!running) return superseded();
      return recoverProducer(options, running, message, e, delivery, log, now, io);
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
  // Progress writes are chained, so they land in order and all before the hand-over or the finish.
  let progressWrites = Promise.resolve();
  const stageStarted = performance.now();
  try {
    // The stage starts computing while its `running` transition is written; nothing it produces
    // is stored before that transition has succeeded.
    const execution = options.execute(job, stage, input, {
      signal: stop.signal,
      logger: log,
      onStep(step, steps) {
        metrics?.steps.inc({ kind: stage.kind });
        const t = Date.now();
        if (options.bestEffort!.open && (step === steps || t - lastProgress >= (options.progressIntervalMs ?? 250))) {
          lastProgress = t;
          const progress = { stage: stage.index, stageKind: stage.kind, step, steps };
          progressWrites = progressWrites
            .then(() =>
              options.bestEffort!.run("record progress", () => ports.jobs.setProgress(job!.id, progress), log),
            )
            .then(() => undefined);
          void emit(options, "progress", { ...job!, progress }, log);
        }
      },
    });
    execution.catch(() => undefined);
    let running: JobRecord | null;
    try {
      running = await transition;
    } finally {
      if (!(await transition.then(Boolean, () => false))) {
        stop.abort(new StageStop("superseded"));
        await execution.catch(() => undefined);
      }
    }
    if (!running) return await superseded();
    if (!job.startedAt) await emit(options, "started", running, log);
    job = running;
    const result = await execution;
    await progressWrites;
    metrics?.unetSeconds.observe({ kind: stage.kind }, result.unetSeconds);
    const timing = {
      stage: stage.index,
      kind: stage.kind,
      worker: options.workerId,
      startedAt,
      finishedAt: now().toISOString(),
      seconds: (performance.now() - stageStarted) / 1000,
    };
    const timings = [...job.stageTimings.filter((t) => t.stage !== stage.index), timing];
    if (result.steps > 0 && timing.seconds > 0)
      metrics?.stepsPerSecond.set({ kind: stage.kind }, result.steps / timing.seconds);

    if (result.kind === "latents") {
      const handoff = performance.now();
      const blob = await encodeLatents(result.latents);
      // Both must be stored before the next stage may be sent; neither depends on the other.
      await Promise.all([
        io("put latents", () => ports.blobs.put(message.outputKey, blob)),
        io("record hand-over", () => ports.jobs.update(job!.id, { status: ["running"] }, { stageTimings: timings })),
      ]);
      await io("enqueue next stage", () =>
        enqueueStage(ports.queue, stageMessage(job!.id, job!.plan, stage.index + 1, message.traceparent)),
      );
      metrics?.handoffSeconds.observe({ kind: stage.kind }, (performance.now() - handoff) / 1000);
      await ack();
      metrics?.stageSeconds.observe({ kind: stage.kind, outcome: "handed-over" }, timing.seconds);
      log.info({ seconds: timing.seconds, steps: result.steps }, "stage done; latents handed over");
      return "handed-over";
    }

    const images: JobImage[] = [];
    for (let i = 0; i < result.images.length; i++) {
      const image = result.images[i]!;
      const key = blobKeys.image(job.id, i, image.format === "jpeg" ? "jpg" : image.format);
      await io("put image", () => ports.blobs.put(key, image.bytes, { contentType: image.contentType }));
      images.push({
        index: i,
        key,
        width: image.width,
        height: image.height,
        seed: job.plan.seed + i,
        format: image.format,
        bytes: image.bytes.length,
      });
    }
    const done = await io("finish job", () =>
      ports.jobs.update(
        job!.id,
        { status: ["running"] },
        {
          status: "succeeded",
          finishedAt: now().toISOString(),
          images,
          stageTimings: timings,
          progress: { stage: stage.index, stageKind: stage.kind, step: result.steps, steps: result.steps },
        },
      ),
    );
    await emit(options, "succeeded", done, log);
    await ack();
    metrics?.stageSeconds.observe({ kind: stage.kind, outcome: "succeeded" }, timing.seconds);
    if (!done) {
      log.info("job was finished or canceled by someone else while this stage ran; its images are not attached");
      return "skipped";
    }
    log.info({ seconds: timing.seconds, steps: result.steps, images: images.length }, "job succeeded");
    return "succeeded";
  } catch (e) {
    const reason =
      stop.signal.aborted && stop.signal.reason instanceof StageStop ? stop.signal.reason.reason : undefined;
    if (reason === "canceled") {
      const fresh = await io("get job", () => ports.jobs.get(job!.id));
      if (fresh && !isTerminal(fresh.status))
        await io("cancel job", () => finishAs(options, fresh, "canceled", now, log));
      await ack();
      log.info("stage stopped: the job was canceled");
      return "canceled";
    }
    if (reason === "drain") {
      if (stage.index === 0) {
        // Nothing of the job is done: it is queued again (for its position and waiting reason), not running.
        await io("requeue job", () =>
          ports.jobs.update(
            job!.id,
            { status: ["running"] },
            { status: "queued", progress: undefined, stageTimings: job!.stageTimings.filter((t) => t.stage !== 0) },
          ),
        );
      }
      await io("release", () => ports.queue.release(queueName, delivery.receipt, 0));
      log.info("stage stopped for drain; message released for another worker");
      return "released";
    }
    return handleFailure(options, job, message, delivery, e, log, now, io);
  } finally {
    clearInterval(cancelWatch);
    options.drainSignal?.removeEventListener("abort", onDrain);
  }
}

/**
 * Tells the event sink. Every caller awaits it before acknowledging the message (terminal events)
 * or going on (started), so an event is lost only if the worker dies between the stored transition
 * and the sink — and a redelivery of the finishing message then tells it again (at least once).
 */
async function emit(
  options: StageRunnerOptions,
  type: JobEventType,
  job: JobRecord | null | undefined,
  log: Logger,
): Promise<void> {
  if (!job || !options.events) return;
  await options
    .events({ type, job, at: new Date().toISOString() })
    .catch((e) => log.warn({ err: describeError(e), event: type }, "job event not delivered"));
}

const TERMINAL_EVENTS: Partial<Record<JobRecord["status"], JobEventType>> = {
  succeeded: "succeeded",
  failed: "failed",
  canceled: "canceled",
  expired: "expired",
};

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
  io: Io,
): Promise<StageOutcome> {
  const { ports } = options;
  const queueName = queueForStage(message.kind);
  if (
    !isKilnError(error) ||
    !["latents_corrupt", "latents_missing", "latents_version_unsupported"].includes(error.code)
  ) {
    return handleFailure(options, job, message, delivery, error, log, now, io);
  }
  options.metrics?.failures.inc({ kind: message.kind, code: error.code });
  const recoveries = job.recoveries ?? 0;
  if (error.code === "latents_version_unsupported" || recoveries >= MAX_RECOVERIES) {
    log.error(
      { code: error.code, err: error.message, recoveries },
      "input latents unusable and the producing stage was re-run as often as allowed; the job fails",
    );
    await io("fail job", () => failJob(options, job, error, now, log));
    await io("ack", () => ports.queue.ack(queueName, delivery.receipt));
    return "failed";
  }
  log.warn({ code: error.code, err: error.message }, "input latents unusable; re-running the producing stage");
  await io("delete latents", () => ports.blobs.delete(message.inputKey!));
  const producer = job.plan.stages[message.stage - 1]!;
  // Progress goes back to the producer, so its message is not taken for a stale copy.
  const updated = await io("record recovery", () =>
    ports.jobs.update(
      job.id,
      { version: job.version, status: ["running"] },
      {
        recoveries: recoveries + 1,
        progress: { stage: producer.index, stageKind: producer.kind, step: 0, steps: 0 },
        stageTimings: job.stageTimings.filter((t) => t.stage < producer.index),
      },
    ),
  );
  if (updated)
    await io("enqueue producer", () =>
      enqueueStage(ports.queue, stageMessage(job.id, job.plan, producer.index, message.traceparent)),
    );
  await io("ack", () => ports.queue.ack(queueName, delivery.receipt));
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
  io: Io,
): Promise<StageOutcome> {
  const { ports } = options;
  const queueName = queueForStage(message.kind);
  const code = isKilnError(error) ? error.code : "stage_error";
  options.metrics?.failures.inc({ kind: message.kind, code });
  const permanent = isKilnError(error) && !error.retryable;
  if (permanent) {
    log.error({ code, err: describeError(error) }, "stage failed; the job fails (retrying cannot help)");
    await io("fail job", () => failJob(options, job, error as KilnError, now, log));
    await io("ack", () => ports.queue.ack(queueName, delivery.receipt));
    return "failed";
  }
  if (delivery.receiveCount >= options.maxReceives) {
    log.error(
      { code, err: describeError(error) },
      "stage failed on its last allowed delivery; the job fails and the message goes to the dead-letter queue",
    );
    const failure = new KilnError(
      "stage_failed_repeatedly",
      `Stage ${message.stage} (${message.kind}) failed on all ${delivery.receiveCount} attempts; last error: ${describeError(error)}. An operator can re-run it with \`kiln dlq replay\` once the cause is fixed.`,
    );
    await io("fail job", () => failJob(options, job, failure, now, log));
    await io("release", () => ports.queue.release(queueName, delivery.receipt, 0));
    return "failed";
  }
  const backoff = Math.min(60, 2 ** (delivery.receiveCount - 1));
  log.warn({ code, err: describeError(error), retryInSeconds: backoff }, "stage failed; it will be retried");
  await io("release", () => ports.queue.release(queueName, delivery.receipt, backoff));
  return "retry";
}

async function failJob(
  options: StageRunnerOptions,
  job: JobRecord,
  error: KilnError,
  now: () => Date,
  log: Logger,
): Promise<void> {
  const failed = await options.ports.jobs.update(
    job.id,
    { status: ["queued", "running"] },
    {
      status: "failed",
      finishedAt: now().toISOString(),
      error: { code: error.code, message: error.message },
    },
  );
  await emit(options, "failed", failed, log);
}

async function finishAs(
  options: StageRunnerOptions,
  job: JobRecord,
  status: "canceled",
  now: () => Date,
  log: Logger,
): Promise<void> {
  const canceled = await options.ports.jobs.update(
    job.id,
    { status: ["queued", "running"] },
    {
      status,
      finishedAt: now().toISOString(),
      error: { code: "canceled", message: "The job was canceled at its owner's request." },
    },
  );
  await emit(options, status, canceled, log);
}
