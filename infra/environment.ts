/** The KILN_* settings every function reading Kiln's data shares (the API, the cron jobs, the batch trigger). */
import { queueUrls } from "./queues";
import { bucket, MAX_RETENTION_HOURS } from "./storage";
import { table } from "./table";

export const apiEnvironment = {
  KILN_BACKEND: "aws",
  KILN_BUCKET: bucket.name,
  KILN_TABLE: table.name,
  KILN_QUEUE_URLS: queueUrls,
  KILN_MAX_RETENTION_HOURS: String(MAX_RETENTION_HOURS),
};
