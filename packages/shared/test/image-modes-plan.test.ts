import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { planRender, renderRequestSchema, sourceSize } from "../src/index.js";

/** Planning img2img, inpaint and outpaint: sizes from the picture, stages with the optional refiner, schema rules. */

const inputs = { image: { key: "jobs/j/inputs/image.png", width: 1600, height: 900 } };
const parse = (body: Record<string, unknown>) => renderRequestSchema().parse({ prompt: "p", image: "x", ...body });

describe("image-mode plans", () => {
  it("take the picture's size into 1024² in multiples of 8, or the request's, keeping the aspect for one side", () => {
    // √(1024²/(1600·900)) = 0.8533…: 1365.3 → 1360, 768 → 768.
    assert.deepEqual(sourceSize({}, inputs.image), { width: 1360, height: 768 });
    assert.deepEqual(sourceSize({}, { width: 640, height: 480 }), { width: 640, height: 480 });
    assert.deepEqual(sourceSize({ width: 800 }, inputs.image), { width: 800, height: 448 });
    assert.deepEqual(sourceSize({ width: 512, height: 512 }, inputs.image), { width: 512, height: 512 });
  });

  it("start stage 0 from the picture at strength, with the refiner as ensemble or SDEdit", () => {
    const plain = planRender(parse({ mode: "img2img" }), 1, inputs);
    assert.deepEqual(plain.stages, [
      { index: 0, kind: "base", model: "base", start: "image", strength: 0.3, output: "images" },
    ]);
    assert.equal(plain.source?.image, inputs.image.key);
    const ensemble = planRender(parse({ mode: "inpaint", mask: "x", refiner: "ensemble" }), 1, inputs);
    assert.equal(ensemble.stages[0]!.strength, 0.9999);
    assert.equal(ensemble.stages[0]!.denoisingEnd, 0.8);
    assert.deepEqual(ensemble.stages[1], {
      index: 1,
      kind: "refine",
      model: "refiner",
      denoisingStart: 0.8,
      output: "images",
    });
    const sdedit = planRender(parse({ mode: "img2img", refiner: "sdedit", refiner_strength: 0.2 }), 1, inputs);
    assert.equal(sdedit.stages[1]!.strength, 0.2);
    const outpaint = planRender(
      parse({ mode: "outpaint", expand: { left: 64, bottom: 32 }, width: 512, height: 512 }),
      1,
      inputs,
    );
    assert.deepEqual([outpaint.width, outpaint.height], [576, 544]);
    assert.deepEqual(outpaint.source?.expand, { left: 64, right: 0, top: 0, bottom: 32 });
  });

  it("reject image fields outside image modes and the missing ones inside", () => {
    const fields = (body: Record<string, unknown>) => {
      const r = renderRequestSchema().safeParse({ prompt: "p", ...body });
      return r.success ? [] : r.error.issues.map((i) => i.path.join("."));
    };
    assert.deepEqual(fields({ mode: "base", image: "x" }), ["image"]);
    assert.deepEqual(fields({ mode: "img2img" }), ["image"]);
    assert.deepEqual(fields({ mode: "inpaint", image: "x" }), ["mask"]);
    assert.deepEqual(fields({ mode: "outpaint", image: "x" }), ["expand"]);
    assert.deepEqual(fields({ mode: "img2img", image: "x", refiner: "ensemble", strength: 0.15 }), ["strength"]);
    assert.deepEqual(fields({ mode: "ensemble", refiner: "sdedit" }), ["refiner"]);
    assert.deepEqual(fields({ mode: "outpaint", image: "x", expand: { left: 7 } }), ["expand.left"]);
  });
});
