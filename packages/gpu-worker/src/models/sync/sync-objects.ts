import fs from "node:fs";
import path from "node:path";

import { KilnError, type PausePoint } from "@kiln/shared";
import type { RangedObjectSource } from "@kiln/shared/aws";
import type { Logger } from "@kiln/shared/node";

import { tryLock } from "./file-lock.js";
import { sha256File } from "./manifest.js";

/**
 * Syncs objects to a local directory: parallel ranged GETs into a sparse partial file, each part
 * recorded once it is on disk (so a killed sync resumes with the parts it had), the whole file
 * hashed against its SHA-256 before an atomic rename makes it visible. Containers of one instance
 * share `dir`: a per-file lock (see file-lock.ts) makes one download and the others wait for it.
 *
 * Layout in `dir`: the files at their paths; `.kiln-sync/` holds locks, partial files, their part
 * records, and `<path>.sha256` stamps saying which content a finished file has.
 */
export interface SyncFile {
  /** Object key in the source. */
  key: string;
  /** Path under `dir`. */
  path: string;
  size: number;
  sha256: string;
}

export interface SyncOptions {
  source: RangedObjectSource;
  files: readonly SyncFile[];
  dir: string;
  /** Ranged GETs in flight at once, over all files (KILN_SYNC_CONCURRENCY). */
  concurrency?: number;
  /** Bytes per ranged GET (KILN_SYNC_PART_MIB). */
  partBytes?: number;
  logger?: Logger;
  /** Fault tests: `model-sync:part-recorded` after a part is on disk and recorded. */
  pause?: PausePoint;
  /** Lock heartbeat and staleness (tests shorten them). */
  lock?: { beatMs?: number; staleMs?: number };
}

export interface SyncReport {
  files: number;
  bytes: number;
  /** Bytes this call fetched (0 when everything was there, or another process fetched it). */
  downloadedBytes: number;
  /** Parts found complete from an earlier, interrupted sync. */
  reusedParts: number;
  /** Files another process was syncing, which this call waited for. */
  waitedFiles: number;
  seconds: number;
}

const SYNC_DIR = ".kiln-sync";
const WAIT_POLL_MS = 100;

export async function syncObjects(options: SyncOptions): Promise<SyncReport> {
  const started = performance.now();
  const concurrency = options.concurrency ?? 8;
  const partBytes = options.partBytes ?? 16 * 1024 * 1024;
  fs.mkdirSync(path.join(options.dir, SYNC_DIR), { recursive: true });
  const report: SyncReport = {
    files: options.files.length,
    bytes: options.files.reduce((n, f) => n + f.size, 0),
    downloadedBytes: 0,
    reusedParts: 0,
    waitedFiles: 0,
    seconds: 0,
  };
  // One pool of ranged GETs over all files, so many small files and one huge one both keep it full.
  const pool = new Pool(concurrency);
  await Promise.all(options.files.map((file) => syncFile(options, file, partBytes, pool, report)));
  report.seconds = (performance.now() - started) / 1000;
  options.logger?.info(
    {
      files: report.files,
      bytes: report.bytes,
      downloadedBytes: report.downloadedBytes,
      reusedParts: report.reusedParts,
      waitedFiles: report.waitedFiles,
      seconds: Number(report.seconds.toFixed(3)),
      source: options.source.label,
      dir: options.dir,
    },
    "model sync finished",
  );
  return report;
}

const stateFile = (dir: string, rel: string, ext: string) =>
  path.join(dir, SYNC_DIR, `${rel.replace(/[\\/]/g, "__")}.${ext}`);

function isCurrent(options: SyncOptions, file: SyncFile): boolean {
  const final = path.join(options.dir, file.path);
  try {
    return (
      fs.statSync(final).size === file.size &&
      fs.readFileSync(stateFile(options.dir, file.path, "sha256"), "utf8").trim() === file.sha256
    );
  } catch {
    return false;
  }
}

async function syncFile(
  options: SyncOptions,
  file: SyncFile,
  partBytes: number,
  pool: Pool,
  report: SyncReport,
): Promise<void> {
  let waited = false;
  for (;;) {
    if (isCurrent(options, file)) {
      if (waited) report.waitedFiles++;
      return;
    }
    const lock = tryLock(stateFile(options.dir, file.path, "lock"), options.lock);
    if (!lock) {
      // Another container is fetching it: wait for its stamp (or for its lock to go stale).
      waited = true;
      await new Promise((r) => setTimeout(r, WAIT_POLL_MS));
      continue;
    }
    try {
      if (isCurrent(options, file)) {
        if (waited) report.waitedFiles++;
        return;
      }
      if (await adoptUnstamped(options, file)) return;
      await download(options, file, partBytes, pool, report);
      return;
    } finally {
      lock.release();
    }
  }
}

/** A file at its path without a stamp (a sync killed between rename and stamp, a pre-seeded disk): hash it once. */
async function adoptUnstamped(options: SyncOptions, file: SyncFile): Promise<boolean> {
  const final = path.join(options.dir, file.path);
  try {
    if (fs.statSync(final).size !== file.size) return false;
  } catch {
    return false;
  }
  if ((await sha256File(final)) !== file.sha256) return false;
  writeStamp(options.dir, file);
  return true;
}

function writeStamp(dir: string, file: SyncFile): void {
  const stamp = stateFile(dir, file.path, "sha256");
  fs.writeFileSync(`${stamp}.tmp-${process.pid}`, file.sha256);
  fs.renameSync(`${stamp}.tmp-${process.pid}`, stamp);
}

interface PartRecord {
  sha256: string;
  size: number;
  partBytes: number;
  done: number[];
}

async function download(
  options: SyncOptions,
  file: SyncFile,
  partBytes: number,
  pool: Pool,
  report: SyncReport,
): Promise<void> {
  const { dir, source } = options;
  const partial = stateFile(dir, file.path, "part");
  const recordPath = stateFile(dir, file.path, "parts.json");
  const parts = Math.max(1, Math.ceil(file.size / partBytes));
  let record: PartRecord | undefined;
  try {
    record = JSON.parse(fs.readFileSync(recordPath, "utf8")) as PartRecord;
  } catch {
    record = undefined;
  }
  // Parts of another version of the file, or of another part size, are not reused.
  if (
    !record ||
    record.sha256 !== file.sha256 ||
    record.size !== file.size ||
    record.partBytes !== partBytes ||
    !fs.existsSync(partial)
  ) {
    record = { sha256: file.sha256, size: file.size, partBytes, done: [] };
    fs.rmSync(partial, { force: true });
  }
  const done = new Set(record.done);
  report.reusedParts += done.size;
  const remoteSize = await source.size(file.key);
  if (remoteSize !== file.size) {
    throw new KilnError(
      "model_sync_size_mismatch",
      `${source.label}/${file.key} is ${remoteSize} bytes but its manifest says ${file.size}: the object and its manifest disagree; re-upload one of them.`,
    );
  }
  // A sparse file of the final size: parts land at their offsets in any order.
  const fd = fs.openSync(partial, fs.existsSync(partial) ? "r+" : "w+");
  let recordWrites = Promise.resolve();
  const persist = (): Promise<void> =>
    (recordWrites = recordWrites.then(() => {
      const snapshot: PartRecord = { ...record!, done: [...done].sort((a, b) => a - b) };
      const tmp = `${recordPath}.tmp-${process.pid}`;
      fs.writeFileSync(tmp, JSON.stringify(snapshot));
      fs.renameSync(tmp, recordPath);
    }));
  try {
    fs.ftruncateSync(fd, file.size);
    const todo = Array.from({ length: parts }, (_, i) => i).filter((i) => !done.has(i));
    // allSettled: every part in flight has finished with the file descriptor before it is closed.
    const results = await Promise.allSettled(
      todo.map((index) =>
        pool.run(async () => {
          const start = index * partBytes;
          const end = Math.min(file.size, start + partBytes) - 1;
          let at = start;
          for await (const chunk of await source.read(file.key, start, end)) {
            if (at + chunk.byteLength > end + 1)
              throw new KilnError("model_sync_failed", `${source.label}/${file.key}: a ranged GET returned too much`);
            await writeAt(fd, chunk, at);
            at += chunk.byteLength;
          }
          if (at !== end + 1)
            throw new KilnError(
              "model_sync_failed",
              `${source.label}/${file.key}: bytes ${start}-${end} came back short (${at - start} bytes); the sync resumes from the parts it has on the next start.`,
              { retryable: true },
            );
          // On disk before it is recorded, so a recorded part survives a power cut as well as a kill.
          await new Promise<void>((res, rej) => fs.fdatasync(fd, (e) => (e ? rej(e) : res())));
          done.add(index);
          report.downloadedBytes += end + 1 - start;
          await persist();
          await options.pause?.("model-sync:part-recorded", { path: file.path, part: index, parts });
        }),
      ),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
  } finally {
    fs.closeSync(fd);
  }
  await recordWrites;
  const actual = await sha256File(partial);
  if (actual !== file.sha256) {
    fs.rmSync(partial, { force: true });
    fs.rmSync(recordPath, { force: true });
    throw new KilnError(
      "model_sync_hash_mismatch",
      `${source.label}/${file.key} has SHA-256 ${actual}, but its manifest says ${file.sha256}: the object is not the file the manifest describes (corrupt, or replaced without regenerating the manifest). The download was deleted; fix the object or the manifest and start again.`,
    );
  }
  const final = path.join(dir, file.path);
  fs.mkdirSync(path.dirname(final), { recursive: true });
  // Old stamp out, atomic rename, new stamp: a stamp never vouches for content it was not written for,
  // and a file at its path is always a verified one.
  fs.rmSync(stateFile(dir, file.path, "sha256"), { force: true });
  fs.renameSync(partial, final);
  writeStamp(dir, file);
  fs.rmSync(recordPath, { force: true });
}

function writeAt(fd: number, chunk: Uint8Array, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const go = (offset: number) =>
      fs.write(fd, chunk, offset, chunk.byteLength - offset, position + offset, (e, written) => {
        if (e) return reject(e);
        if (offset + written < chunk.byteLength) go(offset + written);
        else resolve();
      });
    go(0);
  });
}

/** At most `size` tasks at once, in submission order. */
class Pool {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly size: number) {}
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.size) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try {
      return await task();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}
