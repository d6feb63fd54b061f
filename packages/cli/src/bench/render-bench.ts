import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { loadSdxlModel, writeTinyModels } from "@kiln/gpu-worker";
import { createApiKey, loadConfig } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";

import { renderAndWait } from "../render-client.js";
import { startApiService, startWorkerService } from "../services.js";
import { openPorts } from "../stack.js";
import { timeSessions } from "./session-timer.js";
import { fmt, percentile, table } from "./stats.js";

/**
 * Issue 2's figure: time to image for a 256×256 ensemble render (30 steps) on the tiny models,
 * through the whole local stack (HTTP submit → SQLite queue → base stage → latents blob → refine
 * stage → PNG → succeeded), and the share of it spent outside `session.run`.
 */
export async function run(): Promise<string> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-render-"));
  const dirs = writeTinyModels(path.join(root, "models"));
  const logger = createLogger({ level: "silent" });
  const options = { providers: ["cpu" as const], logger };
  const models = {
    base: await loadSdxlModel(dirs.base, "base", options),
    refiner: await loadSdxlModel(dirs.refiner, "refiner", options),
  };
  const timer = timeSessions(models);
  const port = 18000 + Math.floor(Math.random() * 1000);
  const config = loadConfig({ KILN_DATA_DIR: path.join(root, "data"), PORT: String(port), KILN_WORKER_PORT: "0" });
  const ports = openPorts(config);
  const api = await startApiService(config, ports, logger);
  const worker = await startWorkerService(config, ports, logger, models);
  const { key } = await createApiKey(ports.keys, { name: "bench", scopes: ["render"] });
  const request = {
    prompt: "a lighthouse on a cliff at dusk, oil painting",
    mode: "ensemble",
    width: 256,
    height: 256,
    steps: 30,
  };
  try {
    for (let i = 0; i < 3; i++) await renderAndWait(config.publicUrl, key, { ...request, seed: i });
    const totals: number[] = [];
    const outside: number[] = [];
    const serverSide: number[] = [];
    const runs = 20;
    for (let i = 0; i < runs; i++) {
      timer.reset();
      const t = performance.now();
      const job = await renderAndWait(config.publicUrl, key, { ...request, seed: 100 + i }, undefined, { pollMs: 2 });
      const ms = performance.now() - t;
      if (job.status !== "succeeded") throw new Error(`bench render ${job.id} ${job.status}`);
      const record = await ports.jobs.get(job.id);
      serverSide.push(Date.parse(record!.finishedAt!) - Date.parse(record!.createdAt));
      totals.push(ms);
      outside.push(1 - timer.totalMs() / ms);
    }
    return [
      `${runs} sequential renders after 3 warm-ups; 256×256, ensemble (24 base + 6 refiner steps of 30), guidance 5, n = 1, tiny models on the CPU provider; one API and one worker in one process. Client time is POST → the poll (every 2 ms) that sees it succeeded; server time is created → finished from the job record (ms resolution). The share outside session.run is of the client time.`,
      "",
      table(
        ["figure", "p50", "p90", "max"],
        [
          [
            "client time to image (ms)",
            fmt(percentile(totals, 50), 0),
            fmt(percentile(totals, 90), 0),
            fmt(Math.max(...totals), 0),
          ],
          [
            "server time to image (ms)",
            fmt(percentile(serverSide, 50), 0),
            fmt(percentile(serverSide, 90), 0),
            fmt(Math.max(...serverSide), 0),
          ],
          [
            "share outside session.run",
            fmt(percentile(outside, 50) * 100, 1) + " %",
            fmt(percentile(outside, 90) * 100, 1) + " %",
            fmt(Math.max(...outside) * 100, 1) + " %",
          ],
        ],
      ),
    ].join("\n");
  } finally {
    await worker.stop();
    await api.stop();
    await ports.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
}
