import { float16BitsToFloat32, float32ToFloat16Bits, toFloat16 } from "@kiln/shared";
import * as ort from "onnxruntime-node";

import { isRemote } from "./device-thread/device-thread.js";
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
  if (inputSpec(s, name).dtype === "int64")
    return new ort.Tensor(
      "int64",
      BigInt64Array.from(flat, (v) => BigInt(v)),
      dims,
    );
  return new ort.Tensor("int32", flat, dims);
}

/** A float input in the dtype the session wants (fp16 exports take Uint16 bits). */
export function floatTensor(s: LoadedSession, name: string, data: Float32Array, dims: readonly number[]): ort.Tensor {
  if (inputSpec(s, name).dtype === "float16") return new ort.Tensor("float16", toFloat16(data), dims);
  return new ort.Tensor("float32", data, dims);
}

/**
 * A float input fed from one buffer on every run of a loop: write `values`, call `sync()`, run. The tensor
 * object and its buffer are made once (the binding reads the buffer at each run); an fp16 export gets the
 * values converted into a fixed buffer of bits, not a new one per run.
 */
export class FloatFeed {
  readonly values: Float32Array;
  readonly tensor: ort.Tensor;
  private readonly bits: Uint16Array | undefined;

  constructor(s: LoadedSession, name: string, dims: readonly number[], values?: Float32Array) {
    const size = dims.reduce((a, b) => a * b, 1);
    const fp16 = inputSpec(s, name).dtype === "float16";
    // For a session on a device thread, shared memory: the thread is handed the buffer itself with each call instead
    // of a structured clone (~0.5 MiB per UNet step at 1024², serialized here on the path from one GPU call to the
    // next). The loop writes it only between calls (it awaits each), so it never changes during one.
    const memory = (bytes: number) => (isRemote(s.session) ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
    this.values = values ?? new Float32Array(fp16 ? new ArrayBuffer(size * 4) : memory(size * 4));
    this.bits = fp16 ? new Uint16Array(memory(size * 2)) : undefined;
    this.tensor = this.bits ? new ort.Tensor("float16", this.bits, dims) : new ort.Tensor("float32", this.values, dims);
    this.sync();
  }

  /** Makes the tensor hold `values` (a no-op for fp32 inputs, which share the buffer). */
  sync(): void {
    const { bits, values } = this;
    if (bits) for (let i = 0; i < values.length; i++) bits[i] = float32ToFloat16Bits(values[i]!);
  }
}

/** The UNet's `timestep` as one reusable tensor: rank 0 or 1 (length 1 or batch), float or int, as the export declares. */
export class TimestepFeed {
  readonly tensor: ort.Tensor;
  private readonly write: (t: number) => void;

  constructor(s: LoadedSession, batch: number) {
    const spec = inputSpec(s, "timestep");
    const rank = spec.shape?.length ?? 1;
    const fixed = spec.shape?.[0];
    const length = rank === 0 ? 1 : typeof fixed === "number" ? fixed : batch;
    const dims = rank === 0 ? [] : [length];
    switch (spec.dtype) {
      case "int64": {
        const data = new BigInt64Array(length);
        this.tensor = new ort.Tensor("int64", data, dims);
        this.write = (t) => data.fill(BigInt(Math.round(t)));
        break;
      }
      case "int32": {
        const data = new Int32Array(length);
        this.tensor = new ort.Tensor("int32", data, dims);
        this.write = (t) => data.fill(Math.round(t));
        break;
      }
      case "float16": {
        const data = new Uint16Array(length);
        this.tensor = new ort.Tensor("float16", data, dims);
        this.write = (t) => data.fill(float32ToFloat16Bits(t));
        break;
      }
      default: {
        const data = new Float32Array(length);
        this.tensor = new ort.Tensor("float32", data, dims);
        this.write = (t) => data.fill(t);
      }
    }
  }

  set(t: number): void {
    this.write(t);
  }
}

/**
 * Reads a float output as fp32 whatever the export's dtype. fp32 outputs are returned as they are;
 * fp16 ones are converted into `into` when given (a loop's fixed buffer), else into a new array.
 */
export function outputAsFloat32(t: ort.Tensor, into?: Float32Array): Float32Array {
  if (t.type === "float32") return t.data as Float32Array;
  if (t.type === "float16") {
    const bits = t.data as Uint16Array;
    const out = into && into.length === bits.length ? into : new Float32Array(bits.length);
    for (let i = 0; i < bits.length; i++) out[i] = float16BitsToFloat32(bits[i]!);
    return out;
  }
  throw new Error(`expected a float output, got ${t.type}`);
}
