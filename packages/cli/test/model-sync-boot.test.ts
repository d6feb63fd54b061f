/**
 * Worker boot with model folders given as s3:// (KILN_MODEL_DIR, KILN_REFINER_DIR): synced from the
 * fauxqs S3 stand-in into KILN_MODEL_CACHE_DIR, verified, then loaded as ONNX sessions; a second boot
 * on the same disk fetches nothing.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { buildManifest, MANIFEST_NAME, type SdxlModel, type SyncReport, writeTinyModels } from "@kiln/gpu-worker";
import { loadConfig } from "@kiln/shared";
import { createAwsClients, ensureBucket } from "@kiln/shared/aws";
import { createLogger } from "@kiln/shared/node";

import { type AwsStandins, startAwsStandins } from "../../shared/test/support/aws-standins.js";
import { loadModels } from "../src/stack.js";

describe("worker boot with s3:// model folders", () => {
  let standins: AwsStandins;
  let s3: S3Client;
  let work: string;

  before(async () => {
    standins = await startAwsStandins();
    s3 = createAwsClients({
      region: standins.region,
      s3Endpoint: standins.s3Endpoint,
      credentials: standins.credentials,
    }).s3;
    await ensureBucket(s3, "kiln-models");
    work = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-boot-sync-"));
    process.env.AWS_ACCESS_KEY_ID = standins.credentials.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = standins.credentials.secretAccessKey;
  });
  after(async () => {
    s3.destroy();
    await standins.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it("syncs, verifies and loads the base and refiner, then reuses the disk", async () => {
    const local = writeTinyModels(path.join(work, "upload"));
    for (const [role, dir] of Object.entries(local)) {
      const manifest = await buildManifest(dir);
      for (const f of manifest.files) {
        await s3.send(
          new PutObjectCommand({
            Bucket: "kiln-models",
            Key: `tiny/${role}/${f.path}`,
            Body: fs.readFileSync(path.join(dir, f.path)),
          }),
        );
      }
      await s3.send(
        new PutObjectCommand({
          Bucket: "kiln-models",
          Key: `tiny/${role}/${MANIFEST_NAME}`,
          Body: JSON.stringify(manifest),
        }),
      );
    }
    const cache = path.join(work, "cache");
    const config = loadConfig({
      KILN_MODEL_DIR: "s3://kiln-models/tiny/base",
      KILN_REFINER_DIR: "s3://kiln-models/tiny/refiner",
      KILN_S3_ENDPOINT: standins.s3Endpoint,
      KILN_MODEL_CACHE_DIR: cache,
      KILN_SYNC_PART_MIB: "1",
    });
    const logger = createLogger({ level: "silent" });
    const syncs: Partial<Record<"base" | "refiner", SyncReport>> = {};
    const models = await loadModels(config, logger, syncs);
    try {
      assert.equal(models.base?.dir, path.join(cache, "kiln-models", "tiny", "base"));
      assert.equal(models.refiner?.dir, path.join(cache, "kiln-models", "tiny", "refiner"));
      assert.equal(models.base?.isTinyTestModel, true);
      assert.ok(syncs.base && syncs.base.downloadedBytes === syncs.base.bytes && syncs.base.bytes > 0);
      assert.ok(syncs.refiner && syncs.refiner.downloadedBytes === syncs.refiner.bytes);
    } finally {
      for (const m of Object.values(models) as SdxlModel[]) await m.release();
    }

    const again: Partial<Record<"base" | "refiner", SyncReport>> = {};
    const reloaded = await loadModels(config, logger, again);
    for (const m of Object.values(reloaded) as SdxlModel[]) await m.release();
    assert.equal(again.base?.downloadedBytes, 0);
    assert.equal(again.refiner?.downloadedBytes, 0);
  });
});
