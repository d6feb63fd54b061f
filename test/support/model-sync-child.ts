/**
 * A process that syncs one model folder from the S3 stand-in and prints its report as JSON, for
 * the model-sync durability test (killed -9 at a pause point, then run again).
 * Env: SYNC_S3_ENDPOINT, SYNC_BUCKET, SYNC_PREFIX, SYNC_DIR, SYNC_PART_BYTES, KILN_TEST_HOOKS.
 */
import { syncModelFolder } from "@kiln/gpu-worker";
import { createAwsClients, s3ObjectSource } from "@kiln/shared/aws";
import { filePausePoints } from "@kiln/shared/node";

const env = process.env;
const s3 = createAwsClients({
  region: "us-east-1",
  s3Endpoint: env.SYNC_S3_ENDPOINT!,
  credentials: { accessKeyId: "kiln-test", secretAccessKey: "kiln-test-secret" },
}).s3;
const report = await syncModelFolder({
  source: s3ObjectSource(s3, env.SYNC_BUCKET!),
  prefix: env.SYNC_PREFIX!,
  dir: env.SYNC_DIR!,
  concurrency: 2,
  partBytes: Number(env.SYNC_PART_BYTES),
  ...(env.KILN_TEST_HOOKS ? { pause: filePausePoints(env.KILN_TEST_HOOKS, "model-sync") } : {}),
});
s3.destroy();
process.stdout.write(JSON.stringify(report));
