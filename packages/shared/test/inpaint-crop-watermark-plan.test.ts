import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { DEFAULT_RENDER_LIMITS, planRender, renderRequestSchema } from "../src/index.js";

const inputs = {
  image: { key: "jobs/j/inputs/image.png", width: 512, height: 384 },
  mask: { key: "jobs/j/inputs/mask.png", width: 512, height: 384 },
};
const fields = (r: { success: boolean; error?: { issues: { path: PropertyKey[] }[] } }) =>
  r.success ? [] : r.error!.issues.map((i) => i.path.join("."));

describe("padding_mask_crop and watermark in the request and the plan", () => {
  it("carries padding_mask_crop into the plan's source for every stage", () => {
    const request = renderRequestSchema().parse({
      prompt: "a fox",
      mode: "inpaint",
      image: "x",
      mask: "x",
      padding_mask_crop: 32,
      refiner: "ensemble",
    });
    const plan = planRender(request, 1, inputs);
    assert.equal(plan.source?.paddingMaskCrop, 32);
    assert.deepEqual([plan.width, plan.height], [512, 384]);
    assert.equal(plan.stages.length, 2);
    const without = planRender(
      renderRequestSchema().parse({ prompt: "a fox", mode: "inpaint", image: "x", mask: "x" }),
      1,
      inputs,
    );
    assert.equal(without.source?.paddingMaskCrop, undefined);
  });

  it("refuses padding_mask_crop outside inpaint/outpaint and bad values, naming the field", () => {
    const schema = renderRequestSchema();
    for (const body of [
      { mode: "img2img", image: "x", padding_mask_crop: 8 },
      { mode: "base", padding_mask_crop: 8 },
      { mode: "inpaint", image: "x", mask: "x", padding_mask_crop: -1 },
      { mode: "inpaint", image: "x", mask: "x", padding_mask_crop: 1.5 },
      { mode: "inpaint", image: "x", mask: "x", padding_mask_crop: 5000 },
    ])
      assert.ok(
        fields(schema.safeParse({ prompt: "a fox", ...body })).includes("padding_mask_crop"),
        JSON.stringify(body),
      );
  });

  it("watermarks by default; watermark: false only where the operator allows it", () => {
    const plan = planRender(renderRequestSchema().parse({ prompt: "a fox", mode: "base" }), 1);
    assert.equal(plan.watermark, true);
    assert.deepEqual(fields(renderRequestSchema().safeParse({ prompt: "a fox", watermark: false })), ["watermark"]);
    const allowed = renderRequestSchema({ ...DEFAULT_RENDER_LIMITS, allowUnwatermarked: true });
    const off = planRender(allowed.parse({ prompt: "a fox", mode: "base", watermark: false }), 1);
    assert.equal(off.watermark, false);
  });
});
