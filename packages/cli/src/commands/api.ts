import { loadConfig } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";

import { parseFlags } from "../cli/args.js";
import { startApiService, stopOnSignals } from "../services.js";
import { openPorts } from "../stack.js";

export async function run(argv: string[] = []): Promise<void> {
  parseFlags(argv, {}); // takes no options: an unknown flag is a usage error, not a reason to start
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, name: "kiln-api" });
  const ports = openPorts(config);
  stopOnSignals([await startApiService(config, ports, logger)], ports, logger);
}
