/**
 * API keys and usage counters. Keys are random, shown once, stored as a SHA-256 hash with a
 * public prefix for lookup. Local family: SQLite. AWS family: DynamoDB.
 */
export type KeyScope = "render" | "admin";

/**
 * Per-key limits; a field left out falls back to the configured default (`KILN_RATE_LIMIT_RPS` …).
 * 0 means "no limit" for every field but `burst`.
 */
export interface KeyLimits {
  /** Sustained request rate (token bucket refill), requests per second. */
  requestsPerSecond?: number;
  /** Bucket size: how many requests may arrive at once after a quiet spell (at least 1). */
  burst?: number;
  /** Jobs of this key that may be queued or running at once. */
  concurrentJobs?: number;
  /** Images this key may request per UTC day (the `n` of each accepted render). */
  imagesPerDay?: number;
}

export interface KeyRecord {
  id: string;
  /** Public, non-secret part of the key used for lookup (`kiln_<prefix>_…`). */
  prefix: string;
  name: string;
  scopes: KeyScope[];
  /** Hex SHA-256 of the whole key. */
  hash: string;
  createdAt: string;
  revokedAt?: string;
  limits?: KeyLimits;
  /**
   * `whsec_<base64>`: signs this key's webhook deliveries (Standard Webhooks). Stored in the clear
   * because signing needs it; it authenticates Kiln to the receiver and grants nothing on Kiln.
   */
  webhookSecret?: string;
}

/** The outcome of taking one token from a bucket. */
export interface TokenResult {
  allowed: boolean;
  /** Whole tokens left after this request. */
  remaining: number;
  /** When denied: ms until a token is available. 0 when allowed. */
  retryAfterMs: number;
  /** Ms until the bucket is full again. */
  resetMs: number;
}

/**
 * An `Idempotency-Key` claim. The first request with a key creates it `pending` and holds it by
 * `token`; it becomes `completed` with the response to replay, or is released (deleted) when the
 * request failed, so the client can try again with the same key.
 */
export interface IdempotencyRecord {
  /** Opaque, derived from the API key, the route and the client's Idempotency-Key. */
  id: string;
  /** Hash of the request (method, path, canonical body): the same key with another body is refused. */
  fingerprint: string;
  state: "pending" | "completed";
  /** Held by the request that created the record; only it may complete or release it. */
  token: string;
  /** Epoch ms after which a still-pending record may be taken over (its request is presumed dead). */
  lockedUntil: number;
  /** Epoch seconds after which the record counts as absent (DynamoDB TTL). */
  expiresAt: number;
  createdAt: string;
  /** Set when completed: what to replay. */
  response?: { status: number; body: string; location?: string };
  jobId?: string;
}

export interface KeyStore {
  insert(record: KeyRecord): Promise<void>;
  getByPrefix(prefix: string): Promise<KeyRecord | null>;
  get(id: string): Promise<KeyRecord | null>;
  list(): Promise<KeyRecord[]>;
  /** True if this call revoked the key; false if there is no such key or it was already revoked (the first time stands). */
  revoke(id: string, at: string): Promise<boolean>;
  /** Atomically adds `by` to the named counter and returns the new value. `expiresAt` is epoch seconds. */
  incrementCounter(name: string, by: number, expiresAt?: number): Promise<number>;
  /**
   * Takes one token from the named bucket, atomically across processes: `burst` tokens at most,
   * refilled at `ratePerSecond`. A denied call takes nothing. `nowMs` is the caller's clock.
   */
  takeToken(bucket: string, ratePerSecond: number, burst: number, nowMs: number): Promise<TokenResult>;
  /**
   * Creates `record` unless a live record with its id exists; returns that live record (nothing is
   * written) or null (created). Live: `expiresAt` not passed, and not pending past `lockedUntil`.
   */
  putIdempotency(record: IdempotencyRecord, nowMs: number): Promise<IdempotencyRecord | null>;
  /** The live record with this id, or null. */
  getIdempotency(id: string, nowMs: number): Promise<IdempotencyRecord | null>;
  /** Marks a pending record completed; false if `token` no longer holds it. */
  completeIdempotency(
    id: string,
    token: string,
    result: Pick<IdempotencyRecord, "response" | "jobId">,
  ): Promise<boolean>;
  /**
   * Moves a pending record's `lockedUntil` while its request still runs; false if `token` no longer
   * holds it. A short lock kept alive this way lapses soon after its request dies with its process.
   */
  renewIdempotency(id: string, token: string, lockedUntil: number): Promise<boolean>;
  /** Deletes a pending record held by `token`; false if it no longer holds it. */
  releaseIdempotency(id: string, token: string): Promise<boolean>;
  close?(): Promise<void>;
}
