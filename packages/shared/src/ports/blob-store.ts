/**
 * The BlobStore port: latents between stages and finished images.
 * Local family: files under the data dir, served by the API. AWS family: S3 with presigned URLs.
 */
export interface BlobHead {
  size: number;
  contentType?: string;
}

export interface PutOptions {
  contentType?: string;
  /**
   * Best effort "only if absent". Adapters that cannot enforce it atomically (fauxqs does not
   * implement S3's If-None-Match) must say so via `supportsConditionalPut`; anything that must be
   * atomic goes through the JobStore's conditional writes instead.
   */
  ifAbsent?: boolean;
}

export interface DownloadUrlOptions {
  expiresSeconds: number;
  /** Suggested file name for Content-Disposition. */
  filename?: string;
}

export interface BlobStore {
  readonly supportsConditionalPut: boolean;
  /** Returns `created: false` when `ifAbsent` was set and the blob already existed. */
  put(key: string, bytes: Uint8Array, options?: PutOptions): Promise<{ created: boolean }>;
  get(key: string): Promise<Uint8Array | null>;
  head(key: string): Promise<BlobHead | null>;
  delete(key: string): Promise<void>;
  list(prefix: string): Promise<string[]>;
  /** A short-lived URL a client can GET without an API key. */
  downloadUrl(key: string, options: DownloadUrlOptions): Promise<string>;
}
