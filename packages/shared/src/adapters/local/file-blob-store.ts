import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";

import { KilnError } from "../../errors.js";
import type { BlobHead, BlobStore, DownloadUrlOptions, PutOptions } from "../../ports/blob-store.js";
import { signedDownloadUrl } from "../../signed-url.js";

export interface FileBlobStoreOptions {
  /** Blobs live under `<dataDir>/blobs/`. */
  dataDir: string;
  /** Where the API is reachable, for download URLs (`http://127.0.0.1:8080`). */
  publicBaseUrl: string;
  /** HMAC secret shared with the API that verifies download URLs. */
  urlSecret: string;
  /** Epoch ms; decides download URL expiry. */
  now?: () => number;
}

const MAX_KEY_LENGTH = 1024;
/** Segments start with a letter or digit, so no key can name `.`, `..` or the store's dot-directories. */
const KEY_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/;
const PREFIX_PATTERN = /^[A-Za-z0-9._/-]*$/;
/** Temp files and content-type sidecars live in dot-directories that `list` never enters. */
const TMP_DIR = ".tmp";
const META_DIR = ".meta";

/**
 * The BlobStore port on plain files under `<dataDir>/blobs/`, one file per key, so a person can
 * look at the images directly. A blob appears whole or not at all: it is written to a temp file
 * and renamed into place (or hard-linked, for `ifAbsent`, which fails atomically if the key exists).
 * The content type, when given, is kept in a sidecar under `.meta/`.
 */
export class FileBlobStore implements BlobStore {
  readonly supportsConditionalPut = true;
  private readonly root: string;
  private readonly now: () => number;

  constructor(private readonly options: FileBlobStoreOptions) {
    this.root = path.join(options.dataDir, "blobs");
    this.now = options.now ?? Date.now;
  }

  async put(key: string, bytes: Uint8Array, options: PutOptions = {}): Promise<{ created: boolean }> {
    const file = this.fileOf(key);
    const tmp = await this.writeTemp(bytes);
    try {
      if (options.ifAbsent) {
        try {
          await withParentDir(file, () => fs.link(tmp, file));
        } catch (e) {
          if (errorCode(e) === "EEXIST") return { created: false };
          throw e;
        }
      } else {
        await withParentDir(file, () => fs.rename(tmp, file));
      }
    } finally {
      await fs.rm(tmp, { force: true });
    }
    await this.writeContentType(key, options.contentType);
    return { created: true };
  }

  async get(key: string): Promise<Uint8Array | null> {
    try {
      return new Uint8Array(await fs.readFile(this.fileOf(key)));
    } catch (e) {
      if (isMissing(e)) return null;
      throw e;
    }
  }

  async head(key: string): Promise<BlobHead | null> {
    let size: number;
    try {
      const stat = await fs.stat(this.fileOf(key));
      if (!stat.isFile()) return null;
      size = stat.size;
    } catch (e) {
      if (isMissing(e)) return null;
      throw e;
    }
    const contentType = await this.readContentType(key);
    return contentType === undefined ? { size } : { size, contentType };
  }

  async delete(key: string): Promise<void> {
    const file = this.fileOf(key);
    await fs.rm(file, { force: true });
    await fs.rm(this.metaFileOf(key), { force: true });
    await this.pruneEmptyDirs(path.dirname(file), this.root);
    await this.pruneEmptyDirs(path.dirname(this.metaFileOf(key)), path.join(this.root, META_DIR));
  }

  /** Keys starting with `prefix` (a plain string prefix, as in S3), sorted. */
  async list(prefix: string): Promise<string[]> {
    if (!PREFIX_PATTERN.test(prefix) || prefix.includes("..") || prefix.startsWith("/")) {
      throw badKey(prefix, "prefix");
    }
    // Only the directory the prefix is certainly inside needs walking.
    const dirPart = prefix.slice(0, prefix.lastIndexOf("/") + 1);
    const keys: string[] = [];
    await this.walk(dirPart, keys);
    return keys.filter((k) => k.startsWith(prefix)).sort();
  }

  async downloadUrl(key: string, options: DownloadUrlOptions): Promise<string> {
    validateKey(key);
    if (!Number.isFinite(options.expiresSeconds) || options.expiresSeconds <= 0) {
      throw new KilnError(
        "blob_url_invalid",
        `A download URL must live a positive number of seconds (got ${options.expiresSeconds}).`,
      );
    }
    return signedDownloadUrl({
      publicBaseUrl: this.options.publicBaseUrl,
      key,
      expires: Math.floor(this.now() / 1000 + options.expiresSeconds),
      secret: this.options.urlSecret,
      filename: options.filename,
    });
  }

  private fileOf(key: string): string {
    validateKey(key);
    return path.join(this.root, ...key.split("/"));
  }

  private metaFileOf(key: string): string {
    return path.join(this.root, META_DIR, ...key.split("/"));
  }

  private async writeTemp(bytes: Uint8Array): Promise<string> {
    const dir = path.join(this.root, TMP_DIR);
    await fs.mkdir(dir, { recursive: true, mode: PRIVATE_DIR });
    const tmp = path.join(dir, `${randomBytes(12).toString("hex")}.part`);
    const handle = await fs.open(tmp, "wx", PRIVATE_FILE);
    try {
      // Images and their metadata belong to the API keys' owners: private whatever the umask.
      await handle.chmod(PRIVATE_FILE);
      await handle.writeFile(bytes);
      // Without the fsync a crash soon after the rename can leave an empty file under the key.
      await handle.sync();
    } finally {
      await handle.close();
    }
    return tmp;
  }

  private async writeContentType(key: string, contentType: string | undefined): Promise<void> {
    const meta = this.metaFileOf(key);
    if (contentType === undefined) {
      await fs.rm(meta, { force: true });
      return;
    }
    const tmp = await this.writeTemp(new TextEncoder().encode(JSON.stringify({ contentType })));
    try {
      await withParentDir(meta, () => fs.rename(tmp, meta));
    } finally {
      await fs.rm(tmp, { force: true });
    }
  }

  private async readContentType(key: string): Promise<string | undefined> {
    try {
      const meta = JSON.parse(await fs.readFile(this.metaFileOf(key), "utf8")) as { contentType?: unknown };
      return typeof meta.contentType === "string" ? meta.contentType : undefined;
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
  }

  private async walk(relDir: string, out: string[]): Promise<void> {
    let entries;
    try {
      entries = await fs.readdir(path.join(this.root, ...relDir.split("/").filter(Boolean)), { withFileTypes: true });
    } catch (e) {
      if (isMissing(e)) return;
      throw e;
    }
    for (const entry of entries) {
      if (entry.name.startsWith(".")) continue;
      const rel = relDir + entry.name;
      if (entry.isDirectory()) await this.walk(`${rel}/`, out);
      else if (entry.isFile()) out.push(rel);
    }
  }

  /** S3 has no directories; removing emptied ones keeps expired jobs from leaving thousands behind. */
  private async pruneEmptyDirs(dir: string, stopAt: string): Promise<void> {
    for (let current = dir; current.startsWith(stopAt + path.sep); current = path.dirname(current)) {
      try {
        await fs.rmdir(current);
      } catch {
        return; // not empty, already gone, or in use by a concurrent put
      }
    }
  }
}

/** Throws a KilnError unless `key` is a safe relative blob key (`jobs/<id>/images/0.png`). */
export function validateKey(key: string): void {
  if (
    typeof key !== "string" ||
    key.length === 0 ||
    key.length > MAX_KEY_LENGTH ||
    !KEY_PATTERN.test(key) ||
    key.includes("..")
  ) {
    throw badKey(key, "key");
  }
}

const badKey = (key: string, what: "key" | "prefix"): KilnError =>
  new KilnError(
    "blob_key_invalid",
    `Blob ${what} ${JSON.stringify(key)} is not allowed: use up to ${MAX_KEY_LENGTH} characters of letters, digits, ".", "_", "-" in "/"-separated segments that start with a letter or digit, with no "..".`,
    { status: 400 },
  );

/** Blob files and folders: the owner only (the umask can narrow these, never widen them). */
const PRIVATE_FILE = 0o600;
const PRIVATE_DIR = 0o700;

/** Runs a link/rename into `file`, creating its directory; retried because a concurrent delete may prune it in between. */
async function withParentDir(file: string, op: () => Promise<void>): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    await fs.mkdir(path.dirname(file), { recursive: true, mode: PRIVATE_DIR });
    try {
      await op();
      return;
    } catch (e) {
      if (errorCode(e) !== "ENOENT" || attempt >= 3) throw e;
    }
  }
}

const errorCode = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code;
const isMissing = (e: unknown): boolean => {
  const code = errorCode(e);
  return code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR";
};
