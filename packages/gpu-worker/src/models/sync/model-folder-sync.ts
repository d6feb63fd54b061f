import path from "node:path";

import { KilnError, type PausePoint } from "@kiln/shared";
import type { RangedObjectSource } from "@kiln/shared/aws";
import type { Logger } from "@kiln/shared/node";

import { MANIFEST_NAME, syncManifestSchema } from "./manifest.js";
import { syncObjects, type SyncReport } from "./sync-objects.js";

/** `s3://bucket/some/prefix` → bucket and prefix (no trailing slash); undefined for anything else. */
export function parseS3Url(url: string): { bucket: string; prefix: string } | undefined {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (!m) return undefined;
  return { bucket: m[1]!, prefix: (m[2] ?? "").replace(/\/+$/, "") };
}

/**
 * Syncs a model folder (or an engine set) stored under `prefix` with its `kiln-manifest.json` into
 * `dir`. The manifest is read first; every file it lists is fetched, verified and placed.
 */
export async function syncModelFolder(options: {
  source: RangedObjectSource;
  prefix: string;
  dir: string;
  concurrency?: number;
  partBytes?: number;
  logger?: Logger;
  pause?: PausePoint;
}): Promise<SyncReport> {
  const key = (rel: string) => (options.prefix ? `${options.prefix}/${rel}` : rel);
  const raw = await options.source.readAll(key(MANIFEST_NAME));
  let manifest;
  try {
    manifest = syncManifestSchema.parse(JSON.parse(new TextDecoder().decode(raw)));
  } catch (e) {
    throw new KilnError(
      "model_sync_manifest_invalid",
      `${options.source.label}/${key(MANIFEST_NAME)} is not a valid sync manifest (${String(e).slice(0, 300)}); regenerate it with buildManifest over the folder you uploaded.`,
    );
  }
  return syncObjects({
    source: options.source,
    files: manifest.files.map((f) => ({ ...f, key: key(f.path), path: path.posix.normalize(f.path) })),
    dir: options.dir,
    concurrency: options.concurrency,
    partBytes: options.partBytes,
    logger: options.logger,
    pause: options.pause,
  });
}
