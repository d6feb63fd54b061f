import { loadConfig } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import { openPorts } from "../stack.js";
import { startWorkerService, stopOnSignals } from "../services.js";

export async function run(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: "kiln-worker" });
  const ports = openPorts(config);
  stopOnSignals([await startWorkerService(config, ports, logger)], ports, logger);
}
