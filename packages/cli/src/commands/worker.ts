import { loadConfig } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";

import { parseFlags } from "../cli/args.js";
import { startChatService, startWebhookService, startWorkerService, stopOnSignals } from "../services.js";
import { openPorts } from "../stack.js";

export async function run(argv: string[] = []): Promise<void> {
  parseFlags(argv, {}); // takes no options: an unknown flag is a usage error, not a reason to start
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: "kiln-worker" });
  const ports = openPorts(config);
  // Drain grace, then up to the stores' retry window (30 s) to release or record what was stopped.
  stopOnSignals(
    [
      await startWorkerService(config, ports, logger),
      startWebhookService(config, ports, logger),
      startChatService(config, ports, logger),
    ],
    ports,
    logger,
    config.drainSeconds + 45,
  );
}
