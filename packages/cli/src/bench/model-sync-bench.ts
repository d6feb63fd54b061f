import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";

import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { syncObjects } from "@kiln/gpu-worker";
import { createAwsClients, ensureBucket, s3ObjectSource } from "@kiln/shared/aws";

import { startStandinsProcess } from "./standins-process.js";
import { fmt, table } from "./stats.js";

const MiB = 1024 * 1024;
const SIZE = 1024 * MiB;
// fauxqs accepts bodies up to 11 MiB.
const UPLOAD_PART = 8 * MiB;
const ROUNDS = 2;
const BUCKET = "kiln-bench";
const KEY = "synthetic/unet/model.onnx_data";

/**
 * Cold start (issue 13): one synthetic 1 GiB model file in the S3 stand-in (fauxqs, its own process
 * on loopback), fetched to disk by Kiln's sync (parallel ranged GETs, SHA-256 verified, atomic
 * placement) and by a single-stream GetObject piped to a file with the hash computed on the way, in
 * the same run, alternating. The file is generated part by part as it is uploaded, never whole in
 * this process (fauxqs itself keeps objects in memory).
 */
export async function run(): Promise<string> {
  const endpoints = await startStandinsProcess();
  const { s3 } = createAwsClients({
    region: endpoints.region,
    s3Endpoint: endpoints.s3Endpoint,
    credentials: endpoints.credentials,
  });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-sync-"));
  try {
    await ensureBucket(s3, BUCKET);
    const sha256 = await uploadSynthetic(s3);
    const file = { key: KEY, path: "unet/model.onnx_data", size: SIZE, sha256 };
    const source = s3ObjectSource(s3, BUCKET);
    const methods: { name: string; fetch: (dir: string) => Promise<void> }[] = [
      {
        name: "single-stream GetObject → file, SHA-256 on the way",
        fetch: async (dir) => {
          const out = path.join(dir, "model.onnx_data");
          const hash = createHash("sha256");
          const got = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: KEY }));
          await pipeline(
            got.Body as NodeJS.ReadableStream,
            async function* (chunks: AsyncIterable<string | Buffer>) {
              for await (const c of chunks) {
                hash.update(c);
                yield c;
              }
            },
            fs.createWriteStream(out),
          );
          if (hash.digest("hex") !== sha256) throw new Error("single-stream download: hash mismatch");
        },
      },
      {
        name: "Kiln sync, 8 ranged GETs × 16 MiB, verify + rename",
        fetch: async (dir) =>
          void (await syncObjects({ source, files: [file], dir, concurrency: 8, partBytes: 16 * MiB })),
      },
      {
        name: "Kiln sync, 1 ranged GET at a time × 16 MiB (no parallelism)",
        fetch: async (dir) =>
          void (await syncObjects({ source, files: [file], dir, concurrency: 1, partBytes: 16 * MiB })),
      },
    ];
    const seconds = new Map<string, number[]>(methods.map((m) => [m.name, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const m of methods) {
        const dir = fs.mkdtempSync(path.join(work, "disk-"));
        const t = performance.now();
        await m.fetch(dir);
        seconds.get(m.name)!.push((performance.now() - t) / 1000);
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
    const single = Math.min(...seconds.get(methods[0]!.name)!);
    const rows = methods.map((m) => {
      const s = seconds.get(m.name)!;
      const best = Math.min(...s);
      return [m.name, s.map((x) => fmt(x, 2)).join(", "), fmt(SIZE / MiB / best, 0), fmt(single / best, 2)];
    });
    return [
      `One ${SIZE / MiB} MiB object in fauxqs (S3 REST stand-in, its own process, loopback), fetched to the local disk; ${ROUNDS} rounds, methods alternating. Kiln's times include hashing the whole file and the atomic rename; the single stream hashes on the way.`,
      "",
      table(["method", "seconds per round", "MiB/s (best)", "speed-up vs single stream (best)"], rows),
    ].join("\n");
  } finally {
    s3.destroy();
    fs.rmSync(work, { recursive: true, force: true });
    await endpoints.stop();
  }
}

/** Uploads SIZE bytes in 8 MiB parts generated one at a time; returns their SHA-256. */
async function uploadSynthetic(s3: ReturnType<typeof createAwsClients>["s3"]): Promise<string> {
  const hash = createHash("sha256");
  const block = Buffer.alloc(UPLOAD_PART);
  let x = 0x9e3779b9;
  for (let i = 0; i < block.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    block.writeUInt32LE(x >>> 0, i);
  }
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: KEY }));
  const parts: { ETag?: string; PartNumber: number }[] = [];
  for (let n = 1; n <= SIZE / UPLOAD_PART; n++) {
    // Each part differs (its number in the first bytes), so a misplaced range changes the hash.
    block.writeUInt32LE(n, 0);
    hash.update(block);
    const { ETag } = await s3.send(
      new UploadPartCommand({ Bucket: BUCKET, Key: KEY, UploadId, PartNumber: n, Body: block }),
    );
    parts.push({ ETag, PartNumber: n });
  }
  await s3.send(
    new CompleteMultipartUploadCommand({ Bucket: BUCKET, Key: KEY, UploadId, MultipartUpload: { Parts: parts } }),
  );
  return hash.digest("hex");
}
