/**
 * One private bucket for latents (between stages), outputs, models and TensorRT engines. Its
 * lifecycle (infra/plan/storage.ts): latents expire after a day, outputs after the longest
 * retention a request may ask for, engines and models never. Job records expire through DynamoDB
 * TTL (table.ts).
 */
import { BUCKET_ARGS, lifecycleRules } from "./plan/storage";

/** KILN_MAX_RETENTION_HOURS of the API: outputs are kept at least this long. */
export const MAX_RETENTION_HOURS = Number(process.env.KILN_MAX_RETENTION_HOURS ?? 24 * 30);

export const bucket = new sst.aws.Bucket("KilnBucket", BUCKET_ARGS);

new aws.s3.BucketLifecycleConfigurationV2("KilnBucketLifecycle", {
  bucket: bucket.name,
  rules: lifecycleRules({ maxRetentionHours: MAX_RETENTION_HOURS }),
});

/** IAM resource forms of the bucket. */
export const bucketArns = { bucket: bucket.arn, bucketObjects: $interpolate`${bucket.arn}/*` };
