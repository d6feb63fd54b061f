import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { planRender, type RenderRequestInput, renderRequestSchema } from "@kiln/shared";

import { stageTimeIdInputs, timeIds } from "../src/engine/conditioning.js";

const plan = (body: Partial<RenderRequestInput>) =>
  planRender(renderRequestSchema().parse({ prompt: "x", ...body }), 1);
const rows = (ids: Float32Array, width: number) =>
  Array.from({ length: ids.length / width }, (_, i) => Array.from(ids.subarray(i * width, (i + 1) * width)));

describe("add_time_ids", () => {
  it("base defaults: [H, W, 0, 0, H, W] on every row, negative rows too", () => {
    const p = plan({ width: 1024, height: 768 });
    assert.deepEqual(rows(timeIds(p, 6, 1, true), 6), [
      [768, 1024, 0, 0, 768, 1024],
      [768, 1024, 0, 0, 768, 1024],
    ]);
  });

  it("base: original_size, crops_coords_top_left and target_size as given, (height, width) order", () => {
    const p = plan({
      width: 1024,
      height: 1024,
      original_size: [512, 768],
      crops_coords_top_left: [16, 32],
      target_size: [1024, 896],
    });
    const r = rows(timeIds(p, 6, 2, true), 6);
    assert.equal(r.length, 4);
    for (const x of r) assert.deepEqual(x, [512, 768, 16, 32, 1024, 896]);
  });

  it("refiner: aesthetic 6.0 on positive rows, 2.5 and crops (0, 0) on negative rows, laid out [negative × n, positive × n]", () => {
    const p = plan({ width: 1024, height: 1024, crops_coords_top_left: [8, 24] });
    assert.deepEqual(rows(timeIds(p, 5, 3, true), 5), [
      [1024, 1024, 0, 0, 2.5],
      [1024, 1024, 0, 0, 2.5],
      [1024, 1024, 0, 0, 2.5],
      [1024, 1024, 8, 24, 6],
      [1024, 1024, 8, 24, 6],
      [1024, 1024, 8, 24, 6],
    ]);
  });

  it("refiner: the request's aesthetic scores; without guidance only positive rows", () => {
    const p = plan({ aesthetic_score: 7, negative_aesthetic_score: 1.5, original_size: [640, 512] });
    assert.deepEqual(rows(timeIds(p, 5, 1, true), 5), [
      [640, 512, 0, 0, 1.5],
      [640, 512, 0, 0, 7],
    ]);
    assert.deepEqual(rows(timeIds(p, 5, 2, false), 5), [
      [640, 512, 0, 0, 7],
      [640, 512, 0, 0, 7],
    ]);
  });
});

describe("stageTimeIdInputs (SDEdit with a latent upscale)", () => {
  it("sizes left at their default follow the upscaled image, as diffusers' img2img defaults them", () => {
    const p = plan({ mode: "sdedit", width: 1024, height: 768, hires_scale: 1.5 });
    const inputs = stageTimeIdInputs(p, [1152, 1536]);
    assert.deepEqual(inputs.originalSize, [1152, 1536]);
    assert.deepEqual(inputs.targetSize, [1152, 1536]);
    assert.deepEqual(rows(timeIds(inputs, 6, 1, false), 6), [[1152, 1536, 0, 0, 1152, 1536]]);
    assert.deepEqual(rows(timeIds(inputs, 5, 1, true), 5), [
      [1152, 1536, 0, 0, 2.5],
      [1152, 1536, 0, 0, 6],
    ]);
  });

  it("sizes the request set stay; without an upscale nothing changes", () => {
    const p = plan({
      mode: "sdedit",
      width: 1024,
      height: 768,
      hires_scale: 1.5,
      original_size: [4096, 4096],
      crops_coords_top_left: [4, 4],
    });
    const inputs = stageTimeIdInputs(p, [1152, 1536]);
    assert.deepEqual(inputs.originalSize, [4096, 4096]);
    assert.deepEqual(inputs.targetSize, [1152, 1536]);
    assert.deepEqual(inputs.cropsCoordsTopLeft, [4, 4]);
    const same = stageTimeIdInputs(p, [768, 1024]);
    assert.deepEqual(
      [same.originalSize, same.targetSize],
      [
        [4096, 4096],
        [768, 1024],
      ],
    );
  });
});
