import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import onnxProto from "onnx-proto";
import * as ort from "onnxruntime-node";

import {
  EPCONTEXT_DOMAIN,
  readEpContextModel,
  readGraphIo,
  writeEpContextModel,
} from "../../src/engines/epcontext-model.js";
import { writeTinyModel } from "../../src/models/tiny-models.js";

const { onnx } = onnxProto;

describe("EPContext wrapper", () => {
  let dir: string;
  let unetBytes: Uint8Array;
  // Stands in for a serialized TensorRT engine: the wrapper carries it without looking inside.
  const engine = new Uint8Array(4096).map((_, i) => (i * 31) & 0xff);

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-epctx-"));
    writeTinyModel(path.join(dir, "base"), { role: "base" });
    unetBytes = fs.readFileSync(path.join(dir, "base", "unet", "model.onnx"));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("reads the original UNet's inputs (initializers excluded) and outputs with their symbolic shapes", () => {
    const io = readGraphIo(unetBytes);
    assert.deepEqual(
      io.inputs.map((i) => i.name),
      ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"],
    );
    const sample = io.inputs[0]!;
    assert.equal(sample.elemType, onnx.TensorProto.DataType.FLOAT);
    assert.equal(sample.dims.length, 4);
    assert.equal(typeof sample.dims[0], "string");
    assert.equal(io.inputs.find((i) => i.name === "encoder_hidden_states")!.dims[2], 2048);
    assert.deepEqual(
      io.outputs.map((o) => o.name),
      ["out_sample"],
    );
  });

  it("embeds the engine: one com.microsoft EPContext node with the original I/O, read back by Kiln's reader", () => {
    const io = readGraphIo(unetBytes);
    const bytes = writeEpContextModel({
      io,
      engine: { embed: engine },
      epSdkVersion: "10.9.0",
      hardwareArchitecture: "86",
      partitionName: "unet_1024x1024_fp16",
      notes: "trtexec --fp16",
    });
    const info = readEpContextModel(bytes);
    assert.equal(info.nodeName, "unet_1024x1024_fp16");
    assert.equal(info.embedMode, 1);
    assert.equal(info.mainContext, 1);
    assert.ok(Buffer.from(info.engineBytes!).equals(Buffer.from(engine)));
    assert.equal(info.engineFile, undefined);
    assert.equal(info.epSdkVersion, "10.9.0");
    assert.equal(info.hardwareArchitecture, "86");
    assert.equal(info.partitionName, "unet_1024x1024_fp16");
    assert.equal(info.source, "TensorrtExecutionProvider");
    assert.equal(info.notes, "trtexec --fp16");
    assert.deepEqual(info.io, io);
    assert.deepEqual(
      info.nodeInputs,
      io.inputs.map((i) => i.name),
    );
    assert.deepEqual(info.nodeOutputs, ["out_sample"]);
    assert.deepEqual(info.opsetImport, [
      { domain: "", version: 17 },
      { domain: "com.microsoft", version: 1 },
    ]);
  });

  it("references an engine beside the file (embed_mode 0), and the raw onnx-proto decode agrees", () => {
    const bytes = writeEpContextModel({
      io: readGraphIo(unetBytes),
      engine: { file: "engine.trt" },
      epSdkVersion: "10.9.0",
      hardwareArchitecture: "89",
      partitionName: "unet_1152x896_fp16",
    });
    const model = onnx.ModelProto.decode(bytes);
    assert.equal(onnx.ModelProto.verify(model), null);
    const plain = onnx.ModelProto.toObject(model, { bytes: String, longs: Number, defaults: false }) as {
      graph: {
        node: { opType: string; domain: string; attribute: { name: string; i?: number; s?: string; type: number }[] }[];
        initializer?: unknown[];
      };
    };
    assert.equal(plain.graph.node.length, 1);
    assert.equal(plain.graph.node[0]!.opType, "EPContext");
    assert.equal(plain.graph.node[0]!.domain, EPCONTEXT_DOMAIN);
    assert.equal(plain.graph.initializer, undefined);
    const attrs = new Map(plain.graph.node[0]!.attribute.map((a) => [a.name, a]));
    assert.equal(attrs.get("embed_mode")!.i, 0);
    assert.equal(Buffer.from(attrs.get("ep_cache_context")!.s!, "base64").toString(), "engine.trt");
    assert.equal(attrs.get("ep_cache_context")!.type, onnx.AttributeProto.AttributeType.STRING);
    assert.equal(readEpContextModel(bytes).engineFile, "engine.trt");
  });

  it("refuses engine paths the TensorRT provider would refuse", () => {
    const io = readGraphIo(unetBytes);
    const base = { io, epSdkVersion: "10.9.0", hardwareArchitecture: "86", partitionName: "p" };
    assert.throws(() => writeEpContextModel({ ...base, engine: { file: "/abs/engine.trt" } }), /absolute/);
    assert.throws(() => writeEpContextModel({ ...base, engine: { file: "../engine.trt" } }), /"\.\."/);
  });

  it("refuses to read a plain model as a wrapper", () => {
    assert.throws(() => readEpContextModel(unetBytes), /exactly one node/);
  });

  it("is parsed by onnxruntime-node; the CPU provider refuses it because no CPU kernel implements EPContext", async () => {
    const file = path.join(dir, "unet_ctx.onnx");
    fs.writeFileSync(
      file,
      writeEpContextModel({
        io: readGraphIo(unetBytes),
        engine: { embed: engine },
        epSdkVersion: "10.9.0",
        hardwareArchitecture: "86",
        partitionName: "unet_1024x1024_fp16",
      }),
    );
    // ONNX Runtime decoded the file, found the node, its domain and its `source` attribute, and
    // refused because only the TensorRT provider runs such a node: the refusal a worker without
    // TensorRT gets, and the reason it falls back to the original model.
    await assert.rejects(
      ort.InferenceSession.create(file, { executionProviders: ["cpu"] }),
      /EPContext node generated by 'TensorrtExecutionProvider' is not compatible with any execution provider added to the session\. EPContext node name: 'unet_1024x1024_fp16'/,
    );
  });
});
