import type { KilnConfig, Ports } from "@kiln/shared";
import { openLocalPorts } from "@kiln/shared/local";

import { localUrlSecret, openAwsPortsFromConfig } from "./api-deps.js";

/** The configured family's ports: the embedded default (SQLite + files) or AWS. */
export function openPorts(config: KilnConfig): Ports {
  if (config.backend === "aws") return openAwsPortsFromConfig(config);
  return openLocalPorts({
    dataDir: config.dataDir,
    publicBaseUrl: config.publicUrl,
    urlSecret: localUrlSecret(config),
    maxReceives: config.maxReceives,
  });
}
