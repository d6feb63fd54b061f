import assert from "node:assert/strict";
import { describe, it } from "node:test";

import sharp from "sharp";

import { encodeImageFile, readPngText } from "../src/engine/image-files.js";
import { firstNonFinite, resizeLatentsBilinear } from "../src/engine/latent-ops.js";
import { chwToRgb8 } from "../src/engine/vae-decoder.js";

describe("chwToRgb8 (diffusers' postprocess)", () => {
  it("maps [−1, 1] to 0…255 with clamping, CHW to HWC", () => {
    // 1×2 image: R = [−1, 1], G = [0, 3], B = [−5, 0.5]
    const x = Float32Array.from([-1, 1, 0, 3, -5, 0.5]);
    assert.deepEqual(Array.from(chwToRgb8(x, 1, 2)), [0, 128, 0, 255, 255, 191]);
  });

  it("rounds halves to even in float32, as numpy's round", () => {
    // f32(f32(x/2 + 0.5)·255) is exactly 64.5 for this float32 x: numpy gives 64, Math.round would give 65.
    const x = Math.fround(-0.4941175878047943);
    assert.equal(Math.fround(Math.fround(x / 2 + 0.5) * 255), 64.5);
    assert.equal(chwToRgb8(Float32Array.from([x, x, x]), 1, 1)[0], 64);
  });
});

describe("resizeLatentsBilinear (torch interpolate, bilinear, align_corners=False)", () => {
  it("upscales 2×2 to 4×4 as torch does", () => {
    const out = resizeLatentsBilinear(Float32Array.from([0, 1, 2, 3]), [1, 1, 2, 2], 4, 4);
    assert.deepEqual(Array.from(out), [0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25, 2.75, 3]);
  });

  it("keeps images and channels apart and the identity size unchanged", () => {
    const x = Float32Array.from({ length: 2 * 4 * 3 * 5 }, (_, i) => Math.sin(i));
    assert.deepEqual(resizeLatentsBilinear(x, [2, 4, 3, 5], 3, 5), x);
    const up = resizeLatentsBilinear(x, [2, 4, 3, 5], 6, 10);
    assert.equal(up.length, 2 * 4 * 6 * 10);
    assert.equal(up[60 * 7], x[15 * 7], "plane 7 starts where plane 7 starts");
  });

  it("firstNonFinite finds NaN and ±Infinity", () => {
    assert.equal(firstNonFinite(Float32Array.from([0, 1, 2])), -1);
    assert.equal(firstNonFinite(Float32Array.from([0, NaN, Infinity])), 1);
    assert.equal(firstNonFinite(Float32Array.from([0, 1, -Infinity])), 2);
  });
});

describe("encodeImageFile", () => {
  const image = { width: 8, height: 8, rgb: new Uint8Array(8 * 8 * 3).map((_, i) => (i * 37) % 256) };

  it("PNG: the parameters as a UTF-8 iTXt chunk that readPngText and sharp both read back", async () => {
    const text = "ein Fuchs im Schnee — 雪\nSteps: 6, Sampler: Euler";
    const png = await encodeImageFile(image, "png", 90, text);
    assert.equal(png.contentType, "image/png");
    assert.equal(readPngText(png.bytes).parameters, text);
    const meta = await sharp(png.bytes).metadata();
    assert.deepEqual([meta.width, meta.height], [8, 8]);
    assert.deepEqual(await sharp(png.bytes).raw().toBuffer(), Buffer.from(image.rgb));
  });
});
