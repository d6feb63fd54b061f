import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

import type { BlobStore } from "@kiln/shared";

import { sha256File } from "../models/sync/manifest.js";
import {
  type Bucket,
  bucketLabel,
  ENGINE_FILE,
  engineDir,
  engineId,
  type EngineKey,
  type EnginePart,
  type EnginePrecision,
  type EngineTarget,
  hardwareArchitecture,
  slug,
  WRAPPER_FILE,
} from "./engine-key.js";

/**
 * The engine store: TensorRT engines and their EPContext wrappers as blobs under `engines/`, through
 * the BlobStore port — files under the data dir on the local family, S3 on AWS — with one manifest
 * per model (`engines/<modelId>/manifest.json`) listing what exists, so a worker decides with one GET
 * which engines match its GPU.
 */

export const ENGINE_PREFIX = "engines";

/** One stored blob. */
export interface StoredChunk {
  key: string;
  size: number;
  sha256: string;
}

/**
 * A stored file: one blob, or for large engines (an fp16 SDXL UNet engine is ~5 GB, past what one
 * Buffer or one protobuf holds) consecutive chunks `<key>.part-NNNN`, each with its own hash, which
 * the worker appends in order; `sha256` is always over the whole file.
 */
export interface StoredFile extends StoredChunk {
  chunks?: StoredChunk[];
}

/** Engines larger than this are stored in chunks of this size. */
export const DEFAULT_CHUNK_BYTES = 256 * 1024 * 1024;

export interface EngineStoreOptions {
  chunkBytes?: number;
  /** Chunks fetched at once (each up to `chunkBytes` in memory). */
  fetchConcurrency?: number;
}

export interface ManifestEntry extends EngineKey {
  id: string;
  /** `building`: a build has started (written before trtexec runs); `ready`: both files are stored. */
  state: "building" | "ready";
  wrapper?: StoredFile;
  /** Absent when the engine is embedded in the wrapper. */
  engine?: StoredFile;
  updatedAt: string;
  buildSeconds?: number;
}

export interface EngineManifest {
  version: 1;
  modelId: string;
  entries: ManifestEntry[];
}

export type EngineState = "ready" | "missing" | "incompatible" | "building";

export type EngineLookup =
  | { state: "ready"; entry: ManifestEntry }
  | { state: "building"; entry: ManifestEntry; reason: string }
  | { state: "missing" | "incompatible"; reason: string };

export interface EngineQuery {
  modelId: string;
  part: EnginePart;
  partHash: string;
  bucket: Bucket | null;
  target: EngineTarget;
  /** Tried in order; default fp16 then fp32. */
  precisions?: readonly EnginePrecision[];
}

/** The chunks a killed fetch already wrote and checked, if its record is for this very file. */
function readDoneChunks(record: string, fileSha256: string, partial: string): number[] {
  if (!fs.existsSync(record) || !fs.existsSync(partial)) return [];
  try {
    const parsed = JSON.parse(fs.readFileSync(record, "utf8")) as { sha256?: string; done?: unknown };
    if (parsed.sha256 !== fileSha256 || !Array.isArray(parsed.done)) return [];
    return parsed.done.filter((i): i is number => Number.isInteger(i));
  } catch {
    return [];
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function sameBucket(a: Bucket | null, b: Bucket | null): boolean {
  return bucketLabel(a) === bucketLabel(b);
}

/** The first field in which an entry differs from what the worker has, said in words. */
function mismatch(entry: ManifestEntry, q: EngineQuery): string | undefined {
  const t = q.target;
  if (entry.partHash !== q.partHash)
    return `built from a different ${q.part} (hash ${entry.partHash.slice(0, 12)}, this model's is ${q.partHash.slice(0, 12)})`;
  if (slug(entry.gpuName) !== slug(t.gpuName)) return `built for ${entry.gpuName}, this GPU is ${t.gpuName}`;
  if (hardwareArchitecture(entry.computeCapability) !== hardwareArchitecture(t.computeCapability))
    return `built for compute capability ${entry.computeCapability}, this GPU has ${t.computeCapability}`;
  if (entry.tensorrtVersion !== t.tensorrtVersion)
    return `built with TensorRT ${entry.tensorrtVersion}, this worker has ${t.tensorrtVersion}`;
  if (entry.cudaVersion !== t.cudaVersion)
    return `built with CUDA ${entry.cudaVersion}, this worker has ${t.cudaVersion}`;
  if (entry.ortVersion !== t.ortVersion)
    return `built for onnxruntime ${entry.ortVersion}, this worker has ${t.ortVersion}`;
  return undefined;
}

/** Chooses the engine for one part and bucket from a manifest (pure; the worker's boot and tests use it). */
export function lookupEngine(manifest: EngineManifest | null, q: EngineQuery): EngineLookup {
  const where = `${q.part} ${bucketLabel(q.bucket)}`;
  if (!manifest) return { state: "missing", reason: `no engines stored for model ${q.modelId}` };
  const forSlot = manifest.entries.filter((e) => e.part === q.part && sameBucket(e.bucket, q.bucket));
  if (forSlot.length === 0) return { state: "missing", reason: `no engine was built for ${where}` };
  const precisions = q.precisions ?? ["fp16", "fp32"];
  const matching = forSlot.filter((e) => mismatch(e, q) === undefined && precisions.includes(e.precision));
  matching.sort((a, b) => precisions.indexOf(a.precision) - precisions.indexOf(b.precision));
  const ready = matching.find((e) => e.state === "ready");
  if (ready) return { state: "ready", entry: ready };
  const building = matching.find((e) => e.state === "building");
  if (building)
    return {
      state: "building",
      entry: building,
      reason: `an engine for ${where} is being built (since ${building.updatedAt})`,
    };
  const reasons = [...new Set(forSlot.map((e) => mismatch(e, q) ?? `only ${e.precision} exists`))];
  return {
    state: "incompatible",
    reason: `${forSlot.length} engine(s) for ${where}, none usable here: ${reasons.join("; ")}`,
  };
}

export class EngineStore {
  private readonly chunkBytes: number;
  private readonly fetchConcurrency: number;

  constructor(
    private readonly blobs: BlobStore,
    options: EngineStoreOptions = {},
  ) {
    this.chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.fetchConcurrency = Math.max(1, options.fetchConcurrency ?? 3);
  }

  /** Stores bytes or a file (read a chunk at a time) under `blobKey`, chunked when larger than a chunk. */
  private async storeFile(blobKey: string, source: Uint8Array | { path: string }): Promise<StoredFile> {
    const size = source instanceof Uint8Array ? source.byteLength : fs.statSync(source.path).size;
    const whole = createHash("sha256");
    const fd = source instanceof Uint8Array ? undefined : fs.openSync(source.path, "r");
    try {
      const read = (offset: number, length: number): Uint8Array => {
        if (source instanceof Uint8Array) return source.subarray(offset, offset + length);
        const buf = Buffer.allocUnsafe(length);
        let got = 0;
        while (got < length) got += fs.readSync(fd!, buf, got, length - got, offset + got);
        return buf;
      };
      const put = async (key: string, bytes: Uint8Array): Promise<StoredChunk> => {
        await this.blobs.put(key, bytes, { contentType: "application/octet-stream" });
        return { key, size: bytes.byteLength, sha256: sha256(bytes) };
      };
      if (size <= this.chunkBytes) {
        const bytes = read(0, size);
        return put(blobKey, bytes);
      }
      const chunks: StoredChunk[] = [];
      for (let offset = 0, i = 0; offset < size; offset += this.chunkBytes, i++) {
        const bytes = read(offset, Math.min(this.chunkBytes, size - offset));
        whole.update(bytes);
        chunks.push(await put(`${blobKey}.part-${String(i).padStart(4, "0")}`, bytes));
      }
      return { key: blobKey, size, sha256: whole.digest("hex"), chunks };
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }

  /**
   * Writes a stored file to `local` through `<local>.partial`: chunks are fetched `fetchConcurrency` at a
   * time and written at their offsets, each checked against its hash and recorded in
   * `<local>.partial.json` once on disk, so a worker killed mid-fetch resumes with the chunks it had
   * (a 5-GB engine is 20 chunks). The whole file's hash is checked before it is renamed into place.
   */
  private async fetchFile(file: StoredFile, local: string): Promise<void> {
    const partial = `${local}.partial`;
    const record = `${partial}.json`;
    const chunks = file.chunks ?? [file];
    const offsets = chunks.map((_, i) => chunks.slice(0, i).reduce((n, c) => n + c.size, 0));
    const done = new Set<number>(readDoneChunks(record, file.sha256, partial));
    if (done.size === 0) fs.rmSync(partial, { force: true });
    const fd = fs.openSync(partial, fs.existsSync(partial) ? "r+" : "w");
    const fail = (e: unknown): never => {
      fs.closeSync(fd);
      fs.rmSync(partial, { force: true });
      fs.rmSync(record, { force: true });
      throw e;
    };
    try {
      const todo = chunks.map((_, i) => i).filter((i) => !done.has(i));
      let next = 0;
      const fetchOne = async (): Promise<void> => {
        while (next < todo.length) {
          const i = todo[next++]!;
          const chunk = chunks[i]!;
          const bytes = await this.blobs.get(chunk.key);
          if (!bytes)
            throw new Error(
              `engine file ${chunk.key} is listed in the manifest but missing from the store; rebuild it`,
            );
          const actual = sha256(bytes);
          if (actual !== chunk.sha256)
            throw new Error(
              `engine file ${chunk.key} has sha256 ${actual.slice(0, 12)}, the manifest says ${chunk.sha256.slice(0, 12)}; it is corrupt, rebuild it`,
            );
          let written = 0;
          while (written < bytes.byteLength)
            written += fs.writeSync(fd, bytes, written, bytes.byteLength - written, offsets[i]! + written);
          fs.fsyncSync(fd);
          done.add(i);
          fs.writeFileSync(record, JSON.stringify({ sha256: file.sha256, done: [...done] }));
        }
      };
      await Promise.all(Array.from({ length: Math.min(this.fetchConcurrency, todo.length) }, fetchOne));
    } catch (e) {
      fail(e);
    }
    fs.closeSync(fd);
    const actual = await sha256File(partial);
    if (actual !== file.sha256) {
      fs.rmSync(partial, { force: true });
      fs.rmSync(record, { force: true });
      throw new Error(
        `engine file ${file.key} reassembled to sha256 ${actual.slice(0, 12)}, the manifest says ${file.sha256.slice(0, 12)}; it is corrupt, rebuild it`,
      );
    }
    fs.renameSync(partial, local);
    fs.rmSync(record, { force: true });
  }

  manifestKey(modelId: string): string {
    return `${ENGINE_PREFIX}/${slug(modelId)}/manifest.json`;
  }

  async manifest(modelId: string): Promise<EngineManifest | null> {
    const bytes = await this.blobs.get(this.manifestKey(modelId));
    if (!bytes) return null;
    let parsed: EngineManifest;
    try {
      parsed = JSON.parse(new TextDecoder().decode(bytes)) as EngineManifest;
    } catch (e) {
      throw new Error(
        `the engine manifest ${this.manifestKey(modelId)} is not JSON (${(e as Error).message}); rebuild the engines`,
      );
    }
    if (parsed.version !== 1 || !Array.isArray(parsed.entries))
      throw new Error(
        `the engine manifest ${this.manifestKey(modelId)} has an unknown layout (version ${parsed.version})`,
      );
    return parsed;
  }

  /**
   * Read-modify-write of the manifest. The store has no conditional writes on every family, so two
   * builders of one model at once could drop each other's entries: run one `kiln engines build` per
   * model at a time (it builds all parts and buckets itself).
   */
  private async upsert(entry: ManifestEntry): Promise<void> {
    const current = (await this.manifest(entry.modelId)) ?? {
      version: 1 as const,
      modelId: entry.modelId,
      entries: [],
    };
    const entries = current.entries.filter((e) => e.id !== entry.id);
    entries.push(entry);
    entries.sort((a, b) => a.id.localeCompare(b.id));
    await this.blobs.put(
      this.manifestKey(entry.modelId),
      new TextEncoder().encode(`${JSON.stringify({ ...current, entries }, null, 2)}\n`),
      { contentType: "application/json" },
    );
  }

  /** Records that a build of `key` started, so workers report `building` rather than `missing`. */
  async markBuilding(key: EngineKey): Promise<void> {
    await this.upsert({ ...key, id: engineId(key), state: "building", updatedAt: new Date().toISOString() });
  }

  /** Drops a `building` entry whose build failed; a ready engine of the same key is left alone. */
  async clearBuilding(key: EngineKey): Promise<void> {
    const current = await this.manifest(key.modelId);
    const id = engineId(key);
    if (!current?.entries.some((e) => e.id === id && e.state === "building")) return;
    const entries = current.entries.filter((e) => e.id !== id);
    await this.blobs.put(
      this.manifestKey(key.modelId),
      new TextEncoder().encode(`${JSON.stringify({ ...current, entries }, null, 2)}\n`),
      { contentType: "application/json" },
    );
  }

  /** Stores the wrapper (and the engine, unless embedded) and lists them in the manifest. */
  async put(
    key: EngineKey,
    files: { wrapper: Uint8Array; engine?: Uint8Array | { path: string } },
    info: { buildSeconds?: number } = {},
  ): Promise<ManifestEntry> {
    const dir = `${ENGINE_PREFIX}/${engineDir(key)}`;
    const stored = (name: string, source: Uint8Array | { path: string }): Promise<StoredFile> =>
      this.storeFile(`${dir}/${name}`, source);
    // The engine first: a wrapper that names a missing engine must never be listed.
    const engine = files.engine ? await stored(ENGINE_FILE, files.engine) : undefined;
    const wrapper = await stored(WRAPPER_FILE, files.wrapper);
    const entry: ManifestEntry = {
      ...key,
      id: engineId(key),
      state: "ready",
      wrapper,
      ...(engine ? { engine } : {}),
      updatedAt: new Date().toISOString(),
      ...(info.buildSeconds !== undefined ? { buildSeconds: info.buildSeconds } : {}),
    };
    await this.upsert(entry);
    return entry;
  }

  /**
   * Copies a ready engine into `cacheDir` (wrapper and engine side by side, as embed_mode 0 needs)
   * and returns the wrapper's path. Each file is checked against the manifest's sha256; a file
   * already there and verified before is reused.
   */
  async fetch(entry: ManifestEntry, cacheDir: string): Promise<string> {
    if (entry.state !== "ready" || !entry.wrapper) throw new Error(`engine ${entry.id} is not ready`);
    const dir = path.join(cacheDir, engineDir(entry));
    fs.mkdirSync(dir, { recursive: true });
    const files: [string, StoredFile][] = [[WRAPPER_FILE, entry.wrapper]];
    if (entry.engine) files.push([ENGINE_FILE, entry.engine]);
    for (const [name, file] of files) {
      const local = path.join(dir, name);
      const marker = path.join(dir, `.${name}.sha256`);
      if (fs.existsSync(local) && fs.existsSync(marker) && fs.readFileSync(marker, "utf8") === file.sha256) {
        if (fs.statSync(local).size === file.size) continue;
      }
      await this.fetchFile(file, local);
      fs.writeFileSync(marker, file.sha256);
    }
    return path.join(dir, WRAPPER_FILE);
  }
}
