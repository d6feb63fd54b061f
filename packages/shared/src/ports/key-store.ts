/**
 * API keys and usage counters. Keys are random, shown once, stored as a SHA-256 hash with a
 * public prefix for lookup. Local family: SQLite. AWS family: DynamoDB.
 */
export type KeyScope = "render" | "admin";

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
  close?(): Promise<void>;
}
