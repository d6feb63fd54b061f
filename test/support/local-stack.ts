import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import type { Worker } from "@kiln/gpu-worker";
import { loadSdxlModel, type ModelSet, writeTinyModels } from "@kiln/gpu-worker";
import { createApiKey, type KilnConfig, loadConfig, type Ports } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";

import {
  type Service,
  startApiService,
  startChatService,
  startWebhookService,
  startWorkerService,
} from "../../packages/cli/src/services.js";
import { openPorts } from "../../packages/cli/src/stack.js";

let tinyRoot: { base: string; refiner: string } | undefined;

/** Kiln's tiny models, written once per test process. */
export function tinyModelDirs(): { base: string; refiner: string } {
  tinyRoot ??= writeTinyModels(fs.mkdtempSync(path.join(os.tmpdir(), "kiln-tiny-")));
  return tinyRoot;
}

export async function loadTinyModels(): Promise<ModelSet> {
  const dirs = tinyModelDirs();
  const options = { providers: ["cpu" as const], logger: createLogger({ level: "silent" }) };
  return {
    base: await loadSdxlModel(dirs.base, "base", options),
    refiner: await loadSdxlModel(dirs.refiner, "refiner", options),
  };
}

export interface LocalStack {
  config: KilnConfig;
  ports: Ports;
  url: string;
  key: string;
  worker?: Worker;
  models?: ModelSet;
  stop(): Promise<void>;
}

/**
 * The real local stack in this process: SQLite queue and stores, blob files, the Hono API on an
 * ephemeral loopback port, and (unless `worker: false`) one worker on the tiny ONNX models.
 * `ports` replaces the local family (e.g. the AWS family on the fauxqs/dynalite stand-ins); the stack
 * closes them when it stops.
 */
export async function startLocalStack(
  options: { worker?: boolean; env?: Record<string, string>; models?: ModelSet; ports?: Ports } = {},
): Promise<LocalStack> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-stack-"));
  const logger = createLogger({ level: process.env.KILN_TEST_LOG ?? "silent" });
  // Port 0 binds an ephemeral port; the public URL must name the real one, so bind first.
  const probe = await import("node:net").then(
    (net) =>
      new Promise<number>((resolve) => {
        const s = net.createServer().listen(0, "127.0.0.1", () => {
          const port = (s.address() as { port: number }).port;
          s.close(() => resolve(port));
        });
      }),
  );
  const config = loadConfig({
    KILN_DATA_DIR: dataDir,
    PORT: String(probe),
    KILN_WORKER_PORT: "0",
    KILN_MIN_SIDE: "64",
    KILN_VISIBILITY_SECONDS: "10",
    ...options.env,
  });
  const ports = options.ports ?? openPorts(config);
  const services: Service[] = [await startApiService(config, ports, logger)];
  let worker: Worker | undefined;
  const models = options.worker === false ? undefined : (options.models ?? (await loadTinyModels()));
  if (models) {
    const w = await startWorkerService(config, ports, logger, models);
    worker = w.worker;
    // As `kiln worker` does: the webhook dispatcher runs beside the worker.
    services.push(w, startWebhookService(config, ports, logger), startChatService(config, ports, logger));
  }
  const { key } = await createApiKey(ports.keys, { name: "test", scopes: ["render", "admin"] });
  return {
    config,
    ports,
    url: config.publicUrl,
    key,
    worker,
    models,
    async stop() {
      for (const s of services.reverse()) await s.stop();
      await ports.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function api(
  stack: LocalStack,
  method: string,
  pathname: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const res = await fetch(`${stack.url}${pathname}`, {
    method,
    headers: { authorization: `Bearer ${stack.key}`, "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

export async function waitForJob(
  stack: LocalStack,
  id: string,
  until: (job: any) => boolean = (j) => ["succeeded", "failed", "canceled", "expired"].includes(j.status),
  timeoutMs = 120_000,
): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { json } = await api(stack, "GET", `/v1/renders/${id}`);
    if (until(json)) return json;
    if (Date.now() > deadline) throw new Error(`job ${id} still ${json?.status} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function download(url: string): Promise<Buffer> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url} → ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}
