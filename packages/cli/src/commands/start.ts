import fs from "node:fs";
import path from "node:path";

import { createApiKey, type KilnConfig, loadConfig, type Ports, verifyApiKey } from "@kiln/shared";
import { createLogger, type Logger } from "@kiln/shared/node";

import { printProgress, renderAndWait, saveImages } from "../render-client.js";
import { startApiService, startWebhookService, startWorkerService, stopOnSignals } from "../services.js";
import { openPorts } from "../stack.js";

/**
 * `kiln start` (what `npm start` runs): the API and one worker in one process on the configured
 * family, then — unless KILN_START_DEMO=false — one real render through the public HTTP API, saved
 * to <data dir>/demo.png, so a fresh install proves the whole path works end to end.
 */
export async function run(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: "kiln" });
  const ports = openPorts(config);
  const api = await startApiService(config, ports, logger);
  const worker = await startWorkerService(config, ports, logger);
  stopOnSignals([api, worker, startWebhookService(config, ports, logger)], ports, logger);

  const key = await localKey(config, ports);
  const usingTiny = !config.modelDir;
  if (config.cli.startDemo) await demoRender(config, key, usingTiny, logger);
  console.log(
    [
      "",
      `Kiln is running at ${config.publicUrl} (API docs: ${config.publicUrl}/openapi.json). Stop with Ctrl-C.`,
      `API key (saved in ${path.join(config.dataDir, "local-key")}): ${key}`,
      "Try:",
      `  curl -s -X POST ${config.publicUrl}/v1/renders -H "Authorization: Bearer $(cat ${path.join(config.dataDir, "local-key")})" \\`,
      `    -H 'content-type: application/json' -d '{"prompt":"a lighthouse on a cliff at dusk","mode":"ensemble"${usingTiny ? ',"width":256,"height":256' : ""}}'`,
      "",
    ].join("\n"),
  );
}

/** A key for the person running Kiln locally, kept in the data dir (mode 600) and reused across starts. */
async function localKey(config: KilnConfig, ports: Ports): Promise<string> {
  const file = path.join(config.dataDir, "local-key");
  if (fs.existsSync(file)) {
    const saved = fs.readFileSync(file, "utf8").trim();
    if (await verifyApiKey(ports.keys, saved)) return saved;
  }
  const { key } = await createApiKey(ports.keys, { name: "local", scopes: ["render", "admin"] });
  fs.writeFileSync(file, `${key}\n`, { mode: 0o600 });
  return key;
}

async function demoRender(config: KilnConfig, key: string, tiny: boolean, logger: Logger): Promise<void> {
  const request = {
    prompt: "a lighthouse on a cliff at dusk, oil painting",
    mode: "ensemble",
    seed: 42,
    ...(tiny ? { width: 256, height: 256, steps: 20 } : {}),
  };
  logger.info({ request }, "demo render: submitting through the public API");
  const started = performance.now();
  const job = await renderAndWait(config.publicUrl, key, request, printProgress);
  if (process.stderr.isTTY) process.stderr.write("\n");
  if (job.status !== "succeeded") {
    logger.error({ jobId: job.id, status: job.status, error: job.error }, "demo render did not succeed");
    return;
  }
  const [file] = await saveImages(job, path.join(config.dataDir, "demo.png"));
  logger.info({ jobId: job.id, file, seconds: ((performance.now() - started) / 1000).toFixed(2) }, "demo render saved");
  console.log(
    `Demo render (${job.images[0]!.width}×${job.images[0]!.height}, ensemble${tiny ? ", tiny test model: noise by design" : ""}): ${path.resolve(file!)}`,
  );
}
