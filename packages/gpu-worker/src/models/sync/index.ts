// Cold start: models and engines synced from S3 to the instance disk (see docs/architecture.md, "Model sync").
export { buildManifest, MANIFEST_NAME, sha256File, type SyncManifest, syncManifestSchema } from "./manifest.js";
export { parseS3Url, syncModelFolder } from "./model-folder-sync.js";
export { type SyncFile, type SyncOptions, type SyncReport, syncObjects } from "./sync-objects.js";
