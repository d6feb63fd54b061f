import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { createLogger } from "@kiln/shared/node";
import { openTempLocalPorts, type TempLocalPorts } from "@kiln/shared/testing";

import { loadSdxlModel, type SdxlModel } from "../../src/engine/sdxl-model.js";
import { ENGINE_FILE, type EngineKey, type EngineTarget, modelIdOf, partHash } from "../../src/engines/engine-key.js";
import { attachEngineSessions, type EngineSlotHealth } from "../../src/engines/engine-sessions.js";
import { EngineStore } from "../../src/engines/engine-store.js";
import { readGraphIo, writeEpContextModel } from "../../src/engines/epcontext-model.js";
import { NO_GPU_MESSAGE } from "../../src/engines/toolchain.js";
import { nullExecutor, startHealthServer, Worker } from "../../src/index.js";
import { writeTinyModel } from "../../src/models/tiny-models.js";
import type { ExecutionProviderName } from "../../src/onnx/session-factory.js";

const A10G: EngineTarget = {
  gpuName: "NVIDIA A10G",
  computeCapability: "8.6",
  tensorrtVersion: "10.9.0",
  cudaVersion: "12.8",
  ortVersion: "1.30.0",
};
const BUCKETS = [
  { width: 1024, height: 1024 },
  { width: 1152, height: 896 },
];

/** Records what the engine loader logs, as pino would receive it. */
function recordingLogger() {
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  return {
    lines,
    info: (obj: object, msg: string) => lines.push({ level: "info", obj: obj as Record<string, unknown>, msg }),
    warn: (obj: object, msg: string) => lines.push({ level: "warn", obj: obj as Record<string, unknown>, msg }),
  };
}

describe("worker engine sessions: lookup, fallback per part and bucket, health", () => {
  let dir: string;
  let local: TempLocalPorts;
  let store: EngineStore;
  let model: SdxlModel;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-engine-sessions-"));
    const modelDir = path.join(dir, "base");
    writeTinyModel(modelDir, { role: "base" });
    local = openTempLocalPorts({
      prefix: "kiln-engine-sessions-",
      publicBaseUrl: "http://127.0.0.1:9",
      urlSecret: "engine-sessions-secret-0123456789",
      maxReceives: 3,
    });
    store = new EngineStore(local.ports.blobs);
    // The model's own sessions, as a worker without CUDA has them.
    model = await loadSdxlModel(modelDir, "base", { providers: ["cpu"] });

    const modelId = await modelIdOf(modelDir);
    const unetHash = await partHash(path.join(modelDir, "unet"));
    const vaeHash = await partHash(path.join(modelDir, "vae_decoder"));
    const unetKey: EngineKey = {
      ...A10G,
      modelId,
      part: "unet",
      partHash: unetHash,
      bucket: BUCKETS[0]!,
      precision: "fp16",
    };
    // A ready engine for unet 1024x1024 on this (A10G) target. Its bytes are not a TensorRT engine,
    // so TensorRT refuses it wherever it runs — and here the provider library is absent anyway.
    const wrapper = writeEpContextModel({
      io: readGraphIo(fs.readFileSync(path.join(modelDir, "unet", "model.onnx"))),
      engine: { file: ENGINE_FILE },
      epSdkVersion: A10G.tensorrtVersion,
      hardwareArchitecture: "86",
      partitionName: "unet_1024x1024_fp16",
    });
    await store.put(unetKey, { wrapper, engine: new Uint8Array(2048).fill(7) });
    // unet 1152x896: only an engine built for another GPU.
    await store.put(
      { ...unetKey, gpuName: "NVIDIA L4", computeCapability: "8.9", bucket: BUCKETS[1]! },
      { wrapper, engine: new Uint8Array(16) },
    );
    // vae_decoder 1024x1024: a build in progress; 1152x896: nothing.
    await store.markBuilding({ ...unetKey, part: "vae_decoder", partHash: vaeHash, precision: "fp32" });
  });
  after(async () => {
    await model.engines?.release();
    await model.release();
    await local.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("a provider name the binding rejects sends the engine's slot to the model's own session", async () => {
    const health = await attachEngineSessions(
      { base: model },
      {
        store,
        cacheDir: path.join(dir, "cache"),
        buckets: [BUCKETS[0]!],
        target: A10G,
        engineProviders: ["kiln-rejected-provider" as ExecutionProviderName],
      },
    );
    const unet = health().base!.find((s) => s.part === "unet")!;
    assert.equal(unet.state, "incompatible");
    assert.equal(unet.provider, "cpu");
    assert.match(unet.reason!, /kiln-rejected-provider: .*backend not found/);
  });

  it("reports each part and bucket (incompatible, missing, building) with the provider really used, logging one line each", async () => {
    const logger = recordingLogger();
    const health = await attachEngineSessions(
      { base: model },
      { store, cacheDir: path.join(dir, "cache"), buckets: BUCKETS, target: A10G, logger },
    );
    const slots = health().base!;
    const by = (part: string, bucket: string): EngineSlotHealth =>
      slots.find((s) => s.part === part && s.bucket === bucket)!;
    assert.equal(slots.length, 4);

    const refused = by("unet", "1024x1024");
    assert.equal(refused.state, "incompatible");
    assert.equal(refused.provider, "cpu");
    assert.match(
      refused.reason!,
      /^the engine would not load: Could not open .*model_ctx\.onnx with any execution provider \(tensorrt: /,
    );
    assert.match(refused.engine!, /unet-.*\/nvidia-a10g-sm86\/trt10\.9\.0-cuda12\.8-ort1\.30\.0\/1024x1024-fp16$/);

    const otherGpu = by("unet", "1152x896");
    assert.equal(otherGpu.state, "incompatible");
    assert.match(otherGpu.reason!, /built for NVIDIA L4, this GPU is NVIDIA A10G/);

    assert.equal(by("vae_decoder", "1024x1024").state, "building");
    assert.deepEqual(by("vae_decoder", "1152x896"), {
      part: "vae_decoder",
      bucket: "1152x896",
      state: "missing",
      provider: "cpu",
      reason: "no engine was built for vae_decoder 1152x896",
    });

    // One warning per slot, each naming the part, bucket, state and the provider it runs on instead.
    const warnings = logger.lines.filter((l) => l.level === "warn");
    assert.equal(warnings.length, 4);
    assert.ok(
      warnings.some((w) =>
        /^TensorRT engine for unet 1024x1024 incompatible: the engine would not load: .*; running unet 1024x1024 on cpu with the model's own session$/.test(
          w.msg,
        ),
      ),
    );

    // Every slot fell back, so the pipeline gets the model's own session.
    assert.equal(model.engines!.sessionFor("unet", 1024, 1024, 2), model.unet);
    assert.equal(model.engines!.sessionFor("unet", 1024, 1024, 1), undefined, "batch 1 is outside a CFG profile");
    assert.equal(model.engines!.sessionFor("unet", 640, 640, 2), undefined, "not a bucket");
  });

  it("without a GPU every slot is missing and says so", async () => {
    const health = await attachEngineSessions(
      { base: model },
      { store, cacheDir: path.join(dir, "cache"), buckets: BUCKETS, target: new Error(NO_GPU_MESSAGE) },
    );
    const slots = health().base!;
    assert.equal(slots.length, 4);
    for (const s of slots) {
      assert.equal(s.state, "missing");
      assert.equal(s.provider, "cpu");
      assert.equal(s.reason, NO_GPU_MESSAGE);
    }
  });

  it("GET /healthz carries the engine state per part and bucket", async () => {
    const engines = await attachEngineSessions(
      { base: model },
      { store, cacheDir: path.join(dir, "cache"), buckets: BUCKETS, target: A10G },
    );
    const worker = new Worker({
      ports: local.ports,
      execute: nullExecutor(),
      logger: createLogger({ level: "silent" }),
      stages: ["base"],
      concurrency: 1,
      visibilitySeconds: 30,
      maxReceives: 3,
      pollWaitSeconds: 0.2,
      workerId: "w-engines",
    });
    const server = await startHealthServer(worker, { models: {}, engines }, 0);
    try {
      const port = (server.address() as { port: number }).port;
      const body = (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()) as {
        engines: Record<string, EngineSlotHealth[]>;
      };
      assert.deepEqual(
        body.engines.base!.map((s) => [s.part, s.bucket, s.state, s.provider]),
        [
          ["unet", "1024x1024", "incompatible", "cpu"],
          ["unet", "1152x896", "incompatible", "cpu"],
          ["vae_decoder", "1024x1024", "building", "cpu"],
          ["vae_decoder", "1152x896", "missing", "cpu"],
        ],
      );
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
