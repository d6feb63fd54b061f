import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { decodeLatents, encodeLatents, type Latents } from "@kiln/shared";
import { openTempLocalPorts } from "@kiln/shared/testing";
import sharp from "sharp";

import {
  latentPreview,
  latentsToRgb,
  SDXL_LATENT_RGB_BIAS,
  SDXL_LATENT_RGB_FACTORS,
} from "../../src/renders/latent-preview.js";
import { encodePng } from "../../src/renders/png.js";

function latents(
  batch: number,
  h: number,
  w: number,
  fill: (b: number, c: number, p: number) => number,
  meta: Partial<Latents["meta"]> = {},
): Latents {
  const data = new Float32Array(batch * 4 * h * w);
  for (let b = 0; b < batch; b++)
    for (let c = 0; c < 4; c++) for (let p = 0; p < h * w; p++) data[(b * 4 + c) * h * w + p] = fill(b, c, p);
  return {
    shape: [batch, 4, h, w],
    data,
    meta: {
      jobId: "job_x",
      stage: 0,
      scheduler: "euler",
      schedulerConfigHash: "h",
      latentSpace: "ve",
      stepIndex: 8,
      steps: 10,
      timestep: 200,
      sigma: 0.5,
      seed: 1,
      ...meta,
    },
  };
}

const expectedByte = (values: number[], k: number) => {
  let v = SDXL_LATENT_RGB_BIAS[k]!;
  for (let c = 0; c < 4; c++) v += values[c]! * SDXL_LATENT_RGB_FACTORS[c]![k]!;
  return Math.round(Math.min(1, Math.max(0, (v + 1) / 2)) * 255);
};

describe("latent previews", () => {
  it("map each latent cell to RGB with SDXL's linear factors, per batch item", () => {
    const l = latents(2, 2, 3, (b, c, p) => (b ? -1 : 1) * (c - 1.5) * 0.4 + p * 0.05);
    for (const b of [0, 1]) {
      const { width, height, rgb } = latentsToRgb(l, b);
      assert.deepEqual([width, height], [3, 2]);
      for (let p = 0; p < 6; p++) {
        const values = [0, 1, 2, 3].map((c) => l.data[(b * 4 + c) * 6 + p]!);
        for (let k = 0; k < 3; k++)
          assert.equal(rgb[p * 3 + k], expectedByte(values, k), `item ${b} pixel ${p} channel ${k}`);
      }
    }
  });

  it("scale VP-space latents back by √(σ²+1) before mapping", () => {
    const ve = latentsToRgb(latents(1, 1, 1, (_, c) => [0.3, -0.2, 0.1, -0.4][c]! * Math.SQRT2));
    const vp = latentsToRgb(latents(1, 1, 1, (_, c) => [0.3, -0.2, 0.1, -0.4][c]!, { latentSpace: "vp", sigma: 1 }));
    assert.deepEqual([...vp.rgb], [...ve.rgb]);
  });

  it("refuse latents that are not [batch, 4, h, w]", () => {
    const bad = { ...latents(1, 2, 2, () => 0), shape: [1, 16, 1, 1] };
    assert.throws(() => latentsToRgb(bad), /batch, 4, h, w/);
  });

  it("encode a PNG that a real decoder reads back pixel for pixel", async () => {
    const rgb = Uint8Array.from({ length: 5 * 3 * 3 }, (_, i) => (i * 37) % 256);
    const png = await encodePng(5, 3, rgb);
    const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    assert.deepEqual([info.width, info.height, info.channels], [5, 3, 3]);
    assert.deepEqual([...data], [...rgb]);
  });

  it("read hand-over latents from the blob store into one data-URL PNG per image", async () => {
    const local = openTempLocalPorts({ prefix: "kiln-preview-" });
    try {
      const blobs = local.ports.blobs;
      const l = latents(2, 4, 6, (b, c, p) => Math.sin(b + c + p));
      await blobs.put("jobs/job_x/stage-0.latents", await encodeLatents(l));
      const preview = await latentPreview(blobs, "jobs/job_x/stage-0.latents");
      assert.ok(preview);
      assert.deepEqual(
        [preview.stage, preview.width, preview.height, preview.images.length, preview.sigma],
        [0, 6, 4, 2, 0.5],
      );
      const png = Buffer.from(preview.images[1]!.replace(/^data:image\/png;base64,/, ""), "base64");
      // fp16 transport rounds the latents slightly, so compare with the decoded blob's own mapping.
      const { data } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
      const stored = await decodeLatents((await blobs.get("jobs/job_x/stage-0.latents"))!);
      assert.deepEqual([...data], [...latentsToRgb(stored, 1).rgb]);
      assert.equal(await latentPreview(blobs, "jobs/job_x/stage-9.latents"), undefined);
    } finally {
      await local.close();
    }
  });
});
