/**
 * The HTTP API on Lambda: the esbuild bundle of packages/api/src/entry/lambda.ts (SST builds the
 * handler with esbuild too) behind a function URL, with least-privilege permissions and its
 * settings as KILN_* variables.
 */
import { apiEnvironment } from "./environment";
import { asSstPermissions, dataArns } from "./permissions";
import { apiStatements } from "./plan/iam";
import { batchSchedules } from "./schedules";
import { urlSecret } from "./secrets";

export { apiEnvironment };

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
    // Batch schedules (EventBridge Scheduler): the group, the role schedules run as, the trigger they invoke.
    ...batchSchedules.apiSettings,
  },
});
