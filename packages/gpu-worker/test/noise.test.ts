import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { KilnError } from "@kiln/shared";

import { drawNoise, initialNoise, NOISE_KERNELS, NoiseSource } from "../src/engine/noise.js";

/** Values printed by torch to 4 decimals: ours must round to them (half a unit in the last place, plus an ulp). */
function assertPrinted(actual: Float32Array, printed: number[], label: string): void {
  assert.equal(actual.length, printed.length, `${label}: length`);
  for (let i = 0; i < printed.length; i++) {
    assert.ok(
      Math.abs(actual[i]! - printed[i]!) <= 5.1e-5,
      `${label}[${i}]: got ${actual[i]}, torch printed ${printed[i]}`,
    );
  }
}

// Published outputs of real PyTorch (CPU generator, float32), quoted from public code and docs.
// kornia's CenterCrop docstring: `torch.manual_seed(0); torch.randn(1, 1, 4, 4)` (exactly one Box–Muller block of 16).
const RANDN_16 = [
  -1.1258, -1.1524, -0.2506, -0.4339, 0.8487, 0.692, -0.316, -2.1152, 0.3223, -1.2633, 0.35, 0.3081, 0.1198, 1.2377,
  1.1168, -0.2473,
];
// A matrix-calculus notebook: `torch.manual_seed(0); X = randn(10, 4); W = randn(4, 4); Y = randn(10, 4)`.
// 40 values = two blocks of 16 plus a tail, so X[24…39] come from 16 fresh uniforms (the tail rule).
const X_10x4 = [
  ...RANDN_16,
  -1.3527,
  -1.6959,
  0.5667,
  0.7935,
  0.5988,
  -1.5551,
  -0.3414,
  1.853,
  -0.2159,
  -0.7425,
  0.5627,
  0.2596,
  -0.174,
  -0.6787,
  0.9383,
  0.4889,
  1.2032,
  0.0845,
  -1.2001,
  -0.0048,
  -0.5181,
  -0.3067,
  -1.581,
  1.7066,
];
const W_4x4 = [
  0.2055, -0.4503, -0.5731, -0.5554, 0.5943, 1.5419, 0.5073, -0.591, -1.3253, 0.1886, -0.0691, -0.4949, -1.4959,
  -0.1938, 0.4455, 1.3253,
];
const Y_10x4 = [
  1.5091, 2.082, 1.7067, 2.3804, -1.1256, -0.317, -1.0925, -0.0852, 0.3276, -0.7607, -1.5991, 0.0185, -0.7504, 0.1854,
  0.6211, 0.6382, -0.0033, -0.5344, 1.1687, 0.3945, 1.9415, 0.7915, -0.0203, -0.4372, -0.2188, -2.4351, -0.0729, -0.034,
  0.9625, 0.3492, -0.9215, -0.0562, -0.6227, -0.4637, 1.9218, -0.4025, 0.1239, 1.1648, 0.9234, 1.3873,
];
// torch.distributions docs: `torch.manual_seed(0); Normal(0., 1.).rsample((8,))` (the < 16 path, double Box–Muller).
const RANDN_8 = [1.541, -0.2934, -2.1788, 0.5684, -1.0845, -1.3986, 0.4033, 0.838];

// Printed to 4 decimals, these hold for both kernels (they differ by at most ~2e-6); the AVX2 bytes are checked
// against full-precision torch output in noise-avx2.test.ts.
for (const kernel of NOISE_KERNELS) {
  describe(`NoiseSource (torch.randn on the CPU generator, ${kernel} kernel)`, () => {
    it("reproduces torch.manual_seed(0); torch.randn(16)", () => {
      assertPrinted(new NoiseSource(0, kernel).randn(16), RANDN_16, "randn(16)");
    });

    it("reproduces a sequence of draws including the tail re-fill of a 40-value tensor", () => {
      const g = new NoiseSource(0, kernel);
      assertPrinted(g.randn(40), X_10x4, "X");
      assertPrinted(g.randn(16), W_4x4, "W");
      assertPrinted(g.randn(40), Y_10x4, "Y");
    });

    it("reproduces the small-tensor path, and its cached second normal across draws", () => {
      assertPrinted(new NoiseSource(0, kernel).randn(8), RANDN_8, "randn(8)");
      // Two draws of 3: the 4th value is the cached sine half of the 2nd pair, not a new pair.
      const g = new NoiseSource(0, kernel);
      const a = g.randn(3);
      const b = g.randn(3);
      assertPrinted(Float32Array.of(...a, ...b), RANDN_8.slice(0, 6), "randn(3) twice");
    });

    it("reproduces a 27-value tensor (tail overlapping the first block) then a 3-value one", () => {
      // A docstring's `manual_seed(0); x = randn(3, 3, 3); y = randn(3)`, printed as shuffled mini-batches.
      const g = new NoiseSource(0, kernel);
      const x = g.randn(27);
      assertPrinted(x.subarray(0, 9), RANDN_16.slice(0, 9), "x[0:9]");
      assertPrinted(
        x.subarray(9, 18),
        [-1.2633, 0.35, 0.266, 0.1665, 0.8744, -0.1435, -0.1116, -0.6136, 0.0316],
        "x[9:18]",
      );
      assertPrinted(
        x.subarray(18, 27),
        [-0.4927, 0.0537, 0.6181, -0.4128, -0.8411, -2.316, -0.1023, 0.7924, -0.2897],
        "x[18:27]",
      );
      assertPrinted(g.randn(3), [-0.2251, 2.3466, -1.1088], "y");
    });

    it("fills in place with randnInto exactly as randn would", () => {
      const out = new Float32Array(1000);
      assert.equal(new NoiseSource(7, kernel).randnInto(out), out);
      assert.deepEqual(out, new NoiseSource(7, kernel).randn(1000));
    });

    it("uses the low 32 bits of the seed, like torch's mt19937", () => {
      assert.deepEqual(new NoiseSource(2 ** 32 + 5, kernel).randn(20), new NoiseSource(5, kernel).randn(20));
      assert.notDeepEqual(new NoiseSource(6, kernel).randn(20), new NoiseSource(5, kernel).randn(20));
    });

    it("rejects seeds that are not non-negative safe integers", () => {
      for (const bad of [-1, 1.5, Number.NaN, 2 ** 53]) {
        assert.throws(
          () => new NoiseSource(bad, kernel),
          (e: unknown) => e instanceof KilnError && e.code === "noise_seed_invalid",
        );
      }
    });

    it("looks Gaussian over a large draw", () => {
      const x = new NoiseSource(1234, kernel).randn(200_000);
      let sum = 0;
      let sq = 0;
      for (const v of x) {
        sum += v;
        sq += v * v;
      }
      const mean = sum / x.length;
      assert.ok(Math.abs(mean) < 0.01, `mean ${mean}`);
      assert.ok(Math.abs(sq / x.length - mean * mean - 1) < 0.01, `variance ${sq / x.length}`);
    });
  });
}

describe("initialNoise and drawNoise", () => {
  it("gives image i the noise of seed + i", () => {
    const shape = [4, 16, 16];
    assert.deepEqual(initialNoise(42, 3, shape), new NoiseSource(45).randn(4 * 16 * 16));
    assert.notDeepEqual(initialNoise(42, 0, shape), initialNoise(42, 1, shape));
  });

  it("fills the whole buffer from one source, or one chunk per source from a list", () => {
    const one = drawNoise(new NoiseSource(9), new Float32Array(64));
    assert.deepEqual(one, new NoiseSource(9).randn(64));
    const two = drawNoise([new NoiseSource(1), new NoiseSource(2)], new Float32Array(64));
    assert.deepEqual(two.subarray(0, 32), new NoiseSource(1).randn(32));
    assert.deepEqual(two.subarray(32), new NoiseSource(2).randn(32));
    assert.throws(
      () => drawNoise([new NoiseSource(1), new NoiseSource(2), new NoiseSource(3)], new Float32Array(64)),
      KilnError,
    );
  });
});
