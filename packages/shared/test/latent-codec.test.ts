import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  decodeLatents,
  encodeLatents,
  float16BitsToFloat32,
  float32ToFloat16Bits,
  KilnError,
  type Latents,
} from "@kiln/shared";

const meta = {
  jobId: "job_1",
  stage: 0,
  scheduler: "euler",
  schedulerConfigHash: "abc",
  latentSpace: "ve" as const,
  stepIndex: 32,
  steps: 40,
  timestep: 201,
  sigma: 0.5154,
  seed: 42,
};

function sample(): Latents {
  const data = new Float32Array(2 * 4 * 8 * 8);
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i) * 3;
  return { meta, shape: [2, 4, 8, 8], data };
}

describe("latent codec", () => {
  it("round-trips fp16 within half precision and keeps the metadata", async () => {
    const input = sample();
    const out = await decodeLatents(await encodeLatents(input));
    assert.deepEqual(out.meta, meta);
    assert.deepEqual(out.shape, [2, 4, 8, 8]);
    for (let i = 0; i < input.data.length; i++)
      assert.ok(Math.abs(out.data[i]! - input.data[i]!) <= 2e-3, `value ${i}`);
  });

  it("round-trips fp32 exactly", async () => {
    const input = sample();
    const out = await decodeLatents(await encodeLatents(input, { dtype: "float32" }));
    assert.deepEqual(Array.from(out.data), Array.from(input.data));
  });

  it("a 1024² image's latents are 128 KiB of payload in fp16", async () => {
    const data = new Float32Array(4 * 128 * 128);
    const bytes = await encodeLatents({ meta, shape: [1, 4, 128, 128], data });
    assert.ok(bytes.length > 128 * 1024 && bytes.length < 128 * 1024 + 1024);
  });

  for (const [name, damage] of [
    [
      "a flipped bit",
      (b: Uint8Array) => {
        b[200] = b[200]! ^ 0x10;
        return b;
      },
    ],
    ["truncation", (b: Uint8Array) => b.subarray(0, b.length - 100)],
    ["a tiny blob", (b: Uint8Array) => b.subarray(0, 10)],
    [
      "wrong magic",
      (b: Uint8Array) => {
        b[0] = 0x41;
        return b;
      },
    ],
  ] as const) {
    it(`rejects ${name} with latents_corrupt`, async () => {
      const bytes = await encodeLatents(sample());
      await assert.rejects(
        decodeLatents(damage(bytes)),
        (e: unknown) => e instanceof KilnError && e.code === "latents_corrupt",
      );
    });
  }

  it("rejects an unknown version with a clear code", async () => {
    const bytes = await encodeLatents(sample());
    bytes[4] = 9;
    await assert.rejects(
      decodeLatents(bytes),
      (e: unknown) => e instanceof KilnError && e.code === "latents_version_unsupported",
    );
  });

  it("converts half precision edge values", () => {
    for (const v of [0, -0, 1, -2, 65504, 6.1e-5, 5.96e-8]) {
      assert.ok(Math.abs(float16BitsToFloat32(float32ToFloat16Bits(v)) - v) <= Math.abs(v) * 1e-3 + 1e-9, String(v));
    }
    assert.equal(float16BitsToFloat32(float32ToFloat16Bits(1e6)), Infinity);
    assert.ok(Number.isNaN(float16BitsToFloat32(float32ToFloat16Bits(NaN))));
    // 1 + 2^-11 is exactly halfway between two halves: ties go to even (1.0).
    assert.equal(float16BitsToFloat32(float32ToFloat16Bits(1 + 2 ** -11)), 1);
  });
});
