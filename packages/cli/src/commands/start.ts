import fs from "node:fs";
import path from "node:path";

import { createApiKey, type KilnConfig, loadConfig, type Ports, verifyApiKey } from "@kiln/shared";
import { createLogger, type Logger } from "@kiln/shared/node";

import { parseFlags } from "../cli/args.js";
import { endProgress, printProgress, renderAndWait, saveImages } from "../render-client.js";
import {
  startApiService,
  startChatService,
  startWebhookService,
  startWorkerService,
  stopOnSignals,
} from "../services.js";
import { openPorts } from "../stack.js";

/**
 * `kiln start` (what `npm start` runs): the API and one worker in one process on the configured
 * family, then — unless KILN_START_DEMO=false — one real render through the public HTTP API, saved
 * to <data dir>/demo.png, so a fresh install proves the whole path works end to end.
 */
export async function run(argv: string[] = []): Promise<void> {
  parseFlags(argv, {}); // takes no options: an unknown flag is a usage error, not a reason to start
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: "kiln" });
  const ports = openPorts(config);
  const api = await startApiService(config, ports, logger);
  const worker = await startWorkerService(config, ports, logger);
  stopOnSignals(
    [api, worker, startWebhookService(config, ports, logger), startChatService(config, ports, logger)],
    ports,
    logger,
  );

  const key = await localKey(config, ports);
  const builtin = config.modelDir ? undefined : config.builtinModels;
  if (config.cli.startDemo) await demoRender(config, key, builtin, logger);
  console.log(
    [
      "",
      `Kiln is running at ${config.publicUrl} (playground: ${config.publicUrl}/, API reference: ${config.publicUrl}/docs). Stop with Ctrl-C.`,
      `API key (saved in ${path.join(config.dataDir, "local-key")}): ${key}`,
      "Try:",
      `  curl -s -X POST ${config.publicUrl}/v1/renders -H "Authorization: Bearer $(cat ${path.join(config.dataDir, "local-key")})" \\`,
      `    -H 'content-type: application/json' -d '{"prompt":"${builtin === "reference" ? "a large yellow star on a purple background" : "a lighthouse on a cliff at dusk"}","mode":"ensemble"${builtin ? ',"width":512,"height":512' : ""}}'`,
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

/** The demo request per model: the reference models draw what the prompt names (see docs/engine.md). */
export function demoRequest(builtin: "reference" | "tiny" | undefined): Record<string, unknown> {
  if (builtin === "reference")
    return {
      prompt: "a red circle on a blue background",
      mode: "ensemble",
      seed: 42,
      width: 512,
      height: 512,
      steps: 20,
    };
  return {
    prompt: "a lighthouse on a cliff at dusk, oil painting",
    mode: "ensemble",
    seed: 42,
    ...(builtin === "tiny" ? { width: 256, height: 256, steps: 20 } : {}),
  };
}

async function demoRender(
  config: KilnConfig,
  key: string,
  builtin: "reference" | "tiny" | undefined,
  logger: Logger,
): Promise<void> {
  const request = demoRequest(builtin);
  const tiny = builtin === "tiny";
  logger.info({ request }, "demo render: submitting through the public API");
  const started = performance.now();
  const job = await renderAndWait(config.publicUrl, key, request, printProgress);
  endProgress();
  if (job.status !== "succeeded") {
    logger.error({ jobId: job.id, status: job.status, error: job.error }, "demo render did not succeed");
    return;
  }
  const [file] = await saveImages(job, path.join(config.dataDir, "demo.png"));
  logger.info({ jobId: job.id, file, seconds: ((performance.now() - started) / 1000).toFixed(2) }, "demo render saved");
  console.log(
    `Demo render (${job.images[0]!.width}×${job.images[0]!.height}, ensemble${tiny ? ", tiny test model: noise by design" : builtin === "reference" ? `, reference model: "${request.prompt}"` : ""}): ${path.resolve(file!)}`,
  );
}
