/**
 * The HTTP API on Lambda: the esbuild bundle of packages/api/src/entry/lambda.ts (SST builds the
 * handler with esbuild too) behind a function URL, with least-privilege permissions and its
 * settings as KILN_* variables.
 */
import { asSstPermissions, dataArns } from "./permissions";
import { apiStatements } from "./plan/iam";
import { queueUrls } from "./queues";
import { batchSchedules } from "./schedules";
import { urlSecret } from "./secrets";
import { bucket, MAX_RETENTION_HOURS } from "./storage";
import { table } from "./table";

export const apiEnvironment = {
  KILN_BACKEND: "aws",
  KILN_BUCKET: bucket.name,
  KILN_TABLE: table.name,
  KILN_QUEUE_URLS: queueUrls,
  KILN_MAX_RETENTION_HOURS: String(MAX_RETENTION_HOURS),
};

export const api = new sst.aws.Function("KilnApi", {
  // Response streaming, so event streams (SSE) arrive as they happen through the function URL.
  handler: "packages/api/src/entry/lambda.streamHandler",
  streaming: true,
  runtime: "nodejs20.x",
  architecture: "arm64",
  memory: "1024 MB",
  timeout: "30 seconds",
  url: true,
  link: [urlSecret],
  nodejs: { format: "esm", minify: true },
  permissions: asSstPermissions([...apiStatements(dataArns), ...batchSchedules.apiStatements]),
  environment: {
    ...apiEnvironment,
    KILN_URL_SECRET: urlSecret.value,
    // Batch schedules (EventBridge Scheduler): the group and the role schedules run as.
    KILN_BATCH_SCHEDULE_GROUP: batchSchedules.group.name,
    KILN_BATCH_SCHEDULER_ROLE_ARN: batchSchedules.role.arn,
  },
});
