import { loadConfig } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";

import { startApiService, stopOnSignals } from "../services.js";
import { openPorts } from "../stack.js";

export async function run(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: "kiln-api" });
  const ports = openPorts(config);
  stopOnSignals([await startApiService(config, ports, logger)], ports, logger);
}
