import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { outputSize, planRender, renderRequestSchema } from "@kiln/shared";

const parse = (body: unknown) => renderRequestSchema().parse(body);

describe("stage planner", () => {
  it("base mode is one stage that decodes", () => {
    const plan = planRender(parse({ prompt: "a cat", mode: "base" }), 7);
    assert.deepEqual(plan.stages, [{ index: 0, kind: "base", model: "base", output: "images" }]);
    assert.equal(plan.seed, 7);
  });

  it("ensemble hands noisy latents over at high_noise_frac", () => {
    const plan = planRender(parse({ prompt: "a cat", high_noise_frac: 0.7 }), 1);
    assert.equal(plan.mode, "ensemble");
    assert.equal(plan.stages[0]!.denoisingEnd, 0.7);
    assert.equal(plan.stages[0]!.output, "latents");
    assert.equal(plan.stages[1]!.denoisingStart, 0.7);
    assert.equal(plan.stages[1]!.kind, "refine");
  });

  it("sdedit lets the base finish and re-noises to strength", () => {
    const plan = planRender(
      parse({ prompt: "a cat", mode: "sdedit", strength: 0.4, hires_scale: 1.5, width: 512, height: 768 }),
      1,
    );
    assert.equal(plan.stages[0]!.denoisingEnd, undefined);
    assert.equal(plan.stages[1]!.strength, 0.4);
    assert.deepEqual(outputSize(plan), { width: 768, height: 1152 });
  });

  it("applies the documented defaults", () => {
    const plan = planRender(parse({ prompt: "x" }), 3);
    assert.equal(plan.width, 1024);
    assert.equal(plan.steps, 30);
    assert.equal(plan.guidanceScale, 5);
    assert.equal(plan.highNoiseFrac, 0.8);
    assert.equal(plan.strength, 0.3);
    assert.deepEqual(plan.originalSize, [1024, 1024]);
    assert.deepEqual(plan.cropsCoordsTopLeft, [0, 0]);
    assert.equal(plan.aestheticScore, 6);
    assert.equal(plan.negativeAestheticScore, 2.5);
  });

  it("rejects bad fields by name", () => {
    const r = renderRequestSchema().safeParse({ prompt: "", width: 1001, steps: 0, mode: "turbo", colour: "red" });
    assert.equal(r.success, false);
    const paths = r.error!.issues.map((i) => i.path.join(".") || String((i as { keys?: string[] }).keys));
    for (const f of ["prompt", "width", "steps", "mode"]) assert.ok(paths.includes(f), `${f} in ${paths}`);
    assert.ok(r.error!.issues.some((i) => i.code === "unrecognized_keys"));
  });
});
