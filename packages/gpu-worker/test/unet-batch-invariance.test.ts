/**
 * What batching compatible jobs into one UNet batch (issue 15, engine/unet-batch.ts) rests on: on the CPU provider, the tiny
 * UNet's output for a job is byte-identical whether the job's CFG pair runs alone (batch 2) or beside other
 * jobs' pairs (batch 4, 6, 8 in diffusers' [negatives…, positives…] layout). Measured for the tiny models only;
 * a real SDXL UNet's kernels may pick other code paths by batch size (unverified here).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { createLogger } from "@kiln/shared/node";
import * as ort from "onnxruntime-node";

import { loadSdxlModel, type SdxlModel, writeTinyModels } from "../src/index.js";
import { TimestepFeed } from "../src/onnx/tensors.js";

const PER = { sample: 4 * 8 * 8, hidden: 77 * 2048, pooled: 1280, time: 6 };
type Pair = Record<keyof typeof PER, Float32Array>;

describe("tiny UNet on the CPU provider: batch invariance", () => {
  let dir: string;
  let model: SdxlModel;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-batch-invariance-"));
    const dirs = writeTinyModels(dir);
    model = await loadSdxlModel(dirs.base, "base", { providers: ["cpu"], logger: createLogger({ level: "silent" }) });
  });
  after(async () => {
    await model?.release();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  let state = 12345;
  const random = (n: number) =>
    Float32Array.from({ length: n }, () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1);
  /** One job's CFG pair: [negative, positive] of each input. */
  const pair = (): Pair => ({
    sample: random(2 * PER.sample),
    hidden: random(2 * PER.hidden),
    pooled: random(2 * PER.pooled),
    time: random(2 * PER.time),
  });

  async function run(jobs: Pair[]): Promise<Float32Array> {
    const batch = 2 * jobs.length;
    const cat = (k: keyof typeof PER) => {
      const out = new Float32Array(batch * PER[k]);
      jobs.forEach((j, i) => {
        out.set(j[k].subarray(0, PER[k]), i * PER[k]);
        out.set(j[k].subarray(PER[k]), (jobs.length + i) * PER[k]);
      });
      return out;
    };
    const timestep = new TimestepFeed(model.unet, batch);
    timestep.set(500);
    const out = await model.unet.session.run({
      sample: new ort.Tensor("float32", cat("sample"), [batch, 4, 8, 8]),
      timestep: timestep.tensor,
      encoder_hidden_states: new ort.Tensor("float32", cat("hidden"), [batch, 77, 2048]),
      text_embeds: new ort.Tensor("float32", cat("pooled"), [batch, 1280]),
      time_ids: new ort.Tensor("float32", cat("time"), [batch, 6]),
    });
    return (out.out_sample as ort.Tensor).data as Float32Array;
  }

  it("a job's UNet output is byte-identical alone and in a batch of 2, 3 or 4 jobs", async () => {
    const jobs = [pair(), pair(), pair(), pair()];
    const alone = await Promise.all(jobs.map((j) => run([j])));
    for (const k of [2, 3, 4]) {
      const together = await run(jobs.slice(0, k));
      for (let i = 0; i < k; i++) {
        for (const half of [0, 1]) {
          const a = Buffer.from(alone[i]!.buffer, alone[i]!.byteOffset + half * PER.sample * 4, PER.sample * 4);
          const at = (half * k + i) * PER.sample;
          const t = Buffer.from(together.buffer, together.byteOffset + at * 4, PER.sample * 4);
          assert.ok(a.equals(t), `job ${i} (${half ? "positive" : "negative"}) identical in a batch of ${k}`);
        }
      }
    }
  });
});
