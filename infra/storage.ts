/**
 * One bucket for latents (between stages) and finished images. Retention is S3's job: a lifecycle
 * rule expires everything under `jobs/` after the retention window, and unfinished multipart
 * uploads after a day. The job records expire on their own through DynamoDB TTL (table.ts).
 */

import { loadDeployConfig } from "../packages/shared/src/config";

/** Days objects under `jobs/` live (KILN_RETENTION_DAYS); keep at least the API's longest retention_hours. */
export const RETENTION_DAYS = loadDeployConfig().retentionDays;

export const bucket = new sst.aws.Bucket("KilnBucket");

new aws.s3.BucketLifecycleConfigurationV2("KilnBucketRetention", {
  bucket: bucket.name,
  rules: [
    { id: "expire-job-outputs", status: "Enabled", filter: { prefix: "jobs/" }, expiration: { days: RETENTION_DAYS } },
    {
      id: "abort-stale-multipart",
      status: "Enabled",
      filter: { prefix: "" },
      abortIncompleteMultipartUpload: { daysAfterInitiation: 1 },
    },
  ],
});
