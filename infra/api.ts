/**
 * The HTTP API on Lambda (hono/aws-lambda, packages/api/src/entry/lambda.ts) behind a function URL.
 * Resources are linked (SST_RESOURCE_* for `Resource.X`) and also passed as KILN_* settings, so
 * Kiln's config reads them however SST delivers links to functions.
 */
import { allQueues, queueUrls } from "./queues";
import { urlSecret } from "./secrets";
import { bucket, RETENTION_DAYS } from "./storage";
import { table } from "./table";

export const api = new sst.aws.Function("KilnApi", {
  // Response streaming, so event streams (SSE) arrive as they happen through the function URL.
  handler: "packages/api/src/entry/lambda.streamHandler",
  streaming: true,
  runtime: "nodejs20.x",
  memory: "1024 MB",
  timeout: "30 seconds",
  url: true,
  link: [bucket, table, ...allQueues, urlSecret],
  environment: {
    KILN_BACKEND: "aws",
    KILN_BUCKET: bucket.name,
    KILN_TABLE: table.name,
    KILN_QUEUE_URLS: queueUrls,
    KILN_RETENTION_HOURS: String(Math.min(24, RETENTION_DAYS * 24)),
    KILN_URL_SECRET: urlSecret.value,
  },
});
