import os from "node:os";

import {
  describeError,
  failDeadLetteredJobs,
  type JobEventSink,
  LANES,
  type PausePoint,
  type Ports,
  queueForStage,
  type QueueMessage,
  reconcileQueuedJobs,
  redeliverDueEvents,
  type StageKind,
} from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";

import { UnetGroup, type UnetGroupSeat } from "../engine/unet-group.js";
import { BestEffortWrites } from "./best-effort-writes.js";
import { createWorkerMetrics, type WorkerMetrics } from "./metrics.js";
import { DEFAULT_PIPELINE_LIMITS, type PipelineEntry, StagePipeline } from "./pipeline/stage-pipeline.js";
import { PollBeat } from "./poll-beat.js";
import type { StageExecutor } from "./stage-executor.js";
import { runStageMessage, type StageOutcome } from "./stage-runner.js";

export interface WorkerOptions {
  ports: Ports;
  execute: StageExecutor;
  logger: Logger;
  /** Stage kinds this worker serves (`KILN_STAGES`). */
  stages: StageKind[];
  /** Fault tests' pause points (`stage<k>-step<n>`); absent in production. */
  pause?: PausePoint;
  concurrency: number;
  visibilitySeconds: number;
  maxReceives: number;
  /** Long-poll wait per receive call. */
  pollWaitSeconds?: number;
  /** How often to sweep the dead-letter queues for jobs to fail. */
  deadLetterSweepMs?: number;
  cancelPollMs?: number;
  /** How long a failing queue or store call is retried in place (see StageRunnerOptions.ioRetryMs). */
  ioRetryMs?: number;
  /** Registry writes are coalesced to at most one per this many ms (plus one per change of load). */
  beatIntervalMs?: number;
  workerId?: string;
  metrics?: WorkerMetrics;
  events?: JobEventSink;
  /**
   * Resolution buckets, KILN_BUCKET_ROUTING=lanes: the bucket queues this worker reads besides the
   * shared ones (the buckets it holds engines for; every configured bucket for a worker without
   * engines), and every configured bucket, whose dead letters it sweeps. Absent: shared queues only.
   */
  buckets?: { take: readonly string[]; all: readonly string[] };
  /**
   * Pipelined (`KILN_WORKER_PIPELINE`): the next message is claimed and its prompt encoded while a stage is on
   * the GPU, and results are encoded, stored and acknowledged while the next stage is; `concurrency` stages
   * hold the GPU at once. Off: each loop runs one stage from claim to acknowledgement before the next.
   */
  pipelined?: boolean;
  /**
   * Batching (`KILN_WORKER_BATCH`): up to this many messages are claimed at once from a queue that holds several,
   * and their stages denoise as one UNet batch where they are compatible (engine/unet-group.ts). Each message
   * stays its own delivery. 1 (the default): one message at a time.
   */
  batch?: number;
}

export interface WorkerStatus {
  workerId: string;
  stages: StageKind[];
  /** Bucket queues it reads (`lanes` routing); absent: the shared queues only. */
  buckets?: string[];
  state: "starting" | "running" | "draining" | "stopped";
  lastPollAt?: string;
  lastPollError?: string;
  current: { jobId: string; stage: number; kind: StageKind; since: string }[];
  completed: Partial<Record<StageOutcome, number>>;
}

/**
 * The worker runtime: claims stage messages (refine before base, so work in progress finishes before
 * new work starts), runs them with a visibility heartbeat, and drains on SIGTERM — stop polling,
 * let running stages finish within the grace period, else stop them at the next step and release
 * their messages for another worker.
 */
/** How often a worker tells the registry it is alive while busy (it beats on every poll when idle). */
export const BUSY_BEAT_MS = 10_000;
/** Pipelined and busy with empty queues: how often the queues are polled (without waiting) for work to claim ahead. */
const BUSY_POLL_MS = 250;

export class Worker {
  readonly metrics: WorkerMetrics;
  readonly status: WorkerStatus;
  private readonly pollAbort = new AbortController();
  private readonly drainAbort = new AbortController();
  private loops: Promise<void>[] = [];
  private sweeper?: NodeJS.Timeout;
  private beating?: NodeJS.Timeout;
  private readonly beat: PollBeat;
  private readonly bestEffort: BestEffortWrites;
  private readonly pipeline?: StagePipeline;

  constructor(private readonly options: WorkerOptions) {
    this.metrics = options.metrics ?? createWorkerMetrics();
    this.status = {
      workerId: options.workerId ?? `${os.hostname()}-${process.pid}`,
      stages: options.stages,
      ...(options.buckets ? { buckets: [...options.buckets.take] } : {}),
      state: "starting",
      current: [],
      completed: {},
    };
    this.bestEffort = new BestEffortWrites(options.logger);
    this.beat = new PollBeat(options.ports.workers, this.status, this.bestEffort, options.beatIntervalMs);
    if (options.pipelined)
      this.pipeline = new StagePipeline({ ...DEFAULT_PIPELINE_LIMITS, gpuSlots: options.concurrency }, options.pause);
  }

  start(): void {
    this.status.state = "running";
    // Pipelined, one loop claims for the GPU's `concurrency` slots; else each loop runs one stage at a time.
    const loops = this.pipeline ? 1 : this.options.concurrency;
    for (let i = 0; i < loops; i++) this.loops.push(this.loop());
    const sweep = () =>
      failDeadLetteredJobs(
        this.options.ports,
        this.options.stages,
        new Date(),
        this.options.events,
        this.options.buckets?.all,
      )
        .then(
          (ids) =>
            ids.length &&
            this.options.logger.warn({ jobIds: ids }, "failed jobs whose stage messages were dead-lettered"),
        )
        .then(() => reconcileQueuedJobs(this.options.ports))
        .then(
          (ids) =>
            ids.length &&
            this.options.logger.warn(
              { jobIds: ids },
              "re-sent stage 0 of queued jobs whose submit died before marking them",
            ),
        )
        // Event outbox: events a crash left due on a job no stage message will bring back.
        .then(() =>
          this.options.events
            ? redeliverDueEvents(this.options.ports.jobs, this.options.events, {
                onError: (e, event) =>
                  this.options.logger.warn({ err: describeError(e), event }, "due job event not delivered"),
              })
            : [],
        )
        .then(
          (ids) => ids.length && this.options.logger.warn({ jobIds: ids }, "told job events a crash had left untold"),
        )
        .catch((e) => this.options.logger.warn({ err: describeError(e) }, "dead-letter or outbox sweep failed"));
    this.sweeper = setInterval(sweep, this.options.deadLetterSweepMs ?? 15_000);
    // A worker running a long stage does not poll: it beats anyway, so one killed mid-stage stops
    // counting as busy within a minute (the API's BUSY_LIVENESS_MS) instead of lingering.
    this.beating = setInterval(() => this.beat.record(this.status.current.length), BUSY_BEAT_MS);
    void sweep();
  }

  /** Stops polling and waits for running stages; after `graceSeconds` they are stopped and released. */
  async drain(graceSeconds: number): Promise<void> {
    if (this.status.state === "stopped") return;
    this.status.state = "draining";
    this.options.logger.info(
      { graceSeconds, running: this.status.current.length },
      "draining: no new work; finishing or releasing the current stages",
    );
    clearInterval(this.sweeper);
    clearInterval(this.beating);
    this.pollAbort.abort();
    // Claimed ahead but not on the GPU yet: released now, so another worker starts them without waiting for ours.
    this.pipeline?.releaseWaiting();
    const grace = setTimeout(() => {
      this.drainAbort.abort();
      this.pipeline?.stopAll();
    }, graceSeconds * 1000);
    await Promise.allSettled(this.loops);
    clearTimeout(grace);
    this.status.state = "stopped";
  }

  private async loop(): Promise<void> {
    const { ports, logger } = this.options;
    // Batch lanes: interactive queues first (refine before base), then the batch queues, so batch work
    // is taken only when no interactive stage is waiting and a person waits at most one running stage.
    const kinds = (["refine", "base"] as const).filter((k) => this.options.stages.includes(k));
    // Resolution buckets (`lanes` routing): within a lane and kind, the shared queue first, then the bucket
    // queues this worker holds, starting one further each round so that under load no bucket starves another.
    const routes = this.options.buckets?.take ?? [];
    let round = 0;
    let pollFailures = 0;
    while (!this.pollAbort.signal.aborted) {
      // Back-pressure: claim only while the pipeline has room for one more stage waiting for the GPU.
      if (this.pipeline && !(await this.pipeline.room(this.pollAbort.signal))) break;
      const turn = round++ % Math.max(1, routes.length);
      const rotated = [...routes.slice(turn), ...routes.slice(0, turn)];
      const order = LANES.flatMap((lane) =>
        kinds.flatMap((kind) => [undefined, ...rotated].map((route) => ({ kind, lane, route }))),
      );
      // An idle worker long-polls the queue new renders arrive on (the interactive lane's first-stage queue), so
      // a person's render is claimed the moment it is sent; refine and batch queues are checked between polls.
      const longPoll = order.findIndex((q) => q.lane === LANES[0] && q.kind === kinds[kinds.length - 1] && !q.route);
      let claimed = false;
      // While stages are in flight, a long poll would miss the refine stage our own hand-over sends
      // meanwhile: poll without waiting, then wait for the pipeline to change.
      const busy = (this.pipeline?.inFlight ?? 0) > 0;
      for (const [i, { kind, lane, route }] of order.entries()) {
        if (this.pollAbort.signal.aborted) break;
        const wait = i === longPoll && !busy ? (this.options.pollWaitSeconds ?? (order.length > 1 ? 1 : 10)) : 0;
        let messages;
        try {
          messages = await ports.queue.receive(queueForStage(kind, lane, route), {
            max: this.options.batch ?? 1,
            visibilitySeconds: this.options.visibilitySeconds,
            waitSeconds: wait,
            signal: this.pollAbort.signal,
          });
          const at = Date.now();
          this.status.lastPollAt = new Date(at).toISOString();
          this.status.lastPollError = undefined;
          this.metrics.lastPoll.set(at / 1000);
          pollFailures = 0;
          this.beat.record(this.status.current.length + messages.length, at);
        } catch (e) {
          if (this.pollAbort.signal.aborted) break;
          this.status.lastPollError = describeError(e);
          this.metrics.pollErrors.inc({ kind });
          // Exponential, so a fleet does not hammer a queue that is down; capped so recovery is noticed soon.
          const backoffMs = Math.min(15_000, 500 * 2 ** pollFailures++) * (0.75 + Math.random() * 0.5);
          logger.warn({ err: describeError(e), kind, retryInMs: Math.round(backoffMs) }, "receive failed; backing off");
          await sleep(backoffMs, this.pollAbort.signal);
          continue;
        }
        if (messages.length > 0) {
          claimed = true;
          if (this.pipeline) void this.runClaimed(kind, messages, this.pipeline);
          else await this.runClaimed(kind, messages);
        }
        if (claimed) break;
      }
      if (busy && !claimed) await this.pipeline!.changed(BUSY_POLL_MS, this.pollAbort.signal);
    }
    await this.pipeline?.idle();
  }

  /**
   * Runs the messages claimed in one receive from one queue. One message: as it always ran. Several (batching):
   * one place in the pipeline and one GPU turn for all, each message its own delivery (heartbeat, progress,
   * hand-over, acknowledgement), their stages denoising together through a `UnetGroup`.
   */
  private async runClaimed(kind: StageKind, messages: QueueMessage[], pipeline?: StagePipeline): Promise<void> {
    const first = messages[0]!.body as { jobId?: string; stage?: number };
    const entry: PipelineEntry | undefined = pipeline?.enter({
      jobId: String(first?.jobId),
      stage: Number(first?.stage),
      worker: this.status.workerId,
    });
    this.metrics.claimedTogether.observe({ kind }, messages.length);
    const group = messages.length > 1 ? new UnetGroup(messages.length, entry?.turn, this.options.logger) : undefined;
    if (group)
      this.options.logger.info(
        { jobIds: messages.map((m) => (m.body as { jobId?: string })?.jobId), kind },
        "claimed several stages together; their compatible stages share UNet batches",
      );
    try {
      await Promise.all(messages.map((m, i) => this.runOne(kind, m, entry, group?.seat(i))));
    } finally {
      entry?.done();
    }
  }

  /** Runs one claimed message; a store or queue failure leaves it to reappear after its visibility timeout. */
  private async runOne(kind: StageKind, message: QueueMessage, entry?: PipelineEntry, seat?: UnetGroupSeat) {
    const { ports, logger } = this.options;
    const body = message.body as { jobId?: string; stage?: number };
    const current = {
      jobId: String(body?.jobId),
      stage: Number(body?.stage),
      kind,
      since: new Date().toISOString(),
    };
    this.status.current.push(current);
    this.metrics.busy.set(this.status.current.length);
    const execute = this.options.execute;
    try {
      const outcome = await runStageMessage(
        {
          ports,
          execute: seat ? (job, stage, input, hooks) => execute(job, stage, input, { ...hooks, group: seat }) : execute,
          logger,
          metrics: this.metrics,
          workerId: this.status.workerId,
          visibilitySeconds: this.options.visibilitySeconds,
          maxReceives: this.options.maxReceives,
          cancelPollMs: this.options.cancelPollMs,
          ioRetryMs: this.options.ioRetryMs,
          bestEffort: this.bestEffort,
          drainSignal: entry?.signal ?? this.drainAbort.signal,
          gpu: seat?.gpu ?? entry?.turn,
          events: this.options.events,
          pause: this.options.pause,
        },
        message,
      );
      this.status.completed[outcome] = (this.status.completed[outcome] ?? 0) + 1;
    } catch (e) {
      logger.error(
        { err: describeError(e), jobId: current.jobId },
        "stage run failed against the queue or stores; the message will be redelivered",
      );
      seat?.leave();
      await sleep(1000, this.pollAbort.signal);
    } finally {
      // A delivery that ended without denoising (a duplicate, a cancel, a failure) no longer holds up its group.
      seat?.leave();
      seat?.gpu.release();
      this.status.current = this.status.current.filter((c) => c !== current);
      this.metrics.busy.set(this.status.current.length);
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });
}
