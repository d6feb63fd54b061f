/**
 * Model sync against the fauxqs S3 stand-in on loopback: parallel ranged GETs, verified placement,
 * hash mismatch refused, partial parts reused, two concurrent syncs into one directory fetching once.
 * (Resuming after kill -9 is in test/e2e/durability-model-sync.test.ts.)
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { isKilnError } from "@kiln/shared";
import { createAwsClients, ensureBucket, type RangedObjectSource, s3ObjectSource } from "@kiln/shared/aws";

import { type AwsStandins, startAwsStandins } from "../../../../shared/test/support/aws-standins.js";
import { buildManifest, MANIFEST_NAME, syncModelFolder, syncObjects } from "../../../src/models/sync/index.js";

const BUCKET = "kiln-models";
const KiB = 1024;

/** Deterministic bytes (not all zeros, so a misplaced part changes the hash). */
function bytes(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Counts ranged GETs and the most in flight at once: what "parallel" and "downloaded once" mean here. */
function counting(source: RangedObjectSource) {
  const stats = { reads: 0, inFlight: 0, maxInFlight: 0 };
  const wrapped: RangedObjectSource = {
    label: source.label,
    size: (k) => source.size(k),
    readAll: (k) => source.readAll(k),
    async read(key, start, end, signal) {
      stats.reads++;
      stats.inFlight++;
      stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
      try {
        const chunks: Uint8Array[] = [];
        for await (const c of await source.read(key, start, end, signal)) chunks.push(c);
        return (async function* () {
          yield* chunks;
        })();
      } finally {
        stats.inFlight--;
      }
    },
  };
  return { source: wrapped, stats };
}

describe("model sync (fauxqs S3)", () => {
  let standins: AwsStandins;
  let s3: S3Client;
  let source: RangedObjectSource;
  let work: string;
  const put = (key: string, body: Uint8Array) =>
    s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));

  before(async () => {
    standins = await startAwsStandins();
    s3 = createAwsClients({
      region: standins.region,
      s3Endpoint: standins.s3Endpoint,
      credentials: standins.credentials,
    }).s3;
    await ensureBucket(s3, BUCKET);
    source = s3ObjectSource(s3, BUCKET);
    work = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-sync-"));
  });
  after(async () => {
    s3.destroy();
    await standins.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it("syncs a model folder from its manifest with parallel ranged GETs, byte for byte", async () => {
    const local = path.join(work, "upload");
    fs.mkdirSync(path.join(local, "unet"), { recursive: true });
    fs.writeFileSync(path.join(local, "model_index.json"), '{"_class_name":"StableDiffusionXLPipeline"}');
    fs.writeFileSync(path.join(local, "unet", "model.onnx"), bytes(300 * KiB + 7, 1));
    const manifest = await buildManifest(local);
    for (const f of manifest.files) await put(`sdxl/${f.path}`, fs.readFileSync(path.join(local, f.path)));
    await put(`sdxl/${MANIFEST_NAME}`, Buffer.from(JSON.stringify(manifest)));

    const dir = path.join(work, "disk-a");
    const { source: counted, stats } = counting(source);
    const report = await syncModelFolder({ source: counted, prefix: "sdxl", dir, concurrency: 4, partBytes: 32 * KiB });
    for (const f of manifest.files) assert.equal(sha(fs.readFileSync(path.join(dir, f.path))), f.sha256, f.path);
    // 10 parts of the UNet + 1 of model_index.json.
    assert.equal(stats.reads, 11);
    assert.ok(stats.maxInFlight > 1 && stats.maxInFlight <= 4, `GETs in flight at once: ${stats.maxInFlight}`);
    assert.equal(report.downloadedBytes, report.bytes);

    // A second sync finds everything verified and fetches nothing.
    const again = await syncModelFolder({ source: counted, prefix: "sdxl", dir, concurrency: 4, partBytes: 32 * KiB });
    assert.equal(again.downloadedBytes, 0);
    assert.equal(stats.reads, 11);
  });

  it("refuses an object whose SHA-256 is not the manifest's, places nothing, and says so", async () => {
    const body = bytes(100 * KiB, 2);
    await put("bad/vae.onnx", body);
    const dir = path.join(work, "disk-bad");
    const wrong = sha(Buffer.concat([body, Buffer.from("x")])).replace(/^./, "0");
    await assert.rejects(
      syncObjects({
        source,
        dir,
        partBytes: 16 * KiB,
        files: [{ key: "bad/vae.onnx", path: "vae.onnx", size: body.length, sha256: wrong }],
      }),
      (e: unknown) => {
        assert.ok(isKilnError(e));
        assert.equal(e.code, "model_sync_hash_mismatch");
        assert.match(e.message, /s3:\/\/kiln-models\/bad\/vae\.onnx has SHA-256 [0-9a-f]{64}, but its manifest says 0/);
        return true;
      },
    );
    assert.equal(fs.existsSync(path.join(dir, "vae.onnx")), false);
    assert.deepEqual(
      fs.readdirSync(path.join(dir, ".kiln-sync")).filter((f) => !f.endsWith(".lock")),
      [],
      "the partial download is deleted",
    );
  });

  it("reuses the parts an interrupted sync recorded", async () => {
    const body = bytes(256 * KiB, 3);
    await put("resume/text_encoder.onnx", body);
    const file = { key: "resume/text_encoder.onnx", path: "text_encoder.onnx", size: body.length, sha256: sha(body) };
    const dir = path.join(work, "disk-resume");
    // The network fails on the 5th ranged GET: the other 7 parts still land and stay recorded.
    let reads = 0;
    const flaky: RangedObjectSource = {
      ...source,
      size: (k) => source.size(k),
      readAll: (k) => source.readAll(k),
      read: async (k, s, e, sig) => {
        if (++reads === 5) throw new Error("connection reset");
        return source.read(k, s, e, sig);
      },
    };
    await assert.rejects(
      syncObjects({ source: flaky, dir, files: [file], concurrency: 1, partBytes: 32 * KiB }),
      /connection reset/,
    );
    const report = await syncObjects({ source, dir, files: [file], concurrency: 1, partBytes: 32 * KiB });
    assert.equal(report.reusedParts, 7);
    assert.equal(report.downloadedBytes, 32 * KiB);
    assert.equal(sha(fs.readFileSync(path.join(dir, file.path))), file.sha256);
  });

  it("two concurrent syncs into one directory fetch each file once", async () => {
    const body = bytes(512 * KiB, 4);
    await put("shared/unet.onnx", body);
    const file = { key: "shared/unet.onnx", path: "unet/model.onnx", size: body.length, sha256: sha(body) };
    const dir = path.join(work, "disk-shared");
    const { source: counted, stats } = counting(source);
    const [a, b] = await Promise.all([
      syncObjects({ source: counted, dir, files: [file], concurrency: 2, partBytes: 64 * KiB }),
      syncObjects({ source: counted, dir, files: [file], concurrency: 2, partBytes: 64 * KiB }),
    ]);
    assert.equal(stats.reads, 8, "8 parts, fetched once");
    assert.equal(a.downloadedBytes + b.downloadedBytes, body.length);
    assert.equal(a.waitedFiles + b.waitedFiles, 1);
    assert.equal(sha(fs.readFileSync(path.join(dir, file.path))), file.sha256);
  });
});
