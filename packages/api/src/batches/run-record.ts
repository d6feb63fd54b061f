import { type BlobStore, type JobStatus, KilnError, type RenderMode } from "@kiln/shared";

import type { BatchEstimate } from "./estimate.js";
import type { Manifest } from "./manifest.js";

export const RUN_STATUSES = ["queued", "running", "succeeded", "failed", "canceled"] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

/** One render of a run: its identity, the job that makes it, and what the run last saw of that job. */
export interface RunRender {
  /** The render's stable id (its first job's id). */
  key: string;
  /** The job making it in this run: `key`, or `key_r<n>` for the n-th attempt after failures. */
  jobId: string;
  prompt: string;
  seed: number;
  width: number;
  height: number;
  mode: RenderMode;
  /** skipped: an earlier run made it; pending: not yet in the batch lane; submitted: its job exists. */
  state: "skipped" | "pending" | "submitted";
  /** Last status read from the job. */
  status?: JobStatus;
  /** Blob keys of its images under the run's output prefix, once copied there. */
  outputs?: string[];
  error?: string;
}

export interface RunCounts {
  total: number;
  new: number;
  skipped: number;
  queued: number;
  running: number;
  succeeded: number;
  failed: number;
}

export interface BatchRun {
  v: 1;
  id: string;
  ownerKeyId: string;
  manifestId: string;
  manifest: Manifest;
  trigger: "manual" | "schedule";
  /** Scheduled fires: the fire time the run id derives from. */
  scheduledFor?: string;
  createdAt: string;
  updatedAt: string;
  finishedAt?: string;
  status: RunStatus;
  cancelRequested?: boolean;
  renders: RunRender[];
  counts: RunCounts;
  estimate: BatchEstimate;
  /** Blob key prefix of the images, contact sheet, index.json and index.html. */
  outputPrefix: string;
  contactSheetKey?: string;
  indexKey?: string;
  galleryKey?: string;
  summary?: string;
}

/** Where a key's batch state lives in the BlobStore; the same layout on both families. */
export const batchKeys = {
  manifest: (keyId: string, id: string) => `batches/${keyId}/manifests/${id}.json`,
  manifests: (keyId: string) => `batches/${keyId}/manifests/`,
  allManifests: () => `batches/`,
  run: (keyId: string, runId: string) => `batches/${keyId}/runs/${runId}.json`,
  runs: (keyId: string) => `batches/${keyId}/runs/`,
  /** Empty markers named `<inverted ms>_<run id>`: a key's runs newest first, for pages (pages.ts). */
  runIndex: (keyId: string, name: string) => `batches/${keyId}/run-index/${name}`,
  runIndexes: (keyId: string) => `batches/${keyId}/run-index/`,
  /** Marker of an unfinished run: the pump lists these instead of reading every run. */
  active: (keyId: string, runId: string) => `batch-active/${keyId}/${runId}`,
  allActive: () => `batch-active/`,
};

export function countRenders(renders: readonly RunRender[]): RunCounts {
  const counts: RunCounts = {
    total: renders.length,
    new: 0,
    skipped: 0,
    queued: 0,
    running: 0,
    succeeded: 0,
    failed: 0,
  };
  for (const r of renders) {
    if (r.state === "skipped") {
      counts.skipped++;
      continue;
    }
    counts.new++;
    if (r.state === "pending" || r.status === "queued" || r.status === undefined) counts.queued++;
    else if (r.status === "running") counts.running++;
    else if (r.status === "succeeded") counts.succeeded++;
    else counts.failed++;
  }
  return counts;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export async function readJson<T>(blobs: BlobStore, key: string): Promise<T | null> {
  const bytes = await blobs.get(key);
  if (!bytes) return null;
  try {
    return JSON.parse(decoder.decode(bytes)) as T;
  } catch (e) {
    throw new KilnError("batch_record_corrupt", `The stored batch record ${key} is not readable JSON.`, { cause: e });
  }
}

export async function writeJson(blobs: BlobStore, key: string, value: unknown): Promise<void> {
  await blobs.put(key, encoder.encode(JSON.stringify(value)), { contentType: "application/json" });
}
