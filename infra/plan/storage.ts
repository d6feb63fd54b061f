/**
 * S3 lifecycle of Kiln's bucket, by what each prefix holds. Pure: infra/storage.ts and the tests
 * read the same rules.
 * - Latents (`jobs/<id>/stage-<k>.latents`, tagged `kiln-blob=latents` by the S3 blob store, since
 *   lifecycle filters match prefixes and tags, not suffixes): one day. A hand-over is consumed in
 *   seconds; a day covers retries and dead-letter replays.
 * - Outputs (everything else under `jobs/`): the longest retention a request may ask for
 *   (KILN_MAX_RETENTION_HOURS) plus a day; the API's retention sweep deletes earlier ones on time.
 * - Engines (`engines/`) and models (`models/`): never expired; they are expensive to rebuild.
 * - Unfinished multipart uploads: aborted after a day.
 */
export const LATENTS_TAG = { key: "kiln-blob", value: "latents" } as const;

export interface LifecycleRule {
  id: string;
  status: "Enabled";
  filter: { prefix?: string; and?: { prefix: string; tags: Record<string, string> } };
  expiration?: { days: number };
  abortIncompleteMultipartUpload?: { daysAfterInitiation: number };
}

export function lifecycleRules(options: { maxRetentionHours: number }): LifecycleRule[] {
  return [
    {
      id: "expire-latents",
      status: "Enabled",
      filter: { and: { prefix: "jobs/", tags: { [LATENTS_TAG.key]: LATENTS_TAG.value } } },
      expiration: { days: 1 },
    },
    {
      id: "expire-job-outputs",
      status: "Enabled",
      filter: { prefix: "jobs/" },
      expiration: { days: Math.ceil(options.maxRetentionHours / 24) + 1 },
    },
    {
      id: "abort-stale-multipart",
      status: "Enabled",
      filter: { prefix: "" },
      abortIncompleteMultipartUpload: { daysAfterInitiation: 1 },
    },
  ];
}

/** Prefixes no expiring rule may cover. */
export const KEPT_PREFIXES = ["engines/", "models/"] as const;

/**
 * Arguments of the SST bucket: private, with S3's public access block set explicitly (all four),
 * so no ACL or bucket policy can open it. Downloads are presigned URLs.
 */
export const BUCKET_ARGS = {
  transform: {
    publicAccessBlock: {
      blockPublicAcls: true,
      blockPublicPolicy: true,
      ignorePublicAcls: true,
      restrictPublicBuckets: true,
    },
  },
} as const;
