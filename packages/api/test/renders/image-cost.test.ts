import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { planRender, renderRequestSchema } from "@kiln/shared";

import { stageWork } from "../../src/renders/eta.js";

/** An image-mode render costs about `strength` of a full one in the ETA's work units. */
describe("image-mode render cost", () => {
  it("is int(steps·strength) steps of the same size", () => {
    const size = { image: { key: "k", width: 1024, height: 1024 } };
    const text = planRender(renderRequestSchema().parse({ prompt: "p", mode: "base", steps: 30 }), 1);
    const image = planRender(
      renderRequestSchema().parse({ prompt: "p", mode: "img2img", image: "x", steps: 30, strength: 0.3 }),
      1,
      size,
    );
    const ratio = stageWork(image, image.stages[0]!) / stageWork(text, text.stages[0]!);
    assert.ok(Math.abs(ratio - 9 / 30) < 1e-12, `ratio ${ratio}`);
  });
});
