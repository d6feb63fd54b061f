import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

/** Prometheus metrics of one worker, served at `GET /metrics`. */
export function createWorkerMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const seconds = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
  return {
    registry,
    queueWait: new Histogram({
      name: "kiln_queue_wait_seconds",
      help: "Time a stage message waited in its queue before this worker claimed it",
      labelNames: ["kind"],
      buckets: seconds,
      registers: [registry],
    }),
    stageSeconds: new Histogram({
      name: "kiln_stage_seconds",
      help: "Wall time of a stage on this worker",
      labelNames: ["kind", "outcome"],
      buckets: seconds,
      registers: [registry],
    }),
    unetSeconds: new Histogram({
      name: "kiln_unet_seconds",
      help: "Time inside UNet session.run per stage",
      labelNames: ["kind"],
      buckets: seconds,
      registers: [registry],
    }),
    handoffSeconds: new Histogram({
      name: "kiln_handoff_seconds",
      help: "Latents put + next-stage enqueue",
      labelNames: ["kind"],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers: [registry],
    }),
    steps: new Counter({
      name: "kiln_denoise_steps_total",
      help: "Denoising steps run",
      labelNames: ["kind"],
      registers: [registry],
    }),
    failures: new Counter({
      name: "kiln_stage_failures_total",
      help: "Stage failures by code",
      labelNames: ["kind", "code"],
      registers: [registry],
    }),
    stageRuns: new Counter({
      name: "kiln_stage_deliveries_total",
      help: "Stage deliveries handled, by outcome (handed-over, succeeded, stale, retry, released, …)",
      labelNames: ["kind", "outcome"],
      registers: [registry],
    }),
    stepsPerSecond: new Gauge({
      name: "kiln_steps_per_second",
      help: "Denoising steps per second of the last stage run (wall time of the stage)",
      labelNames: ["kind"],
      registers: [registry],
    }),
    ioRetries: new Counter({
      name: "kiln_io_retries_total",
      help: "Queue or store calls retried after a transient failure",
      labelNames: ["operation"],
      registers: [registry],
    }),
    pollErrors: new Counter({
      name: "kiln_poll_errors_total",
      help: "Receive calls that failed",
      labelNames: ["kind"],
      registers: [registry],
    }),
    lastPoll: new Gauge({
      name: "kiln_last_poll_timestamp_seconds",
      help: "When this worker last received from a queue successfully (epoch seconds)",
      registers: [registry],
    }),
    busy: new Gauge({ name: "kiln_stages_running", help: "Stages running on this worker now", registers: [registry] }),
    // Cold start: model sync from S3 and time to ready.
    modelSyncSeconds: new Gauge({
      name: "kiln_model_sync_seconds",
      help: "Wall time of the boot's model sync from S3, per model role (0 bytes fetched when the disk had it)",
      labelNames: ["role"],
      registers: [registry],
    }),
    modelSyncBytes: new Gauge({
      name: "kiln_model_sync_downloaded_bytes",
      help: "Bytes the boot's model sync fetched, per model role",
      labelNames: ["role"],
      registers: [registry],
    }),
    readySeconds: new Gauge({
      name: "kiln_worker_ready_seconds",
      help: "Seconds from process start to polling (model sync and session loads included)",
      registers: [registry],
    }),
    // Batching (KILN_WORKER_BATCH).
    claimedTogether: new Histogram({
      name: "kiln_stages_claimed_together",
      help: "Stage messages taken by one receive and run as one group (1: alone); with KILN_WORKER_BATCH > 1, how often batching happens",
      labelNames: ["kind"],
      buckets: [1, 2, 3, 4, 6, 8, 10],
      registers: [registry],
    }),
  };
}

export type WorkerMetrics = ReturnType<typeof createWorkerMetrics>;
