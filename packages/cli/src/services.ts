import type { KilnConfig, Ports } from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";
import { serveOnNode, closeServer } from "@kiln/api/node";
import { sdxlExecutor, startHealthServer, Worker, type ModelSet } from "@kiln/gpu-worker";
import { buildApi, loadModels } from "./stack.js";

export interface Service {
  name: string;
  stop(): Promise<void>;
}

export async function startApiService(config: KilnConfig, ports: Ports, logger: Logger): Promise<Service & { port: number }> {
  const { server, port } = await serveOnNode(buildApi(config, ports, logger), { port: config.port, host: config.host });
  logger.info({ url: config.publicUrl, port }, "API listening");
  return { name: "api", port, stop: () => closeServer(server) };
}

export async function startWorkerService(config: KilnConfig, ports: Ports, logger: Logger, models?: ModelSet): Promise<Service & { worker: Worker }> {
  const loaded = models ?? (await loadModels(config, logger));
  const worker = new Worker({
    ports,
    execute: sdxlExecutor(loaded),
    logger,
    stages: config.stages,
    concurrency: config.workerConcurrency,
    visibilitySeconds: config.visibilitySeconds,
    maxReceives: config.maxReceives,
  });
  worker.start();
  const info = Object.fromEntries(Object.entries(loaded).map(([role, m]) => [role, { dir: m!.dir, providers: m!.providers, tiny: m!.isTinyTestModel }]));
  const health = await startHealthServer(worker, { models: info }, config.workerPort, config.host);
  const address = health.address();
  logger.info({ stages: config.stages, health: typeof address === "object" && address ? `http://${config.host}:${address.port}/healthz` : undefined }, "worker polling");
  return {
    name: "worker",
    worker,
    async stop() {
      await worker.drain(config.drainSeconds);
      await new Promise<void>((r) => health.close(() => r()));
      // Models passed in belong to the caller (tests share them across stacks).
      if (!models) for (const m of Object.values(loaded)) await m?.release();
    },
  };
}

/** On SIGTERM/SIGINT: drain workers, close servers and ports, exit 0. */
export function stopOnSignals(services: Service[], ports: Ports, logger: Logger): void {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    for (const s of [...services].reverse()) await s.stop().catch((e) => logger.error({ err: String(e), service: s.name }, "stop failed"));
    await ports.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}
