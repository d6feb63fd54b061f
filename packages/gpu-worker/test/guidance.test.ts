import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { applyGuidance, fillModelInput } from "../src/engine/guidance.js";

const close = (actual: Float32Array, expected: number[], tol = 1e-5) => {
  assert.equal(actual.length, expected.length);
  expected.forEach((e, i) =>
    assert.ok(Math.abs(actual[i]! - e) <= tol * Math.max(1, Math.abs(e)), `[${i}]: ${actual[i]} vs ${e}`),
  );
};

describe("classifier-free guidance over a [negative, positive] batch", () => {
  // One image of 4 values: u (negative half) = [1, 2, 3, 4], c (positive half) = [2, 2, 5, 0], g = 5.
  const batch = Float32Array.from([1, 2, 3, 4, 2, 2, 5, 0]);

  it("noise = u + g·(c − u)", () => {
    // [1 + 5·1, 2 + 5·0, 3 + 5·2, 4 + 5·(−4)]
    close(applyGuidance(batch, 1, 5, 0, new Float32Array(4)), [6, 2, 13, -16]);
  });

  it("guidance_rescale φ = 0.7: cfg·(φ·std(c)/std(cfg) + 1 − φ), unbiased std over each image", () => {
    // std(c): mean 2.25, squares 0.0625 + 0.0625 + 7.5625 + 5.0625 = 12.75, / 3 → √4.25 = 2.0615528
    // std(cfg) of [6, 2, 13, −16]: mean 1.25, squares 22.5625 + 0.5625 + 138.0625 + 297.5625 = 458.75, / 3 → 12.3659479
    // factor = 0.7 · 2.0615528 / 12.3659479 + 0.3 = 0.4167014
    close(applyGuidance(batch, 1, 5, 0.7, new Float32Array(4)), [2.5001907, 0.8333969, 5.4170799, -6.6671752]);
  });

  it("rescales each image by its own statistics (n = 2: [u0, u1, c0, c1])", () => {
    // Image 0 as above; image 1: u = [0, 0, 1, 1], c = [1, −1, 1, −1] → cfg [5, −5, 1, −9];
    // std(c) = √(4/3), std(cfg) = √(116/3) → factor 0.7·0.1856953 + 0.3 = 0.4299867.
    const two = Float32Array.from([1, 2, 3, 4, 0, 0, 1, 1, 2, 2, 5, 0, 1, -1, 1, -1]);
    const out = applyGuidance(two, 2, 5, 0.7, new Float32Array(8));
    close(out, [2.5001907, 0.8333969, 5.4170799, -6.6671752, 2.1499337, -2.1499337, 0.4299867, -3.8698806]);
  });

  it("φ = 0 leaves plain CFG; φ = 1 matches the positive prediction's std exactly", () => {
    const out = applyGuidance(batch, 1, 5, 1, new Float32Array(4));
    const std = (x: ArrayLike<number>) => {
      const m = Array.from(x).reduce((a, b) => a + b, 0) / x.length;
      return Math.sqrt(Array.from(x).reduce((a, b) => a + (b - m) ** 2, 0) / (x.length - 1));
    };
    assert.ok(Math.abs(std(out) - std([2, 2, 5, 0])) < 1e-5);
  });
});

describe("fillModelInput", () => {
  it("divides by the scheduler's divisor and duplicates the latents for the two CFG halves", () => {
    const latents = Float32Array.from([2, -4, 6]);
    close(fillModelInput(latents, 2, new Float32Array(6)), [1, -2, 3, 1, -2, 3]);
    close(fillModelInput(latents, 1, new Float32Array(6)), [2, -4, 6, 2, -4, 6]);
    close(fillModelInput(latents, 4, new Float32Array(3)), [0.5, -1, 1.5]);
    assert.deepEqual(Array.from(latents), [2, -4, 6], "the latents are left alone");
    assert.throws(() => fillModelInput(latents, 1, new Float32Array(5)), RangeError);
  });

  it("divides in float32 as torch does (x / √(σ²+1), not x · (1/√(σ²+1)))", () => {
    const divisor = Math.fround(Math.sqrt(Math.fround(Math.fround(14.6146 ** 2) + 1)));
    const latents = new Float32Array(1000).map((_, i) => Math.fround(Math.sin(i) * 10));
    const out = fillModelInput(latents, divisor, new Float32Array(1000));
    latents.forEach((x, i) => assert.equal(out[i], Math.fround(x / divisor)));
  });
});
