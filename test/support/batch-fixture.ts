/**
 * What the batch tests share: API deps on given ports with test-sized limits, the BatchDeps the
 * routes would build from them, and a manifest stored as `PUT /v1/manifests/{id}` stores it.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { createApiKey, DEFAULT_RENDER_LIMITS, type Ports } from "@kiln/shared";
import { openLocalPorts } from "@kiln/shared/local";

import type { BatchDeps } from "../../packages/api/src/batches/batch-service.js";
import { type Manifest, manifestSchema } from "../../packages/api/src/batches/manifest.js";
import { batchDepsFrom, type BatchOptions } from "../../packages/api/src/batches/routes.js";
import { batchKeys, writeJson } from "../../packages/api/src/batches/run-record.js";
import type { StoredManifest } from "../../packages/api/src/batches/schedule.js";
import type { ApiDeps } from "../../packages/api/src/deps.js";

export function batchApiDeps(ports: Ports, overrides: Partial<ApiDeps> = {}): ApiDeps {
  return {
    ports,
    publicUrl: "http://127.0.0.1:9",
    limits: DEFAULT_RENDER_LIMITS,
    maxBodyBytes: 65536,
    downloadUrlSeconds: 60,
    retentionHours: 1,
    ...overrides,
  };
}

/** BatchDeps as the routes build them; a small window and the config's default step rate unless given. */
export function batchTestDeps(ports: Ports, options: BatchOptions = {}, overrides: Partial<ApiDeps> = {}): BatchDeps {
  return batchDepsFrom(batchApiDeps(ports, overrides), { window: 10, stepSeconds: 0.1, ...options });
}

/** A local family in a fresh temporary data dir; `close` removes it. */
export function openLocalBatchPorts(name: string): { ports: Ports; dir: string; close(): Promise<void> } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `kiln-${name}-`));
  const ports = openLocalPorts({
    dataDir: dir,
    publicBaseUrl: "http://127.0.0.1:9",
    urlSecret: "b".repeat(32),
    maxReceives: 3,
  });
  return {
    ports,
    dir,
    async close() {
      await ports.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function batchKey(ports: Ports, name = "batch"): Promise<string> {
  return (await createApiKey(ports.keys, { name, scopes: ["render"] })).record.id;
}

/** 64-px, 2-step base renders: what every batch test renders unless it says otherwise. */
export function tinyManifest(fields: Record<string, unknown>): Manifest {
  return manifestSchema.parse({ defaults: { steps: 2, width: 64, height: 64, mode: "base" }, ...fields });
}

/** Stores a manifest the way `PUT /v1/manifests/{id}` does (the scheduler reads these). */
export async function storeManifest(
  ports: Ports,
  ownerKeyId: string,
  manifest: Manifest,
  updatedAt = new Date(),
): Promise<StoredManifest> {
  const stored: StoredManifest = {
    ownerKeyId,
    manifest,
    source: JSON.stringify(manifest),
    format: "json",
    updatedAt: updatedAt.toISOString(),
  };
  await writeJson(ports.blobs, batchKeys.manifest(ownerKeyId, manifest.id), stored);
  return stored;
}
