/**
 * Model sync survives kill -9: a sync process is held at the pause point after a part is recorded,
 * killed there, and a fresh process finishes the file reusing the recorded parts — the placed file
 * is verified byte for byte against its manifest. Against the fauxqs S3 stand-in on loopback.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { SyncReport } from "@kiln/gpu-worker";
import { createAwsClients, ensureBucket } from "@kiln/shared/aws";

import { type AwsStandins, startAwsStandins } from "../../packages/shared/test/support/aws-standins.js";
import { PauseControl } from "../support/pause-control.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CHILD = path.join(ROOT, "test/support/model-sync-child.ts");
const PART = 256 * 1024;
const SIZE = 16 * PART + 1234;

describe("model sync after kill -9", () => {
  let standins: AwsStandins;
  let s3: S3Client;
  let work: string;
  const hooks = new PauseControl();

  before(async () => {
    standins = await startAwsStandins();
    s3 = createAwsClients({
      region: standins.region,
      s3Endpoint: standins.s3Endpoint,
      credentials: standins.credentials,
    }).s3;
    await ensureBucket(s3, "kiln-models");
    work = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-sync-kill-"));
  });
  after(async () => {
    s3.destroy();
    await standins.stop();
    hooks.remove();
    fs.rmSync(work, { recursive: true, force: true });
  });

  const run = (env: Record<string, string>) => {
    const child = spawn(process.execPath, ["--import", "tsx", CHILD], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? "",
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
        SYNC_S3_ENDPOINT: standins.s3Endpoint,
        SYNC_BUCKET: "kiln-models",
        SYNC_PREFIX: "sdxl",
        SYNC_DIR: path.join(work, "disk"),
        SYNC_PART_BYTES: String(PART),
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once("exit", (code, signal) => resolve({ code, signal })),
    );
    return { child, exited, out: () => out, err: () => err };
  };

  it("resumes from the parts recorded before the kill and places a verified file", async () => {
    const body = Buffer.alloc(SIZE);
    for (let i = 0; i < SIZE; i++) body[i] = (i * 2654435761) >>> 24;
    const sha256 = createHash("sha256").update(body).digest("hex");
    await s3.send(new PutObjectCommand({ Bucket: "kiln-models", Key: "sdxl/unet/model.onnx", Body: body }));
    const manifest = { v: 1, files: [{ path: "unet/model.onnx", size: SIZE, sha256 }] };
    await s3.send(
      new PutObjectCommand({ Bucket: "kiln-models", Key: "sdxl/kiln-manifest.json", Body: JSON.stringify(manifest) }),
    );

    hooks.arm("model-sync:part-recorded");
    const first = run(hooks.env);
    const held = await hooks.paused("model-sync:part-recorded");
    assert.equal(held.pid, first.child.pid);
    process.kill(held.pid, "SIGKILL");
    assert.equal((await first.exited).signal, "SIGKILL");
    const final = path.join(work, "disk", "unet", "model.onnx");
    assert.equal(fs.existsSync(final), false, "nothing is placed before it is verified");

    const second = run({});
    const exit = await second.exited;
    assert.equal(exit.code, 0, second.err());
    const report = JSON.parse(second.out()) as SyncReport;
    assert.ok(report.reusedParts >= 1, `reused ${report.reusedParts} parts`);
    assert.ok(report.downloadedBytes < SIZE, `fetched ${report.downloadedBytes} of ${SIZE} bytes again`);
    assert.equal(createHash("sha256").update(fs.readFileSync(final)).digest("hex"), sha256);
  });
});
