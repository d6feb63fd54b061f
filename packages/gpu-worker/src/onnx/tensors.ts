import * as ort from "onnxruntime-node";
import { float16BitsToFloat32, toFloat16 } from "@kiln/shared";
import type { IoSpec, LoadedSession } from "./session-factory.js";

export type { LoadedSession } from "./session-factory.js";

/**
 * Feeds built to what the loaded session declares: SDXL exports differ in `input_ids` dtype
 * (int32 or int64) and in `timestep` rank and dtype, so nothing here assumes one export.
 */
export function inputSpec(s: LoadedSession, name: string): IoSpec {
  const spec = s.inputs.find((i) => i.name === name);
  if (!spec) throw new Error(`session has no input named ${name}`);
  return spec;
}

export function idsTensor(s: LoadedSession, name: string, windows: Int32Array[]): ort.Tensor {
  const dims = [windows.length, windows[0]!.length];
  const flat = new Int32Array(dims[0]! * dims[1]!);
  windows.forEach((w, i) => flat.set(w, i * dims[1]!));
  if (inputSpec(s, name).dtype === "int64") return new ort.Tensor("int64", BigInt64Array.from(flat, (v) => BigInt(v)), dims);
  return new ort.Tensor("int32", flat, dims);
}

/** A float input in the dtype the session wants (fp16 exports take Uint16 bits). */
export function floatTensor(s: LoadedSession, name: string, data: Float32Array, dims: readonly number[]): ort.Tensor {
  if (inputSpec(s, name).dtype === "float16") return new ort.Tensor("float16", toFloat16(data), dims);
  return new ort.Tensor("float32", data, dims);
}

/** The UNet's `timestep`: rank 0 or 1 (length 1 or batch), float or int64, as the export declares. */
export function timestepTensor(s: LoadedSession, t: number, batch: number): ort.Tensor {
  const spec = inputSpec(s, "timestep");
  const rank = spec.shape?.length ?? 1;
  const fixed = spec.shape?.[0];
  const length = rank === 0 ? 1 : typeof fixed === "number" ? fixed : batch;
  const dims = rank === 0 ? [] : [length];
  switch (spec.dtype) {
    case "int64":
      return new ort.Tensor("int64", new BigInt64Array(length).fill(BigInt(Math.round(t))), dims);
    case "int32":
      return new ort.Tensor("int32", new Int32Array(length).fill(Math.round(t)), dims);
    case "float16":
      return new ort.Tensor("float16", toFloat16(new Float32Array(length).fill(t)), dims);
    default:
      return new ort.Tensor("float32", new Float32Array(length).fill(t), dims);
  }
}

/** Reads a float output as fp32 whatever the export's dtype. */
export function outputAsFloat32(t: ort.Tensor): Float32Array {
  if (t.type === "float32") return t.data as Float32Array;
  if (t.type === "float16") {
    const bits = t.data as Uint16Array;
    const out = new Float32Array(bits.length);
    for (let i = 0; i < bits.length; i++) out[i] = float16BitsToFloat32(bits[i]!);
    return out;
  }
  throw new Error(`expected a float output, got ${t.type}`);
}

