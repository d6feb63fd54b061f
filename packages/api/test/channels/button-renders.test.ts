import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { upscaledSize } from "../../src/channels/core/button-renders.js";

describe("upscale size", () => {
  const limits = { maxSide: 2048, maxPixels: 2048 * 2048 };

  it("doubles a picture that fits twice over", () => {
    assert.deepEqual(upscaledSize(64, 64, limits), { width: 128, height: 128 });
    assert.deepEqual(upscaledSize(1024, 768, limits), { width: 2048, height: 1536 });
  });

  it("grows less when a side or the pixel budget would be exceeded, keeping multiples of 8", () => {
    assert.deepEqual(upscaledSize(1536, 1024, limits), { width: 2048, height: 1360 });
    assert.deepEqual(upscaledSize(1024, 1024, { maxSide: 4096, maxPixels: 1536 * 1536 }), {
      width: 1536,
      height: 1536,
    });
  });

  it("refuses a picture already at the server's largest size", () => {
    assert.equal(upscaledSize(2048, 1024, limits), null);
    assert.equal(upscaledSize(64, 64, { maxSide: 64, maxPixels: 1 << 20 }), null);
  });
});
