import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

/**
 * What a TensorRT engine is tied to. An engine runs only on the GPU model (compute capability) and
 * TensorRT version it was built with, and the ORT provider that loads it links one CUDA and TensorRT
 * major; so the store keys engines by all of them, plus the exact ONNX part it was built from, the
 * resolution bucket and the precision.
 */

export const ENGINE_PARTS = ["unet", "vae_decoder", "text_encoder", "text_encoder_2"] as const;
export type EnginePart = (typeof ENGINE_PARTS)[number];
export type EnginePrecision = "fp16" | "fp32";

/** A resolution bucket in pixels (1024×1024, 1152×896, …). */
export interface Bucket {
  width: number;
  height: number;
}

/** The machine an engine is built for or loaded on. */
export interface EngineTarget {
  /** As `nvidia-smi --query-gpu=name` prints it, e.g. "NVIDIA A10G". */
  gpuName: string;
  /** As `nvidia-smi --query-gpu=compute_cap` prints it, e.g. "8.6". */
  computeCapability: string;
  tensorrtVersion: string;
  cudaVersion: string;
  ortVersion: string;
}

export interface EngineKey extends EngineTarget {
  /** Identifies the model: the first 16 hex digits of its UNet's hash (base and refiner differ). */
  modelId: string;
  part: EnginePart;
  /** sha256 of the part's model.onnx and its external data file. */
  partHash: string;
  /** Text encoders do not depend on the image size: their engines carry no bucket. */
  bucket: Bucket | null;
  precision: EnginePrecision;
}

export function bucketLabel(bucket: Bucket | null): string {
  return bucket ? `${bucket.width}x${bucket.height}` : "any";
}

/** Parses "1024x1024,1152x896"; sizes must be multiples of 64 (the SDXL UNet downsamples latents 3×). */
export function parseBuckets(text: string): Bucket[] {
  const buckets = text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((item) => {
      const m = /^(\d+)x(\d+)$/.exec(item);
      if (!m) throw new Error(`bucket "${item}" is not WIDTHxHEIGHT (e.g. 1024x1024)`);
      const width = Number(m[1]);
      const height = Number(m[2]);
      if (width % 64 !== 0 || height % 64 !== 0 || width < 64 || height < 64)
        throw new Error(`bucket ${item}: width and height must be positive multiples of 64`);
      return { width, height };
    });
  if (buckets.length === 0) throw new Error("no buckets given; say e.g. --buckets 1024x1024,1152x896");
  const seen = new Set<string>();
  for (const b of buckets) {
    const label = bucketLabel(b);
    if (seen.has(label)) throw new Error(`bucket ${label} is listed twice`);
    seen.add(label);
  }
  return buckets;
}

/** "NVIDIA GeForce RTX 4090" → "nvidia-geforce-rtx-4090": safe in blob keys and file names. */
export function slug(text: string): string {
  const s = text
    .toLowerCase()
    .replace(/[^a-z0-9.]+/g, "-")
    .replace(/^[-.]+|[-.]+$/g, "");
  return s || "unknown";
}

/** "8.6" → "86", the spelling of the TensorRT provider's `hardware_architecture`. */
export function hardwareArchitecture(computeCapability: string): string {
  return computeCapability.replace(".", "");
}

/** The folder of one engine, relative to the store root; every field of the key appears in it. */
export function engineDir(key: EngineKey): string {
  return [
    key.modelId,
    `${key.part}-${key.partHash.slice(0, 16)}`,
    `${slug(key.gpuName)}-sm${hardwareArchitecture(key.computeCapability)}`,
    `trt${key.tensorrtVersion}-cuda${key.cudaVersion}-ort${key.ortVersion}`,
    `${bucketLabel(key.bucket)}-${key.precision}`,
  ]
    .map(slug)
    .join("/");
}

/** One string per key, for maps and manifest lookups. */
export function engineId(key: EngineKey): string {
  return engineDir(key);
}

export const WRAPPER_FILE = "model_ctx.onnx";
export const ENGINE_FILE = "engine.trt";

// ---------------------------------------------------------------------------------------------
// Part hashes. A real UNet is ~5 GB, so the hash is streamed and remembered beside the file,
// keyed by size and mtime; a read-only model folder just hashes again.

const HASH_SIDECAR = ".kiln-sha256.json";

interface HashSidecar {
  files: Record<string, { size: number; mtimeMs: number }>;
  sha256: string;
}

async function sha256File(hash: ReturnType<typeof createHash>, file: string): Promise<void> {
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) hash.update(chunk as Buffer);
}

/** sha256 over `<partDir>/model.onnx` and, when present, `model.onnx_data`. */
export async function partHash(partDir: string): Promise<string> {
  const names = ["model.onnx", "model.onnx_data"].filter((n) => fs.existsSync(path.join(partDir, n)));
  if (!names.includes("model.onnx")) throw new Error(`${partDir}/model.onnx is missing`);
  const stats: HashSidecar["files"] = {};
  for (const n of names) {
    const st = fs.statSync(path.join(partDir, n));
    stats[n] = { size: st.size, mtimeMs: st.mtimeMs };
  }
  const sidecar = path.join(partDir, HASH_SIDECAR);
  try {
    const cached = JSON.parse(fs.readFileSync(sidecar, "utf8")) as HashSidecar;
    if (JSON.stringify(cached.files) === JSON.stringify(stats) && /^[0-9a-f]{64}$/.test(cached.sha256))
      return cached.sha256;
  } catch {
    // No sidecar yet, or an unreadable one: hash again.
  }
  const hash = createHash("sha256");
  for (const n of names) {
    hash.update(`${n}\0`);
    await sha256File(hash, path.join(partDir, n));
  }
  const sha256 = hash.digest("hex");
  try {
    fs.writeFileSync(sidecar, JSON.stringify({ files: stats, sha256 } satisfies HashSidecar));
  } catch {
    // A read-only model folder (mounted :ro in the GPU image): the hash is simply not remembered.
  }
  return sha256;
}

/** The model id: the first 16 hex digits of the UNet part's hash. */
export async function modelIdOf(modelDir: string): Promise<string> {
  return (await partHash(path.join(modelDir, "unet"))).slice(0, 16);
}
