import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

import { z } from "zod";

/**
 * A sync manifest: each file of a model folder (or engine set) with its size and SHA-256, stored
 * beside the files as `kiln-manifest.json`. The sync trusts nothing it has not hashed against it.
 */
export const MANIFEST_NAME = "kiln-manifest.json";

export const syncManifestSchema = z.object({
  v: z.literal(1),
  files: z
    .array(
      z.object({
        /** Relative path (`unet/model.onnx`), also the object key under the prefix. */
        path: z
          .string()
          .min(1)
          .refine((p) => !p.split(/[\\/]/).includes("..") && !path.isAbsolute(p), "must stay inside the folder"),
        size: z.number().int().min(0),
        sha256: z.string().regex(/^[0-9a-f]{64}$/),
      }),
    )
    .min(1),
});
export type SyncManifest = z.infer<typeof syncManifestSchema>;

/** SHA-256 of a file, streamed (multi-GiB files are never held in memory). */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** The manifest of a local folder (what an operator uploads beside the files). */
export async function buildManifest(dir: string): Promise<SyncManifest> {
  const files: SyncManifest["files"] = [];
  const walk = async (rel: string) => {
    for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) await walk(child);
      else if (entry.isFile() && child !== MANIFEST_NAME) {
        const full = path.join(dir, child);
        files.push({ path: child, size: fs.statSync(full).size, sha256: await sha256File(full) });
      }
    }
  };
  await walk("");
  files.sort((a, b) => a.path.localeCompare(b.path));
  return { v: 1, files };
}
