import { z } from "zod";

import { KilnError } from "../errors.js";
import { fromFloat16, toFloat16 } from "./float16.js";

/**
 * The latents blob handed from one stage to the next:
 *
 *   "KLAT" | u16 version | u8 dtype | u8 rank | u32 × rank shape
 *   | u32 metaLength | meta (UTF-8 JSON) | u32 payloadLength | payload | SHA-256 of all before (32 bytes)
 *
 * All integers little-endian. dtype 1 = fp16 (transport default), 2 = fp32.
 * A blob that is truncated, fails its checksum or has an unknown version is rejected with
 * `latents_corrupt` / `latents_version_unsupported`, never used.
 */
export const LATENTS_MAGIC = "KLAT";
export const LATENTS_VERSION = 1;

const latentsMetaSchema = z
  .object({
    jobId: z.string(),
    stage: z.number().int().min(0),
    scheduler: z.string(),
    /** Hash of the scheduler config the latents were produced under. */
    schedulerConfigHash: z.string(),
    /** `ve`: x0 + σε (Euler family); `vp`: divided by √(σ²+1) (DPM-solver, DDIM). */
    latentSpace: z.enum(["ve", "vp"]),
    /** Schedule steps the producing stage ran, of `steps` in all. */
    stepIndex: z.number().int().min(0),
    steps: z.number().int().min(1),
    /** Timestep and σ the latents are at (σ = 0 for fully denoised latents). */
    timestep: z.number(),
    sigma: z.number().min(0),
    seed: z.number().int().min(0),
  })
  .strict();

export type LatentsMeta = z.infer<typeof latentsMetaSchema>;

export interface Latents {
  meta: LatentsMeta;
  /** [batch, 4, h, w] */
  shape: number[];
  data: Float32Array;
}

const DTYPE_F16 = 1;
const DTYPE_F32 = 2;

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

export async function encodeLatents(
  latents: Latents,
  options: { dtype?: "float16" | "float32" } = {},
): Promise<Uint8Array> {
  const count = latents.shape.reduce((a, b) => a * b, 1);
  if (count !== latents.data.length) {
    throw new KilnError(
      "latents_shape_mismatch",
      `latents shape ${latents.shape.join("×")} holds ${count} values, data has ${latents.data.length}`,
    );
  }
  const dtype = options.dtype === "float32" ? DTYPE_F32 : DTYPE_F16;
  const payload =
    dtype === DTYPE_F16
      ? new Uint8Array(toFloat16(latents.data).buffer)
      : new Uint8Array(latents.data.buffer, latents.data.byteOffset, latents.data.byteLength);
  const meta = new TextEncoder().encode(JSON.stringify(latentsMetaSchema.parse(latents.meta)));
  const headerBytes = 8 + 4 * latents.shape.length + 4 + meta.length + 4;
  const out = new Uint8Array(headerBytes + payload.length + 32);
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode(LATENTS_MAGIC), 0);
  view.setUint16(4, LATENTS_VERSION, true);
  view.setUint8(6, dtype);
  view.setUint8(7, latents.shape.length);
  let o = 8;
  for (const d of latents.shape) {
    view.setUint32(o, d, true);
    o += 4;
  }
  view.setUint32(o, meta.length, true);
  o += 4;
  out.set(meta, o);
  o += meta.length;
  view.setUint32(o, payload.length, true);
  o += 4;
  out.set(payload, o);
  o += payload.length;
  out.set(await sha256(out.subarray(0, o)), o);
  return out;
}

function corrupt(what: string): KilnError {
  return new KilnError(
    "latents_corrupt",
    `The latents blob is corrupt (${what}); the producing stage must run again.`,
    { retryable: true },
  );
}

export async function decodeLatents(input: Uint8Array): Promise<Latents> {
  // Copy into a plain ArrayBuffer: Web Crypto refuses views of shared memory.
  const bytes = new Uint8Array(input);
  if (bytes.length < 8 + 32) throw corrupt(`only ${bytes.length} bytes`);
  if (new TextDecoder().decode(bytes.subarray(0, 4)) !== LATENTS_MAGIC)
    throw corrupt("bad magic: not a Kiln latents blob");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint16(4, true);
  if (version !== LATENTS_VERSION) {
    throw new KilnError(
      "latents_version_unsupported",
      `The latents blob has format version ${version}; this worker reads version ${LATENTS_VERSION}. Run workers of one release per queue.`,
    );
  }
  const body = bytes.subarray(0, bytes.length - 32);
  const expected = await sha256(body);
  const stored = bytes.subarray(bytes.length - 32);
  if (!expected.every((b, i) => b === stored[i])) throw corrupt("checksum mismatch");
  const dtype = view.getUint8(6);
  const rank = view.getUint8(7);
  let o = 8;
  const need = (n: number) => {
    if (o + n > body.length) throw corrupt("header runs past the end");
  };
  need(4 * rank + 4);
  const shape: number[] = [];
  for (let i = 0; i < rank; i++, o += 4) shape.push(view.getUint32(o, true));
  const metaLength = view.getUint32(o, true);
  o += 4;
  need(metaLength + 4);
  let meta: LatentsMeta;
  try {
    meta = latentsMetaSchema.parse(JSON.parse(new TextDecoder().decode(bytes.subarray(o, o + metaLength))));
  } catch (e) {
    throw corrupt(`metadata unreadable: ${(e as Error).message}`);
  }
  o += metaLength;
  const payloadLength = view.getUint32(o, true);
  o += 4;
  const count = shape.reduce((a, b) => a * b, 1);
  const width = dtype === DTYPE_F16 ? 2 : dtype === DTYPE_F32 ? 4 : 0;
  if (!width) throw corrupt(`unknown dtype ${dtype}`);
  if (payloadLength !== count * width || o + payloadLength !== body.length)
    throw corrupt("payload length does not match shape");
  const payload = bytes.slice(o, o + payloadLength);
  const data = width === 2 ? fromFloat16(new Uint16Array(payload.buffer)) : new Float32Array(payload.buffer);
  return { meta, shape, data };
}
