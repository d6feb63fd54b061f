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
  close(): Promise<void>;
}
