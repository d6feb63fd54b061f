import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { KilnError } from "@kiln/shared";

import { drawNoise, NoiseSource } from "../src/engine/noise.js";
import { noiseHelper } from "../src/engine/noise-helper.js";

describe("NoiseSource snapshots", () => {
  it("a restored generator continues the stream exactly, including the cached small-draw normal", () => {
    const a = new NoiseSource(123);
    a.randn(5); // the < 16 path leaves a cached normal behind
    a.randn(100);
    const b = NoiseSource.restore(a.snapshot());
    assert.deepEqual(b.randn(3), a.randn(3));
    assert.deepEqual(b.randn(1000), a.randn(1000));
  });
});

describe("the step-noise helper thread", () => {
  it("draws the values the images' generators would have drawn on this thread, step after step", async () => {
    const helper = await noiseHelper();
    assert.ok(helper, "the helper starts under tsx");
    const per = 4 * 16 * 16;
    const here = [new NoiseSource(7), new NoiseSource(8)];
    drawNoise(here, new Float32Array(2 * per)); // the initial latents, drawn on this thread first
    const stream = helper.open(here, 2 * per);
    try {
      for (let step = 0; step < 3; step++) {
        stream.request();
        const remote = stream.take();
        assert.deepEqual(remote, drawNoise(here, new Float32Array(2 * per)), `step ${step}`);
      }
    } finally {
      stream.close();
    }
  });

  it("serves several streams at once and refuses a take without a request", async () => {
    const helper = (await noiseHelper())!;
    const a = helper.open([new NoiseSource(1)], 64);
    const b = helper.open([new NoiseSource(2)], 64);
    a.request();
    b.request();
    assert.deepEqual(b.take(), new NoiseSource(2).randn(64));
    assert.deepEqual(a.take(), new NoiseSource(1).randn(64));
    assert.throws(
      () => a.take(),
      (e: unknown) => e instanceof KilnError && e.code === "noise_helper_misuse",
    );
    a.close();
    b.close();
  });
});
