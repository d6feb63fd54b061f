import type { onnx as OnnxTypes } from "onnx-proto";
import onnxProto from "onnx-proto";

import { attr, GraphBuilder } from "../models/tiny-models.js";

/**
 * EPContext wrapper models: an ONNX file holding one `com.microsoft` `EPContext` node around a
 * serialized TensorRT engine, so ONNX Runtime's TensorRT provider deserializes the engine instead of
 * building one (onnxruntime PR #18217, "EP Context Cache Feature Design"). The node's inputs and
 * outputs are the original graph's, with the same element types and (symbolic) shapes, so callers
 * feed the wrapper exactly as they fed the model it replaces.
 */

const { onnx } = onnxProto;
type ModelProto = OnnxTypes.ModelProto;
type ValueInfoProto = OnnxTypes.IValueInfoProto;

export const EPCONTEXT_DOMAIN = "com.microsoft";
export const EPCONTEXT_OP = "EPContext";
/** The `source` the TensorRT provider writes into the EPContext models it dumps. */
export const TENSORRT_EP_SOURCE = "TensorrtExecutionProvider";
/** protobuf refuses messages of 2 GiB and more; an embedded engine must leave room for the rest. */
export const MAX_EMBEDDED_ENGINE_BYTES = 2 ** 31 - 16 * 1024 * 1024;

/** One graph input or output: ONNX element type (1 float, 10 float16, 7 int64, …) and dims (numbers fixed, strings symbolic). */
export interface TensorIo {
  name: string;
  elemType: number;
  dims: (number | string)[];
}

export interface GraphIo {
  inputs: TensorIo[];
  outputs: TensorIo[];
}

export interface EpContextOptions {
  /** The original graph's inputs and outputs (see `readGraphIo`). */
  io: GraphIo;
  /**
   * `embed`: the engine bytes go into `ep_cache_context` (embed_mode 1; under 2 GiB only).
   * `file`: `ep_cache_context` names the engine file, relative to the wrapper's folder, without `..`
   * (embed_mode 0), as the TensorRT provider requires.
   */
  engine: { embed: Uint8Array } | { file: string };
  /** TensorRT version the engine was built with, e.g. "10.9.0". */
  epSdkVersion: string;
  /** Compute capability as the TensorRT provider spells it: "86" for 8.6. */
  hardwareArchitecture: string;
  /** Names the node and the partition, e.g. "unet_1024x1024_fp16". */
  partitionName: string;
  /** Free text kept in the wrapper (`notes`), e.g. the build command. */
  notes?: string;
}

/** The graph inputs (initializers excluded) and outputs of an ONNX model. */
export function readGraphIo(modelBytes: Uint8Array): GraphIo {
  const model = decode(modelBytes, "model");
  const graph = model.graph;
  if (!graph) throw new Error("the ONNX model has no graph");
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name ?? ""));
  return {
    inputs: (graph.input ?? []).filter((v) => !initializers.has(v.name ?? "")).map(tensorIo),
    outputs: (graph.output ?? []).map(tensorIo),
  };
}

function tensorIo(v: ValueInfoProto): TensorIo {
  const name = v.name ?? "";
  const tensor = v.type?.tensorType;
  if (!tensor) throw new Error(`graph value ${name} is not a tensor; an EPContext wrapper can only carry tensors`);
  const dims = (tensor.shape?.dim ?? []).map((d, i) => {
    if (d.dimParam) return d.dimParam;
    if (d.dimValue !== undefined && d.dimValue !== null && Number(d.dimValue) > 0) return Number(d.dimValue);
    // An unnamed dynamic dimension: give it a name so the wrapper keeps it dynamic.
    return `${name}_dim${i}`;
  });
  return { name, elemType: tensor.elemType ?? 0, dims };
}

function checkEngineFile(file: string): void {
  if (file.length === 0) throw new Error("the engine file name is empty");
  if (file.startsWith("/") || /^[A-Za-z]:[\\/]/.test(file))
    throw new Error(`engine file ${file} is absolute; the TensorRT provider only reads a path relative to the wrapper`);
  if (file.includes(".."))
    throw new Error(
      `engine file ${file} contains "..", which the TensorRT provider refuses; keep it beside the wrapper`,
    );
}

/** Serializes an EPContext wrapper model with the project's ONNX writer. */
export function writeEpContextModel(options: EpContextOptions): Uint8Array {
  const { io, engine } = options;
  if (io.inputs.length === 0 || io.outputs.length === 0)
    throw new Error("an EPContext wrapper needs the original graph's inputs and outputs");
  let embedMode: number;
  let context: Uint8Array;
  if ("embed" in engine) {
    if (engine.embed.byteLength > MAX_EMBEDDED_ENGINE_BYTES)
      throw new Error(
        `the engine is ${engine.embed.byteLength} bytes, too large to embed in an ONNX file (protobuf's 2 GiB limit); keep it beside the wrapper instead`,
      );
    embedMode = 1;
    context = engine.embed;
  } else {
    checkEngineFile(engine.file);
    embedMode = 0;
    context = new TextEncoder().encode(engine.file);
  }

  const g = new GraphBuilder(options.partitionName);
  for (const i of io.inputs) g.input(i.name, i.elemType, i.dims);
  for (const o of io.outputs) g.output(o.name, o.elemType, o.dims);
  g.domainOp(
    EPCONTEXT_DOMAIN,
    EPCONTEXT_OP,
    options.partitionName,
    io.inputs.map((i) => i.name),
    io.outputs.map((o) => o.name),
    [
      attr.int("main_context", 1),
      attr.int("embed_mode", embedMode),
      attr.bytes("ep_cache_context", context),
      attr.string("ep_sdk_version", options.epSdkVersion),
      attr.string("hardware_architecture", options.hardwareArchitecture),
      attr.string("partition_name", options.partitionName),
      attr.string("source", TENSORRT_EP_SOURCE),
      ...(options.notes ? [attr.string("notes", options.notes)] : []),
    ],
  );
  return g.encode(undefined, {
    irVersion: 8,
    producerName: "kiln-engines",
    producerVersion: "1",
    opsetImport: [
      { domain: "", version: 17 },
      { domain: EPCONTEXT_DOMAIN, version: 1 },
    ],
  }).model;
}

/** What an EPContext wrapper says, read back. */
export interface EpContextInfo {
  nodeName: string;
  io: GraphIo;
  nodeInputs: string[];
  nodeOutputs: string[];
  opsetImport: { domain: string; version: number }[];
  mainContext: number;
  embedMode: number;
  /** embed_mode 1: the engine bytes. */
  engineBytes?: Uint8Array;
  /** embed_mode 0: the engine file, relative to the wrapper. */
  engineFile?: string;
  epSdkVersion: string;
  hardwareArchitecture: string;
  partitionName: string;
  source: string;
  notes?: string;
}

/** Parses an EPContext wrapper and checks it holds exactly one `com.microsoft` `EPContext` node. */
export function readEpContextModel(bytes: Uint8Array): EpContextInfo {
  const model = decode(bytes, "EPContext wrapper");
  const nodes = model.graph?.node ?? [];
  if (nodes.length !== 1) throw new Error(`an EPContext wrapper has exactly one node; this model has ${nodes.length}`);
  const node = nodes[0]!;
  if (node.opType !== EPCONTEXT_OP || node.domain !== EPCONTEXT_DOMAIN)
    throw new Error(
      `the wrapper's node is ${node.domain || "ai.onnx"}.${node.opType}, not ${EPCONTEXT_DOMAIN}.${EPCONTEXT_OP}`,
    );
  const attrs = new Map((node.attribute ?? []).map((a) => [a.name ?? "", a]));
  const text = (name: string): string | undefined => {
    const a = attrs.get(name);
    return a?.s ? new TextDecoder().decode(a.s) : undefined;
  };
  const int = (name: string, fallback: number): number => {
    const a = attrs.get(name);
    return a?.i !== undefined && a.i !== null ? Number(a.i) : fallback;
  };
  if (!attrs.has("ep_cache_context")) throw new Error("the EPContext node has no ep_cache_context attribute");
  const embedMode = int("embed_mode", 1);
  const context = attrs.get("ep_cache_context")!.s ?? new Uint8Array();
  return {
    nodeName: node.name ?? "",
    io: readGraphIo(bytes),
    nodeInputs: [...(node.input ?? [])],
    nodeOutputs: [...(node.output ?? [])],
    opsetImport: (model.opsetImport ?? []).map((o) => ({ domain: o.domain ?? "", version: Number(o.version ?? 0) })),
    mainContext: int("main_context", 1),
    embedMode,
    ...(embedMode === 1 ? { engineBytes: context } : { engineFile: new TextDecoder().decode(context) }),
    epSdkVersion: text("ep_sdk_version") ?? "",
    hardwareArchitecture: text("hardware_architecture") ?? "",
    partitionName: text("partition_name") ?? "",
    source: text("source") ?? "",
    ...(text("notes") !== undefined ? { notes: text("notes") } : {}),
  };
}

function decode(bytes: Uint8Array, what: string): ModelProto {
  try {
    return onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new Error(`the ${what} is not a readable ONNX file (${(e as Error).message})`);
  }
}
