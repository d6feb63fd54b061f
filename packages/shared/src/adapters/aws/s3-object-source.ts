/**
 * Ranged reads of S3 objects, for syncing large files (models, TensorRT engines) to a worker's disk
 * with parallel GETs (packages/gpu-worker/src/models/sync). The BlobStore port reads whole objects;
 * a multi-GiB file needs byte ranges, so this is its own small interface.
 */
import { GetObjectCommand, HeadObjectCommand, type S3Client } from "@aws-sdk/client-s3";

import { KilnError } from "../../errors.js";

export interface RangedObjectSource {
  /** Where the objects are, for messages (`s3://bucket`). */
  readonly label: string;
  /** The object's size in bytes. */
  size(key: string): Promise<number>;
  /** Bytes `start`..`end` inclusive, streamed. */
  read(key: string, start: number, end: number, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>>;
  /** The whole object (small ones: manifests). */
  readAll(key: string): Promise<Uint8Array>;
}

export function s3ObjectSource(s3: S3Client, bucket: string): RangedObjectSource {
  const missing = (key: string, e: unknown) =>
    new KilnError("model_sync_missing", `s3://${bucket}/${key} does not exist or cannot be read: ${String(e)}`, {
      cause: e,
    });
  return {
    label: `s3://${bucket}`,
    async size(key) {
      try {
        const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
        return Number(head.ContentLength ?? 0);
      } catch (e) {
        throw missing(key, e);
      }
    },
    async read(key, start, end, signal) {
      const out = await s3.send(
        new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${start}-${end}` }),
        signal ? { abortSignal: signal } : {},
      );
      if (!out.Body) throw new KilnError("model_sync_failed", `s3://${bucket}/${key}: empty body for a ranged GET`);
      return out.Body as unknown as AsyncIterable<Uint8Array>;
    },
    async readAll(key) {
      try {
        const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        return await out.Body!.transformToByteArray();
      } catch (e) {
        throw missing(key, e);
      }
    },
  };
}
