import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import type { BlobStore } from "@kiln/shared";
import { createAwsClients, ensureBucket, S3BlobStore } from "@kiln/shared/aws";
import { FileBlobStore } from "@kiln/shared/local";

import { type AwsStandins, startAwsStandins } from "../../../shared/test/support/aws-standins.js";
import {
  ENGINE_FILE,
  engineDir,
  type EngineKey,
  type EngineTarget,
  modelIdOf,
  parseBuckets,
  partHash,
  WRAPPER_FILE,
} from "../../src/engines/engine-key.js";
import { EngineStore, lookupEngine } from "../../src/engines/engine-store.js";
import { readEpContextModel, readGraphIo, writeEpContextModel } from "../../src/engines/epcontext-model.js";
import { writeTinyModel } from "../../src/models/tiny-models.js";

const A10G: EngineTarget = {
  gpuName: "NVIDIA A10G",
  computeCapability: "8.6",
  tensorrtVersion: "10.9.0",
  cudaVersion: "12.8",
  ortVersion: "1.30.0",
};

describe("engine keys", () => {
  it("puts every part of the key into the engine's folder", () => {
    const key: EngineKey = {
      ...A10G,
      modelId: "0123456789abcdef",
      part: "unet",
      partHash: "f".repeat(64),
      bucket: { width: 1152, height: 896 },
      precision: "fp16",
    };
    assert.equal(
      engineDir(key),
      "0123456789abcdef/unet-ffffffffffffffff/nvidia-a10g-sm86/trt10.9.0-cuda12.8-ort1.30.0/1152x896-fp16",
    );
    assert.equal(
      engineDir({ ...key, part: "text_encoder", bucket: null })
        .split("/")
        .at(-1),
      "any-fp16",
    );
  });

  it("parses buckets and refuses sizes the UNet cannot take", () => {
    assert.deepEqual(parseBuckets("1024x1024, 1152x896"), [
      { width: 1024, height: 1024 },
      { width: 1152, height: 896 },
    ]);
    assert.throws(() => parseBuckets("1000x1000"), /multiples of 64/);
    assert.throws(() => parseBuckets("1024"), /WIDTHxHEIGHT/);
    assert.throws(() => parseBuckets("1024x1024,1024x1024"), /twice/);
  });
});

function describeStore(name: string, open: () => Promise<{ blobs: BlobStore; close(): Promise<void> }>): void {
  describe(`engine store on ${name}`, () => {
    let dir: string;
    let blobs: BlobStore;
    let close: () => Promise<void>;
    let key: EngineKey;

    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-engine-store-"));
      ({ blobs, close } = await open());
      writeTinyModel(path.join(dir, "base"), { role: "base" });
      key = {
        ...A10G,
        modelId: await modelIdOf(path.join(dir, "base")),
        part: "unet",
        partHash: await partHash(path.join(dir, "base", "unet")),
        bucket: { width: 1024, height: 1024 },
        precision: "fp16",
      };
    });
    after(async () => {
      await close();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it("stores an engine beside its wrapper, lists it in the manifest and fetches both verified", async () => {
      // 1 MiB chunks: the 6 MiB engine goes up as 7 chunks, as a multi-GB engine does in 256 MiB ones.
      const store = new EngineStore(blobs, { chunkBytes: 1024 * 1024 });
      const engine = new Uint8Array(6 * 1024 * 1024 + 123).map((_, i) => (i * 7) & 0xff);
      const wrapper = writeEpContextModel({
        io: readGraphIo(fs.readFileSync(path.join(dir, "base", "unet", "model.onnx"))),
        engine: { file: ENGINE_FILE },
        epSdkVersion: A10G.tensorrtVersion,
        hardwareArchitecture: "86",
        partitionName: "unet_1024x1024_fp16",
      });
      await store.markBuilding(key);
      const during = lookupEngine(await store.manifest(key.modelId), { ...key, target: A10G });
      assert.equal(during.state, "building");

      const engineFile = path.join(dir, "unet.engine");
      fs.writeFileSync(engineFile, engine);
      await store.put(key, { wrapper, engine: { path: engineFile } }, { buildSeconds: 1 });
      const manifest = await store.manifest(key.modelId);
      assert.equal(manifest!.entries.length, 1, "the building entry is replaced, not duplicated");
      const found = lookupEngine(manifest, { ...key, target: A10G });
      assert.equal(found.state, "ready");
      if (found.state !== "ready") return;
      assert.equal(found.entry.engine!.chunks!.length, 7);
      assert.equal(found.entry.engine!.size, engine.byteLength);

      const cache = path.join(dir, "cache");
      const wrapperPath = await store.fetch(found.entry, cache);
      assert.equal(path.basename(wrapperPath), WRAPPER_FILE);
      assert.ok(Buffer.from(engine).equals(fs.readFileSync(path.join(path.dirname(wrapperPath), ENGINE_FILE))));
      assert.equal(readEpContextModel(fs.readFileSync(wrapperPath)).engineFile, ENGINE_FILE);
    });

    it("reuses a fetched engine it verified before instead of downloading it again", async () => {
      const store = new EngineStore(blobs);
      const found = lookupEngine(await store.manifest(key.modelId), { ...key, target: A10G });
      if (found.state !== "ready") throw new Error("expected a ready engine");
      const cache = path.join(dir, "cache");
      const engineCopy = path.join(cache, engineDir(key), ENGINE_FILE);
      const before = fs.statSync(engineCopy).mtimeMs;
      await store.fetch(found.entry, cache);
      assert.equal(fs.statSync(engineCopy).mtimeMs, before);
    });

    it("resumes a fetch killed part-way with the chunks it had written and checked", async () => {
      const found = lookupEngine(await new EngineStore(blobs).manifest(key.modelId), { ...key, target: A10G });
      if (found.state !== "ready") throw new Error("expected a ready engine");
      const engine = found.entry.engine!;
      const whole = fs.readFileSync(path.join(dir, "cache", engineDir(key), ENGINE_FILE));
      const gets: string[] = [];
      const counting = new Proxy(blobs, {
        get(target, prop) {
          if (prop === "get")
            return (k: string) => {
              gets.push(k);
              return target.get(k);
            };
          const v = Reflect.get(target, prop) as unknown;
          return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
      // What a worker killed after its third chunk leaves: those chunks on disk and in the record, the rest zeros.
      const leave = (cache: string, recordSha: string) => {
        const local = path.join(cache, engineDir(key), ENGINE_FILE);
        fs.mkdirSync(path.dirname(local), { recursive: true });
        const partial = Buffer.alloc(whole.byteLength);
        const upTo = engine.chunks!.slice(0, 3).reduce((n, c) => n + c.size, 0);
        whole.copy(partial, 0, 0, upTo);
        fs.writeFileSync(`${local}.partial`, partial);
        fs.writeFileSync(`${local}.partial.json`, JSON.stringify({ sha256: recordSha, done: [0, 1, 2] }));
        return local;
      };
      const resumed = leave(path.join(dir, "cache-resume"), engine.sha256);
      await new EngineStore(counting, { fetchConcurrency: 2 }).fetch(found.entry, path.join(dir, "cache-resume"));
      assert.deepEqual(
        gets.filter((k) => k.startsWith(engine.key)).sort(),
        engine.chunks!.slice(3).map((c) => c.key),
        "only the chunks the killed fetch had not finished are fetched again",
      );
      assert.ok(whole.equals(fs.readFileSync(resumed)));
      assert.ok(!fs.existsSync(`${resumed}.partial.json`), "the record goes once the file is in place");

      // A record left by a fetch of another engine file is not trusted: everything is fetched again.
      gets.length = 0;
      const other = leave(path.join(dir, "cache-other"), "0".repeat(64));
      await new EngineStore(counting).fetch(found.entry, path.join(dir, "cache-other"));
      assert.equal(gets.filter((k) => k.startsWith(engine.key)).length, engine.chunks!.length);
      assert.ok(whole.equals(fs.readFileSync(other)));
    });

    it("says why an engine does not fit: other GPU, other TensorRT, other model, other bucket", async () => {
      const store = new EngineStore(blobs);
      const manifest = await store.manifest(key.modelId);
      const q = { ...key, target: A10G };
      const l4 = lookupEngine(manifest, { ...q, target: { ...A10G, gpuName: "NVIDIA L4", computeCapability: "8.9" } });
      assert.equal(l4.state, "incompatible");
      assert.match(l4.state === "incompatible" ? l4.reason : "", /built for NVIDIA A10G, this GPU is NVIDIA L4/);
      const trt = lookupEngine(manifest, { ...q, target: { ...A10G, tensorrtVersion: "10.8.0" } });
      assert.match(trt.state === "incompatible" ? trt.reason : "", /TensorRT 10\.9\.0, this worker has 10\.8\.0/);
      const other = lookupEngine(manifest, { ...q, partHash: "0".repeat(64) });
      assert.match(other.state === "incompatible" ? other.reason : "", /different unet/);
      const bucket = lookupEngine(manifest, { ...q, bucket: { width: 1152, height: 896 } });
      assert.deepEqual(bucket, { state: "missing", reason: "no engine was built for unet 1152x896" });
      assert.equal(lookupEngine(null, q).state, "missing");
    });

    it("refuses a stored engine whose bytes do not match the manifest", async () => {
      const store = new EngineStore(blobs);
      const found = lookupEngine(await store.manifest(key.modelId), { ...key, target: A10G });
      assert.equal(found.state, "ready");
      if (found.state !== "ready") return;
      await blobs.put(found.entry.engine!.chunks![3]!.key, new Uint8Array([1, 2, 3]));
      const cache = path.join(dir, "cache2");
      await assert.rejects(store.fetch(found.entry, cache), /part-0003 has sha256 .*corrupt, rebuild it/);
      assert.ok(!fs.existsSync(path.join(cache, engineDir(key), ENGINE_FILE)), "no partial engine is left in place");
    });
  });
}

describeStore("the data dir (local family)", async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-engine-blobs-"));
  const blobs = new FileBlobStore({ dataDir, publicBaseUrl: "http://127.0.0.1:1", urlSecret: "x".repeat(32) });
  return { blobs, close: async () => fs.rmSync(dataDir, { recursive: true, force: true }) };
});

describeStore("S3 (fauxqs)", async () => {
  const standins: AwsStandins = await startAwsStandins();
  const options = {
    region: standins.region,
    sqsEndpoint: standins.sqsEndpoint,
    s3Endpoint: standins.s3Endpoint,
    dynamoEndpoint: standins.dynamoEndpoint,
    credentials: standins.credentials,
    bucket: "kiln-engines-test",
    table: "unused",
    maxReceives: 3,
  };
  const clients = createAwsClients(options);
  await ensureBucket(clients.s3, options.bucket);
  // A small multipart threshold so the engine goes up in parts, as a real multi-GB engine does.
  const blobs = new S3BlobStore(clients.s3, { bucket: options.bucket, multipartThreshold: 5 * 1024 * 1024 });
  return {
    blobs,
    close: async () => {
      clients.s3.destroy();
      clients.sqs.destroy();
      clients.dynamo.destroy();
      await standins.stop();
    },
  };
});
