import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";

import { batchDepsFrom, BatchScheduler, createApp } from "@kiln/api";
import { chatDispatcherFromConfig, logChatStatus } from "@kiln/api/chat";
import { webhookEventSinkFromConfig } from "@kiln/api/config";
import { closeServer, serveOnNode, startRetentionSweep } from "@kiln/api/node";
import { WebhookDispatcher } from "@kiln/api/webhook-dispatcher";
import {
  attachEngineSessions,
  createWorkerMetrics,
  EngineStore,
  eventLogSink,
  fanOutEvents,
  type ModelSet,
  sdxlExecutor,
  startHealthServer,
  type SyncReport,
  Worker,
} from "@kiln/gpu-worker";
import { bucketId, type KilnConfig, type Ports } from "@kiln/shared";
import { filePausePoints, type Logger } from "@kiln/shared/node";

import { apiDeps, loadModels } from "./stack.js";

export interface Service {
  name: string;
  stop(): Promise<void>;
}

export async function startApiService(
  config: KilnConfig,
  ports: Ports,
  logger: Logger,
): Promise<Service & { port: number }> {
  const deps = apiDeps(config, ports, logger);
  const { server, port } = await serveOnNode(createApp(deps), { port: config.port, host: config.host });
  logger.info({ url: config.publicUrl, port }, "API listening");
  logChatStatus(config, (level, obj, msg) => logger[level](obj, msg));
  // Batches: the embedded trigger; a lease in the key store lets one of several API processes fire each tick.
  const scheduler = config.batches.scheduler
    ? new BatchScheduler(batchDepsFrom(deps, deps.batches), config.batches.tickSeconds)
    : undefined;
  scheduler?.start();
  // On AWS, DynamoDB TTL and the bucket's lifecycle rule do this; a local data dir needs the API to.
  const sweep =
    config.backend === "local"
      ? startRetentionSweep(ports, { log: (level, obj, msg) => logger[level](obj, msg) })
      : undefined;
  return {
    name: "api",
    port,
    async stop() {
      await sweep?.stop();
      await scheduler?.stop();
      await closeServer(server);
    },
  };
}

export async function startWorkerService(
  config: KilnConfig,
  ports: Ports,
  logger: Logger,
  models?: ModelSet,
  /** Harnesses only (the simulator's validation): a compressed poll cycle and a readable worker id. */
  harness?: { pollWaitSeconds?: number; workerId?: string },
): Promise<Service & { worker: Worker }> {
  const syncs: Partial<Record<"base" | "refiner", SyncReport>> = {};
  const loaded = models ?? (await loadModels(config, logger, syncs));
  const metrics = createWorkerMetrics();
  const workerId = harness?.workerId ?? `${os.hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  const sinks = [webhookEventSinkFromConfig(config, ports, (level, obj, msg) => logger[level](obj, msg))];
  if (config.eventLog) sinks.push(eventLogSink(config.eventLog, workerId));
  const worker = new Worker({
    ports,
    execute: sdxlExecutor(loaded, { blobs: ports.blobs, noiseKernel: config.noiseKernel }),
    logger,
    workerId,
    stages: config.stages,
    concurrency: config.workerConcurrency,
    pipelined: config.workerPipeline,
    batch: config.workerBatch,
    visibilitySeconds: config.visibilitySeconds,
    maxReceives: config.maxReceives,
    ...(harness?.pollWaitSeconds !== undefined ? { pollWaitSeconds: harness.pollWaitSeconds } : {}),
    events: fanOutEvents(sinks),
    metrics,
    ...(config.buckets.routing === "lanes" ? { buckets: workerBuckets(config) } : {}),
    // Fault tests hold a stage at a given step (KILN_TEST_HOOKS only).
    ...(config.testHooksDir ? { pause: filePausePoints(config.testHooksDir, workerId) } : {}),
  });
  worker.start();
  // Cold start: time to ready (process start to polling) and what the model sync took.
  const readySeconds = process.uptime();
  metrics.readySeconds.set(readySeconds);
  for (const [role, r] of Object.entries(syncs)) {
    metrics.modelSyncSeconds.set({ role }, r.seconds);
    metrics.modelSyncBytes.set({ role }, r.downloadedBytes);
  }
  logger.info(
    {
      timeToReadySeconds: Number(readySeconds.toFixed(3)),
      modelSync: Object.fromEntries(
        Object.entries(syncs).map(([role, r]) => [
          role,
          { seconds: Number(r.seconds.toFixed(3)), downloadedBytes: r.downloadedBytes, bytes: r.bytes },
        ]),
      ),
    },
    "worker ready",
  );
  const info = Object.fromEntries(
    Object.entries(loaded).map(([role, m]) => [
      role,
      { dir: m!.dir, providers: m!.providers, tiny: m!.isTinyTestModel },
    ]),
  );
  // TensorRT engines
  const engines =
    config.providers[0] === "tensorrt"
      ? await attachEngineSessions(loaded, {
          store: new EngineStore(ports.blobs),
          cacheDir: path.join(config.dataDir, "engine-cache"),
          // The buckets this worker serves (KILN_WORKER_BUCKETS, else every configured one); TensorRT engines need
          // sides that are multiples of 64, so other sizes simply run on the next provider.
          buckets: (config.buckets.worker === "all" ? config.buckets.list.map(bucketId) : config.buckets.worker)
            .map((id) => id.split("x").map(Number) as [number, number])
            .filter(([w, h]) => w % 64 === 0 && h % 64 === 0)
            .map(([width, height]) => ({ width, height })),
          deviceId: config.deviceId,
          logger,
        })
      : undefined;
  const health = await startHealthServer(
    worker,
    { models: info, ...(engines ? { engines } : {}) },
    config.workerPort,
    config.host,
  );
  const address = health.address();
  logger.info(
    {
      stages: config.stages,
      health: typeof address === "object" && address ? `http://${config.host}:${address.port}/healthz` : undefined,
    },
    "worker polling",
  );
  return {
    name: "worker",
    worker,
    async stop() {
      await worker.drain(config.drainSeconds);
      await new Promise<void>((r) => health.close(() => r()));
      // Models passed in belong to the caller (tests share them across stacks).
      for (const m of Object.values(loaded)) await m?.engines?.release();
      if (!models) for (const m of Object.values(loaded)) await m?.release();
    },
  };
}

/**
 * Delivers the webhooks queued by workers and the API. Runs beside every worker (and in
 * `kiln start`); any number may share the queue, and deliveries survive restarts in it.
 */
export function startWebhookService(config: KilnConfig, ports: Ports, logger: Logger): Service {
  const dispatcher = new WebhookDispatcher({
    ports,
    logger: logger.child({ component: "webhooks" }),
    policy: { allowPrivate: config.webhooks.allowPrivate, allowedHosts: config.webhooks.allowedHosts },
    retryWindowMs: config.webhooks.retryHours * 3_600_000,
    backoffBaseSeconds: config.webhooks.backoffSeconds,
    timeoutMs: config.webhooks.timeoutSeconds * 1000,
  });
  dispatcher.start();
  return { name: "webhooks", stop: () => dispatcher.stop() };
}

/**
 * Chat channels: sends Discord and Slack follow-ups (progress, results) from the chat queue. Runs
 * where the webhook dispatcher runs; a no-op service when neither bot is configured.
 */
export function startChatService(config: KilnConfig, ports: Ports, logger: Logger): Service {
  const log = logger.child({ component: "chat" });
  const dispatcher = chatDispatcherFromConfig(config, ports, log);
  dispatcher?.start();
  return { name: "chat", stop: async () => dispatcher?.stop() };
}

/** On SIGTERM/SIGINT: drain workers, close servers and ports, exit 0. */
export function stopOnSignals(services: Service[], ports: Ports, logger: Logger, hardStopSeconds?: number): void {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    if (hardStopSeconds !== undefined) {
      // A stop that hangs (a store unreachable past every retry) must not outlive the orchestrator's patience silently.
      setTimeout(() => {
        logger.error(
          { hardStopSeconds },
          "shutdown did not finish in time; exiting with running work left to its visibility timeout",
        );
        process.exit(1);
      }, hardStopSeconds * 1000).unref();
    }
    for (const s of [...services].reverse())
      await s.stop().catch((e) => logger.error({ err: String(e), service: s.name }, "stop failed"));
    await ports.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

/**
 * Resolution buckets, `lanes` routing: the bucket queues a worker reads. KILN_WORKER_BUCKETS=all (the
 * default, and what a worker without TensorRT engines should say) reads every bucket's queues.
 */
export function workerBuckets(config: KilnConfig): { take: string[]; all: string[] } {
  const all = config.buckets.list.map(bucketId);
  return { take: config.buckets.worker === "all" ? all : [...config.buckets.worker], all };
}
