export * from "./queue.js";
export * from "./blob-store.js";
export * from "./job-store.js";
export * from "./key-store.js";
export * from "./worker-registry.js";

import type { BlobStore } from "./blob-store.js";
import type { JobStore } from "./job-store.js";
import type { KeyStore } from "./key-store.js";
import type { Queue } from "./queue.js";
import type { WorkerRegistry } from "./worker-registry.js";

/** One family of adapters: everything the API and the workers need from the outside world. */
export interface Ports {
  queue: Queue;
  blobs: BlobStore;
  jobs: JobStore;
  keys: KeyStore;
  /** Both families provide it; a host without it makes waiting reasons say "unknown". */
  workers?: WorkerRegistry;
  /**
   * Health of the stores themselves, for the API's /healthz: the local family checks that its
   * database can still be reopened and written (a deleted WAL loses every later write). Absent:
   * nothing to check beyond the requests themselves.
   */
  health?(): Promise<StoreHealth>;
  close(): Promise<void>;
}

export type StoreHealth = { ok: true } | { ok: false; reason: string };
