/**
 * BlobStore on S3: latents between stages and finished images, downloaded through presigned URLs.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  paginateListObjectsV2,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";

import { KilnError } from "../../errors.js";
import type { BlobHead, BlobStore, DownloadUrlOptions, PutOptions } from "../../ports/blob-store.js";

const MiB = 1024 * 1024;
/** S3's minimum part size (all parts but the last). */
export const MULTIPART_PART_SIZE = 5 * MiB;
/** Latents (~128 KiB) and images (a few MiB) go in one PUT; only larger bodies are split. */
export const DEFAULT_MULTIPART_THRESHOLD = 8 * MiB;
/** SigV4 presigned URLs live at most 7 days. */
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;

export interface S3BlobStoreOptions {
  bucket: string;
  /** Bodies larger than this are uploaded in parts of MULTIPART_PART_SIZE. */
  multipartThreshold?: number;
}

export class S3BlobStore implements BlobStore {
  /**
   * `ifAbsent` sends `If-None-Match: *`, which real S3 enforces atomically, but the adapter cannot
   * tell whether the endpoint does (fauxqs ignores it), so it promises only best effort: a HEAD
   * first catches the common sequential case everywhere. Kiln never relies on it for correctness;
   * races are settled by the JobStore's conditional writes.
   */
  readonly supportsConditionalPut = false;
  private readonly bucket: string;
  private readonly multipartThreshold: number;

  constructor(
    private readonly s3: S3Client,
    options: S3BlobStoreOptions,
  ) {
    this.bucket = options.bucket;
    this.multipartThreshold = Math.max(options.multipartThreshold ?? DEFAULT_MULTIPART_THRESHOLD, MULTIPART_PART_SIZE);
  }

  async put(key: string, bytes: Uint8Array, options: PutOptions = {}): Promise<{ created: boolean }> {
    if (options.ifAbsent && (await this.head(key))) return { created: false };
    const ifNoneMatch = options.ifAbsent ? "*" : undefined;
    try {
      if (bytes.byteLength > this.multipartThreshold)
        await this.putMultipart(key, bytes, options.contentType, ifNoneMatch);
      else {
        await this.s3.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: key,
            Body: bytes,
            ContentType: options.contentType,
            IfNoneMatch: ifNoneMatch,
            Tagging: lifecycleTagging(key),
          }),
        );
      }
      return { created: true };
    } catch (e) {
      // 412: the object appeared since the HEAD. 409: a concurrent conditional write to the same
      // key is in flight; either way another writer owns this key.
      if (options.ifAbsent && (httpStatus(e) === 412 || httpStatus(e) === 409)) return { created: false };
      throw e;
    }
  }

  private async putMultipart(
    key: string,
    bytes: Uint8Array,
    contentType: string | undefined,
    ifNoneMatch: string | undefined,
  ): Promise<void> {
    const { UploadId } = await this.s3.send(
      new CreateMultipartUploadCommand({
        Bucket: this.bucket,
        Key: key,
        ContentType: contentType,
        Tagging: lifecycleTagging(key),
      }),
    );
    if (!UploadId)
      throw new KilnError(
        "s3_multipart_failed",
        `S3 did not return an upload id for "${key}". Check the bucket and endpoint.`,
        { retryable: true },
      );
    try {
      const parts: { ETag: string; PartNumber: number }[] = [];
      for (let offset = 0, partNumber = 1; offset < bytes.byteLength; offset += MULTIPART_PART_SIZE, partNumber++) {
        const { ETag } = await this.s3.send(
          new UploadPartCommand({
            Bucket: this.bucket,
            Key: key,
            UploadId,
            PartNumber: partNumber,
            Body: bytes.subarray(offset, offset + MULTIPART_PART_SIZE),
          }),
        );
        if (!ETag)
          throw new KilnError("s3_multipart_failed", `S3 returned no ETag for part ${partNumber} of "${key}".`, {
            retryable: true,
          });
        parts.push({ ETag, PartNumber: partNumber });
      }
      await this.s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: key,
          UploadId,
          MultipartUpload: { Parts: parts },
          IfNoneMatch: ifNoneMatch,
        }),
      );
    } catch (e) {
      // Parts of an unfinished upload are stored (and billed) until aborted.
      await this.s3
        .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId }))
        .catch(() => undefined);
      throw e;
    }
  }

  async get(key: string): Promise<Uint8Array | null> {
    try {
      const { Body } = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return Body ? await Body.transformToByteArray() : new Uint8Array(0);
    } catch (e) {
      if ((e as { name?: string } | null)?.name === "NoSuchKey") return null;
      throw e;
    }
  }

  async head(key: string): Promise<BlobHead | null> {
    try {
      const { ContentLength, ContentType } = await this.s3.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: key }),
      );
      return { size: ContentLength ?? 0, ...(ContentType ? { contentType: ContentType } : {}) };
    } catch (e) {
      // A HEAD response has no body, so a missing key is only a bare 404.
      if (httpStatus(e) === 404) return null;
      throw e;
    }
  }

  async delete(key: string): Promise<void> {
    await this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  /** Every key under the prefix, in S3's (lexicographic) order, across all pages. */
  async list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const page of paginateListObjectsV2({ client: this.s3 }, { Bucket: this.bucket, Prefix: prefix })) {
      for (const object of page.Contents ?? []) if (object.Key !== undefined) keys.push(object.Key);
    }
    return keys;
  }

  async downloadUrl(key: string, options: DownloadUrlOptions): Promise<string> {
    const seconds = Math.ceil(options.expiresSeconds);
    if (!(seconds >= 1 && seconds <= MAX_PRESIGN_SECONDS)) {
      throw new KilnError(
        "invalid_url_lifetime",
        `A download URL must live between 1 s and 7 days (S3's limit for presigned URLs); got ${options.expiresSeconds} s.`,
        { status: 400 },
      );
    }
    const command = new GetObjectCommand({
      Bucket: this.bucket,
      Key: key,
      ResponseContentDisposition: options.filename === undefined ? undefined : contentDisposition(options.filename),
    });
    return getSignedUrl(this.s3, command, { expiresIn: seconds });
  }
}

/** Creates the bucket if it does not exist. For tests and dev setups; SST owns production. */
export async function ensureBucket(s3: S3Client, bucket: string): Promise<void> {
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (e) {
    const name = (e as { name?: string }).name;
    if (name !== "BucketAlreadyOwnedByYou" && name !== "BucketAlreadyExists") throw e;
  }
}

/** `attachment` with an ASCII fallback name and the exact name per RFC 6266 / RFC 5987. */
function contentDisposition(filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]/g, "_").replace(/["\\]/g, "_");
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`;
}

const httpStatus = (e: unknown): number | undefined =>
  (e as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;

/**
 * S3 lifecycle rules match prefixes and tags, not suffixes: latents between stages carry a tag so
 * the bucket expires them after a day while outputs under the same job prefix live their retention
 * (infra/plan/storage.ts, `LATENTS_TAG`).
 */
const lifecycleTagging = (key: string): string | undefined =>
  key.endsWith(".latents") ? "kiln-blob=latents" : undefined;
