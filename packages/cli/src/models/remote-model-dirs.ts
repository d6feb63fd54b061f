import path from "node:path";

import { parseS3Url, syncModelFolder, type SyncReport } from "@kiln/gpu-worker";
import type { KilnConfig, PausePoint } from "@kiln/shared";
import { createAwsClients, s3ObjectSource } from "@kiln/shared/aws";
import type { Logger } from "@kiln/shared/node";

/**
 * Model folders given as `s3://bucket/prefix` (KILN_MODEL_DIR, KILN_REFINER_DIR) are synced to the
 * instance disk before the sessions load: into KILN_MODEL_CACHE_DIR (default `<data dir>/models/s3`)
 * under `<bucket>/<prefix>`, so containers sharing that directory fetch each file once. Local paths
 * pass through untouched.
 */
export async function localModelDir(
  dir: string,
  role: "base" | "refiner",
  config: KilnConfig,
  logger: Logger,
  reports: Partial<Record<"base" | "refiner", SyncReport>>,
  pause?: PausePoint,
): Promise<string> {
  if (!dir.startsWith("s3://")) return dir;
  const url = parseS3Url(dir);
  if (!url)
    throw new Error(`${role === "base" ? "KILN_MODEL_DIR" : "KILN_REFINER_DIR"}=${dir} is not s3://bucket/prefix`);
  const target = path.join(
    config.modelSync.cacheDir ?? path.join(config.dataDir, "models", "s3"),
    url.bucket,
    ...url.prefix.split("/").filter(Boolean),
  );
  // Only S3 is needed (a local-family worker may keep its models in S3 too): no bucket or table required.
  const clients = createAwsClients({
    region: config.aws.region,
    endpoint: config.aws.endpoint,
    s3Endpoint: config.aws.s3Endpoint,
  });
  try {
    logger.info({ role, from: dir, to: target }, "syncing model folder from S3");
    reports[role] = await syncModelFolder({
      source: s3ObjectSource(clients.s3, url.bucket),
      prefix: url.prefix,
      dir: target,
      concurrency: config.modelSync.concurrency,
      partBytes: config.modelSync.partBytes,
      logger: logger.child({ role }),
      pause,
    });
  } finally {
    clients.sqs.destroy();
    clients.s3.destroy();
    clients.dynamo.destroy();
  }
  return target;
}
