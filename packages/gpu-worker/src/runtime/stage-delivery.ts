import {
  blobKeys,
  decodeLatents,
  describeError,
  encodeLatents,
  enqueueStage,
  isKilnError,
  isOverdue,
  isTerminal,
  type JobEventType,
  type JobImage,
  type JobRecord,
  type JobTransition,
  jobTransitions,
  KilnError,
  type Latents,
  queueForStage,
  type QueueMessage,
  retryTransient,
  type StageMessage,
  stageMessage,
  type StagePlan,
  tellDueEvents,
  tellEvent,
} from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";

import type { StageResult } from "../engine/sdxl-pipeline.js";
import { BestEffortWrites } from "./best-effort-writes.js";
import type { StageOutcome, StageRunnerOptions } from "./stage-runner.js";

/** How many times a stage re-runs its producer after finding the input latents missing or corrupt. */
const MAX_RECOVERIES = 2;

class StageStop extends Error {
  constructor(readonly reason: "canceled" | "drain" | "superseded") {
    super(reason);
  }
}

type StopReason = StageStop["reason"];

/** A stage's timing as recorded on the job when it ends. */
interface StageTiming {
  stage: number;
  kind: StagePlan["kind"];
  worker: string;
  startedAt: string;
  finishedAt: string;
  seconds: number;
}

const TERMINAL_EVENTS: Partial<Record<JobRecord["status"], JobEventType>> = {
  succeeded: "succeeded",
  failed: "failed",
  canceled: "canceled",
  expired: "expired",
};

/**
 * One delivery of one stage message, from claim to acknowledgement:
 * `run → precheck → execute → handOver | finish`, with `onStopped` (cancel, drain) and `onFailed`
 * (errors) as the other ways out. The job only moves through conditional transitions and the
 * message is acknowledged only once the stage's effects are durable.
 */
export class StageDelivery {
  private readonly log: Logger;
  private readonly queueName: string;
  private readonly bestEffort: BestEffortWrites;
  /** The job as this delivery last read or wrote it. */
  private job!: JobRecord;
  private lastProgress = 0;
  /** Progress writes are chained, so they land in order and all before the hand-over or the finish. */
  private progressWrites: Promise<void> = Promise.resolve();
  /** Settles once this stage's `running` transition was written (or failed). */
  private started: Promise<unknown> = Promise.resolve();
  /** Stops the stage's computation (cancel, drain, superseded). */
  private stop?: AbortController;

  constructor(
    private readonly options: StageRunnerOptions,
    private readonly delivery: QueueMessage,
    private readonly message: StageMessage,
  ) {
    this.queueName = queueForStage(message.kind, message.lane, message.route);
    this.log = options.logger.child({
      jobId: message.jobId,
      stage: message.stage,
      kind: message.kind,
      attempt: delivery.receiveCount,
    });
    this.bestEffort = options.bestEffort ??= new BestEffortWrites(options.logger);
  }

  async run(): Promise<StageOutcome> {
    const heartbeat = setInterval(
      () =>
        void this.bestEffort.run(
          "extend the message's visibility",
          () => this.options.ports.queue.extend(this.queueName, this.delivery.receipt, this.options.visibilitySeconds),
          this.log,
        ),
      Math.max(1000, (this.options.visibilitySeconds * 1000) / 3),
    );
    try {
      const checked = await this.precheck();
      const outcome = typeof checked === "string" ? checked : await this.execute(checked.stage, checked.prefetched);
      this.options.metrics?.stageRuns.inc({ kind: this.message.kind, outcome });
      return outcome;
    } finally {
      clearInterval(heartbeat);
    }
  }

  /**
   * Reads the job and decides whether this delivery has anything to compute: the job may be gone,
   * ended, canceled, past its deadline, moved past this stage, or this stage's output may already
   * be stored. The input latents are fetched beside the job read: on a hand-over both are on the
   * critical path.
   */
  private async precheck(): Promise<StageOutcome | { stage: StagePlan; prefetched?: Promise<Uint8Array | null> }> {
    const { ports } = this.options;
    const message = this.message;
    const inputKey = message.inputKey;
    const prefetched = inputKey ? this.io("read latents", () => ports.blobs.get(inputKey)) : undefined;
    prefetched?.catch(() => undefined);
    const job = await this.io("get job", () => ports.jobs.get(message.jobId));
    if (!job) {
      this.log.warn("job no longer exists (expired or deleted); dropping its stage message");
      return this.ackWith("skipped");
    }
    this.job = job;
    const told = await this.io("tell due events", () => this.tellDue(job));
    if (isTerminal(job.status)) {
      this.log.info({ status: job.status }, "job already ended; acknowledging a duplicate or late stage message");
      // This very message (not a copy) ended the job and came back: its earlier delivery may have
      // died between storing the transition and telling the sink.
      const terminal = TERMINAL_EVENTS[job.status]!;
      if (this.delivery.receiveCount > 1 && job.progress?.stage === message.stage && !told.includes(terminal))
        await this.emit(terminal, job, false);
      return this.ackWith("skipped");
    }
    const stage = job.plan.stages[message.stage];
    if (!stage || stage.kind !== message.kind) {
      await this.failJob(
        new KilnError(
          "stage_message_mismatch",
          `The stage message names stage ${message.stage} (${message.kind}), which the job's plan does not have.`,
        ),
      );
      return this.ackWith("failed");
    }
    if (job.progress && job.progress.stage > stage.index) {
      // A later stage has started, so this stage's output was handed over: a duplicate or late copy.
      this.log.info(
        { progressStage: job.progress.stage },
        "a later stage already started; acknowledging a stale stage message",
      );
      return this.ackWith("stale");
    }
    const ended = await this.endBeforeStart();
    if (ended) return ended;
    this.options.metrics?.queueWait.observe(
      { kind: stage.kind },
      Math.max(0, (Date.now() - this.delivery.sentAt) / 1000),
    );
    if (await this.outputAlreadyStored(stage)) return this.ackWith("handed-over");
    return { stage, prefetched };
  }

  /** A job canceled or past its start-by deadline ends here without computing. */
  private async endBeforeStart(): Promise<StageOutcome | undefined> {
    const job = this.job;
    if (job.cancelRequested) {
      await this.io("cancel job", () => this.cancel(job));
      return this.ackWith("canceled");
    }
    if (isOverdue(job, this.at())) {
      await this.io("expire job", () => this.move(jobTransitions.expire(job, this.at())));
      return this.ackWith("expired");
    }
    return undefined;
  }

  /**
   * A hand-over stage whose latents are already stored and verify was finished by an earlier
   * delivery that died before acknowledging: re-send the next stage instead of recomputing. Only a
   * stage that some delivery started (it has a timing) can have output, so first runs skip the read.
   */
  private async outputAlreadyStored(stage: StagePlan): Promise<boolean> {
    const job = this.job;
    if (stage.output !== "latents" || !job.stageTimings.some((t) => t.stage === stage.index)) return false;
    const existing = await this.readLatents(this.message.outputKey).catch(() => undefined);
    if (!existing || existing.meta.jobId !== job.id || existing.meta.stage !== stage.index) return false;
    this.log.info("stage output already stored; re-sending the next stage without recomputing");
    await this.enqueueNext(stage);
    return true;
  }

  /**
   * Starts computing while the `running` transition is written; nothing the stage produces is
   * stored before that transition has succeeded.
   */
  private async execute(stage: StagePlan, prefetched?: Promise<Uint8Array | null>): Promise<StageOutcome> {
    const startedAt = this.nowIso();
    const transition = this.start(stage, startedAt);
    this.started = transition.catch(() => undefined);
    let input: Latents | undefined;
    if (prefetched) {
      try {
        input = await this.readInput(stage, prefetched);
      } catch (e) {
        const running = await transition;
        if (!running) return this.superseded();
        this.job = running;
        return this.recoverProducer(e);
      }
    }
    const stop = new AbortController();
    this.stop = stop;
    const onDrain = () => stop.abort(new StageStop("drain"));
    this.options.drainSignal?.addEventListener("abort", onDrain, { once: true });
    if (this.options.drainSignal?.aborted) onDrain();
    const cancelWatch = this.watchForCancel(stop);
    const stageStarted = performance.now();
    try {
      const execution = this.options.execute(this.job, stage, input, {
        signal: stop.signal,
        logger: this.log,
        gpu: this.options.gpu,
        onStep: (step, steps) => this.onStep(stage, step, steps),
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
      if (!running) return await this.superseded();
      if (!this.job.startedAt) await this.emit("started", running);
      this.job = running;
      const result = await execution;
      await this.progressWrites;
      const timing = this.timing(stage, startedAt, stageStarted, result);
      return result.kind === "latents"
        ? await this.handOver(stage, result.latents, timing, result.steps)
        : await this.finish(stage, result, timing);
    } catch (e) {
      const reason = stop.signal.aborted && stop.signal.reason instanceof StageStop ? stop.signal.reason.reason : null;
      return reason ? this.onStopped(reason, stage, e) : this.onFailed(e);
    } finally {
      clearInterval(cancelWatch);
      this.options.drainSignal?.removeEventListener("abort", onDrain);
    }
  }

  /** The conditional `queued|running → running(stage)` transition that claims the job for this stage. */
  private async start(stage: StagePlan, startedAt: string): Promise<JobRecord | null> {
    const { ports, workerId } = this.options;
    const claim = (job: JobRecord) => {
      const { condition, patch } = jobTransitions.start(job, stage, workerId, new Date(startedAt));
      return this.io("start stage", () => ports.jobs.update(job.id, condition, patch));
    };
    const running = await claim(this.job);
    if (running || this.job.status !== "queued") return running;
    // On the AWS family the submit marks the job `enqueuedAt` after sending stage 0, which bumps the version: a
    // worker that read the job before the mark lost its claim to it and the delivery was wasted (released, received
    // again, one receive of the job's budget spent). A job still queued was not started by anyone: claim it from
    // the fresh record. Started, canceled or ended, it was moved by someone else and this delivery is superseded.
    const fresh = await this.io("get job", () => ports.jobs.get(this.job.id));
    if (!fresh || fresh.status !== "queued" || fresh.cancelRequested || isOverdue(fresh, this.at())) return null;
    return claim(fresh);
  }

  /** Only the read is retried: a blob that fails to decode is corrupt, not unreachable. */
  private async readInput(stage: StagePlan, prefetched: Promise<Uint8Array | null>): Promise<Latents> {
    const inputKey = this.message.inputKey;
    const bytes = await prefetched;
    const input = bytes ? await decodeLatents(bytes) : undefined;
    if (!input)
      throw new KilnError("latents_missing", `The latents of stage ${stage.index - 1} (${inputKey}) are missing.`, {
        retryable: true,
      });
    if (input.meta.jobId !== this.job.id)
      throw new KilnError("latents_corrupt", `The latents at ${inputKey} belong to job ${input.meta.jobId}.`, {
        retryable: true,
      });
    return input;
  }

  private watchForCancel(stop: AbortController): ReturnType<typeof setInterval> {
    const jobId = this.job.id;
    return setInterval(async () => {
      const fresh = await this.options.ports.jobs.get(jobId).catch(() => null);
      if (fresh?.cancelRequested || (fresh && isTerminal(fresh.status))) stop.abort(new StageStop("canceled"));
    }, this.options.cancelPollMs ?? 1000);
  }

  private onStep(stage: StagePlan, step: number, steps: number): void | Promise<void> {
    this.options.metrics?.steps.inc({ kind: stage.kind });
    this.recordProgress(stage, step, steps, false);
    if (!this.options.pause) return;
    // A stage paused by a fault test records its progress first, so the test sees where it stands. The
    // stage computes while its `running` transition is written; a held stage waits for that write, so the
    // job it holds is `running` with this step recorded (tiny models reach step 3 before a dynalite write returns).
    let held = false;
    return this.options
      .pause(`stage${stage.index}-step${step}`, { jobId: this.job.id, worker: this.options.workerId }, async () => {
        held = true;
        await this.started;
        this.recordProgress(stage, step, steps, true);
        return this.progressWrites;
      })
      .then(() => (held ? this.stopIfCanceled() : undefined));
  }

  /**
   * A stage let go from a pause point looks at its job at once instead of at the next cancel poll: a
   * test that canceled the job while the stage was held sees it stop before the next step, exactly.
   */
  private async stopIfCanceled(): Promise<void> {
    const fresh = await this.options.ports.jobs.get(this.job.id).catch(() => null);
    if (fresh?.cancelRequested || (fresh && isTerminal(fresh.status))) this.stop?.abort(new StageStop("canceled"));
  }

  private recordProgress(stage: StagePlan, step: number, steps: number, always: boolean): void {
    const t = Date.now();
    // `always` (a fault test's pause point) writes even while the best-effort gate is shut after a store
    // failure: the test must see where the held stage stands, and the gate would hide it for seconds.
    if (!always && !this.bestEffort.open) return;
    if (!always && step !== steps && t - this.lastProgress < (this.options.progressIntervalMs ?? 250)) return;
    this.lastProgress = t;
    const progress = { stage: stage.index, stageKind: stage.kind, step, steps };
    const jobId = this.job.id;
    const write = () => this.options.ports.jobs.setProgress(jobId, progress);
    this.progressWrites = this.progressWrites.then(async () => {
      if (!always) {
        await this.bestEffort.run("record progress", write, this.log);
        return;
      }
      await write().catch((e) => this.log.warn({ err: String(e) }, "progress at a pause point not recorded"));
    });
    // Not a transition's event (progress is never in the outbox), so never held at `event:before-tell`:
    // a fault test holding there must find the process between a stored transition and its event.
    void this.emit("progress", { ...this.job, progress }, false);
  }

  private timing(stage: StagePlan, startedAt: string, stageStarted: number, result: StageResult): StageTiming {
    const timing = {
      stage: stage.index,
      kind: stage.kind,
      worker: this.options.workerId,
      startedAt,
      finishedAt: this.nowIso(),
      seconds: (performance.now() - stageStarted) / 1000,
    };
    this.options.metrics?.unetSeconds.observe({ kind: stage.kind }, result.unetSeconds);
    if (result.steps > 0 && timing.seconds > 0)
      this.options.metrics?.stepsPerSecond.set({ kind: stage.kind }, result.steps / timing.seconds);
    return timing;
  }

  private timingsWith(timing: StageTiming): JobRecord["stageTimings"] {
    return [...this.job.stageTimings.filter((t) => t.stage !== timing.stage), timing];
  }

  /** Stores the latents and the stage's timing, then sends the next stage and acknowledges this one. */
  private async handOver(
    stage: StagePlan,
    latents: Latents,
    timing: StageTiming,
    steps: number,
  ): Promise<StageOutcome> {
    const { ports, metrics } = this.options;
    const handoff = performance.now();
    const blob = await encodeLatents(latents);
    const jobId = this.job.id;
    // Both must be stored before the next stage may be sent; neither depends on the other.
    await Promise.all([
      this.io("put latents", () => ports.blobs.put(this.message.outputKey, blob)),
      this.io("record hand-over", () =>
        ports.jobs.update(jobId, { status: ["running"] }, { stageTimings: this.timingsWith(timing) }),
      ),
    ]);
    await this.enqueueNext(stage);
    metrics?.handoffSeconds.observe({ kind: stage.kind }, (performance.now() - handoff) / 1000);
    await this.ack();
    metrics?.stageSeconds.observe({ kind: stage.kind, outcome: "handed-over" }, timing.seconds);
    this.log.info({ seconds: timing.seconds, steps }, "stage done; latents handed over");
    return "handed-over";
  }

  /** The last stage: stores the images, moves the job to `succeeded`, tells the sink, acknowledges. */
  private async finish(
    stage: StagePlan,
    result: Extract<StageResult, { kind: "images" }>,
    timing: StageTiming,
  ): Promise<StageOutcome> {
    const { ports, metrics } = this.options;
    const job = this.job;
    const images: JobImage[] = [];
    for (let i = 0; i < result.images.length; i++) {
      const image = result.images[i]!;
      const key = blobKeys.image(job.id, i, image.format === "jpeg" ? "jpg" : image.format);
      await this.io("put image", () => ports.blobs.put(key, image.bytes, { contentType: image.contentType }));
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
    const done = await this.io("finish job", () =>
      this.move(
        jobTransitions.succeed(
          job,
          {
            images,
            stageTimings: this.timingsWith(timing),
            progress: { stage: stage.index, stageKind: stage.kind, step: result.steps, steps: result.steps },
          },
          this.at(),
        ),
      ),
    );
    await this.ack();
    metrics?.stageSeconds.observe({ kind: stage.kind, outcome: "succeeded" }, timing.seconds);
    if (!done) {
      this.log.info("job was finished or canceled by someone else while this stage ran; its images are not attached");
      return "skipped";
    }
    this.log.info({ seconds: timing.seconds, steps: result.steps, images: images.length }, "job succeeded");
    return "succeeded";
  }

  /** The stage was stopped from outside: the job was canceled, or the worker's drain grace ran out. */
  private async onStopped(reason: StopReason, stage: StagePlan, error: unknown): Promise<StageOutcome> {
    const { ports } = this.options;
    const job = this.job;
    if (reason === "canceled") {
      const fresh = await this.io("get job", () => ports.jobs.get(job.id));
      if (fresh && !isTerminal(fresh.status)) await this.io("cancel job", () => this.cancel(fresh));
      await this.ack();
      this.log.info("stage stopped: the job was canceled");
      return "canceled";
    }
    if (reason === "drain") {
      if (stage.index === 0) {
        // Nothing of the job is done: it is queued again (for its position and waiting reason), not running.
        await this.io("requeue job", () => this.move(jobTransitions.requeue(job)));
      }
      await this.release(0);
      this.log.info("stage stopped for drain; message released for another worker");
      return "released";
    }
    return this.onFailed(error);
  }

  /** The stage threw: fail the job (permanent error, last delivery) or release the message for a retry. */
  private async onFailed(error: unknown): Promise<StageOutcome> {
    const { message, delivery } = this;
    const code = isKilnError(error) ? error.code : "stage_error";
    this.options.metrics?.failures.inc({ kind: message.kind, code });
    if (isKilnError(error) && !error.retryable) {
      this.log.error({ code, err: describeError(error) }, "stage failed; the job fails (retrying cannot help)");
      await this.io("fail job", () => this.failJob(error));
      await this.ack();
      return "failed";
    }
    if (delivery.receiveCount >= this.options.maxReceives) {
      this.log.error(
        { code, err: describeError(error) },
        "stage failed on its last allowed delivery; the job fails and the message goes to the dead-letter queue",
      );
      const failure = new KilnError(
        "stage_failed_repeatedly",
        `Stage ${message.stage} (${message.kind}) failed on all ${delivery.receiveCount} attempts; last error: ${describeError(error)}. An operator can re-run it with \`kiln dlq replay\` once the cause is fixed.`,
      );
      await this.io("fail job", () => this.failJob(failure));
      await this.release(0);
      return "failed";
    }
    const backoff = Math.min(60, 2 ** (delivery.receiveCount - 1));
    this.log.warn({ code, err: describeError(error), retryInSeconds: backoff }, "stage failed; it will be retried");
    await this.release(backoff);
    return "retry";
  }

  /**
   * The input latents are missing or fail their checksum: never use them. Delete them and re-run the
   * producing stage (bounded), or fail the job with the code that says why.
   */
  private async recoverProducer(error: unknown): Promise<StageOutcome> {
    const { ports } = this.options;
    const { job, message } = this;
    if (
      !isKilnError(error) ||
      !["latents_corrupt", "latents_missing", "latents_version_unsupported"].includes(error.code)
    ) {
      return this.onFailed(error);
    }
    this.options.metrics?.failures.inc({ kind: message.kind, code: error.code });
    const recoveries = job.recoveries ?? 0;
    if (error.code === "latents_version_unsupported" || recoveries >= MAX_RECOVERIES) {
      this.log.error(
        { code: error.code, err: error.message, recoveries },
        "input latents unusable and the producing stage was re-run as often as allowed; the job fails",
      );
      await this.io("fail job", () => this.failJob(error));
      await this.ack();
      return "failed";
    }
    this.log.warn({ code: error.code, err: error.message }, "input latents unusable; re-running the producing stage");
    await this.io("delete latents", () => ports.blobs.delete(message.inputKey!));
    const producer = job.plan.stages[message.stage - 1]!;
    // Progress goes back to the producer, so its message is not taken for a stale copy.
    const updated = await this.io("record recovery", () =>
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
      await this.io("enqueue producer", () =>
        enqueueStage(ports.queue, stageMessage(job.id, job.plan, producer.index, message.traceparent)),
      );
    await this.ack();
    return "retry";
  }

  /** Someone else moved the job (cancel, a concurrent delivery): start over from the fresh record. */
  private async superseded(): Promise<StageOutcome> {
    await this.release(0);
    return "released";
  }

  private async failJob(error: KilnError): Promise<void> {
    await this.move(jobTransitions.fail(this.job, { code: error.code, message: error.message }, this.at()));
  }

  private async cancel(job: JobRecord): Promise<void> {
    await this.move(jobTransitions.cancel(job, this.at()));
  }

  /** Stores a transition of the job state machine and tells its event (awaited: see `emit`). */
  private async move(transition: JobTransition): Promise<JobRecord | null> {
    const stored = await this.options.ports.jobs.update(this.job.id, transition.condition, transition.patch);
    if (transition.event) await this.emit(transition.event, stored);
    return stored;
  }

  /**
   * Tells the event sink. Every caller awaits it before acknowledging the message (terminal events)
   * or going on (started), so an event is lost only if the worker dies between the stored transition
   * and the sink — and a redelivery of the finishing message then tells it again (at least once).
   */
  private async emit(type: JobEventType, job: JobRecord | null | undefined, fresh = true): Promise<void> {
    if (!job || !this.options.events) return;
    // A fresh transition's event may be held by a fault test between the stored write and the sink.
    await tellEvent(this.options.ports.jobs, this.options.events, type, job, {
      pause: fresh ? this.options.pause : undefined,
      onError: (e) =>
        this.log.warn({ err: describeError(e), event: type }, "job event not delivered; it stays due on the job"),
    });
  }

  /** Event outbox: events a crash left untold on the record are told by whoever next handles the job. */
  private async tellDue(job: JobRecord): Promise<JobEventType[]> {
    if (!job.eventsDue?.length || !this.options.events) return [];
    const told = await tellDueEvents(this.options.ports.jobs, this.options.events, job, (e, type) =>
      this.log.warn({ err: describeError(e), event: type }, "due job event not delivered; it stays due"),
    );
    if (told.length) this.log.info({ events: told }, "told job events a crash had left untold");
    return told;
  }

  private enqueueNext(stage: StagePlan): Promise<unknown> {
    const { job, message } = this;
    return this.io("enqueue next stage", () =>
      enqueueStage(this.options.ports.queue, stageMessage(job.id, job.plan, stage.index + 1, message.traceparent)),
    );
  }

  private async readLatents(key: string): Promise<Latents | undefined> {
    const bytes = await this.options.ports.blobs.get(key);
    return bytes ? decodeLatents(bytes) : undefined;
  }

  private async ackWith(outcome: StageOutcome): Promise<StageOutcome> {
    await this.ack();
    return outcome;
  }

  private ack(): Promise<void> {
    return this.io("ack", () => this.options.ports.queue.ack(this.queueName, this.delivery.receipt));
  }

  private release(delaySeconds: number): Promise<void> {
    return this.io("release", () =>
      this.options.ports.queue.release(this.queueName, this.delivery.receipt, delaySeconds),
    );
  }

  /** A queue or store call, retried while it fails transiently. */
  private io<T>(what: string, op: () => Promise<T>): Promise<T> {
    return retryTransient(op, {
      maxMs: this.options.ioRetryMs ?? 30_000,
      onRetry: (e, attempt, delayMs) => {
        this.options.metrics?.ioRetries.inc({ operation: what });
        this.log.warn(
          { err: describeError(e), operation: what, attempt, retryInMs: delayMs },
          "queue or store call failed transiently; retrying",
        );
      },
    });
  }

  private at(): Date {
    return this.options.now?.() ?? new Date();
  }

  private nowIso(): string {
    return this.at().toISOString();
  }
}
