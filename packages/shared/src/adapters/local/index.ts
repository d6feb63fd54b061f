import path from "node:path";

import type { Ports } from "../../ports/index.js";
import { FileBlobStore } from "./file-blob-store.js";
import { openSqliteDatabase } from "./sqlite-database.js";
import { sqliteHealthCheck } from "./sqlite-health.js";
import { SqliteJobStore } from "./sqlite-job-store.js";
import { SqliteKeyStore } from "./sqlite-key-store.js";
import { SqliteQueue } from "./sqlite-queue.js";
import { SqliteWorkerRegistry } from "./sqlite-worker-registry.js";

export { FileBlobStore, validateKey } from "./file-blob-store.js";
export type { FileBlobStoreOptions } from "./file-blob-store.js";
export { openSqliteDatabase, SCHEMA_VERSION } from "./sqlite-database.js";
export type { SqliteDatabase } from "./sqlite-database.js";
export { SqliteJobStore } from "./sqlite-job-store.js";
export type { SqliteJobStoreOptions } from "./sqlite-job-store.js";
export { SqliteKeyStore } from "./sqlite-key-store.js";
export type { SqliteKeyStoreOptions } from "./sqlite-key-store.js";
export { SqliteQueue } from "./sqlite-queue.js";
export type { SqliteQueueOptions } from "./sqlite-queue.js";
export { SqliteWorkerRegistry } from "./sqlite-worker-registry.js";

export interface LocalPortsOptions {
  /** Holds `kiln.db` and `blobs/`; the API and every worker on the machine share it. */
  dataDir: string;
  /** Where the API is reachable, for download URLs. */
  publicBaseUrl: string;
  /** HMAC secret for download URLs; the API verifies with the same one. */
  urlSecret: string;
  /** Deliveries per message before it goes to the dead-letter queue. */
  maxReceives: number;
  /** Epoch ms; injectable so tests can move time. */
  now?: () => number;
}

/** Kiln's embedded default: every port on one SQLite database and a folder of files. */
export function openLocalPorts(options: LocalPortsOptions): Ports {
  const dataDir = path.resolve(options.dataDir);
  const db = openSqliteDatabase(dataDir);
  const { now } = options;
  try {
    const queue = new SqliteQueue(db, { maxReceives: options.maxReceives, now });
    return {
      queue,
      blobs: new FileBlobStore({ dataDir, publicBaseUrl: options.publicBaseUrl, urlSecret: options.urlSecret, now }),
      jobs: new SqliteJobStore(db, { now, queue }),
      keys: new SqliteKeyStore(db, { now }),
      workers: new SqliteWorkerRegistry(db),
      health: sqliteHealthCheck(db, path.join(dataDir, "kiln.db")),
      async close() {
        await queue.close();
        db.close();
      },
    };
  } catch (e) {
    db.close();
    throw e;
  }
}
