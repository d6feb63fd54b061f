import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { ignoredWords, matchingPictures, PICTURES } from "../../src/models/reference/picture-set.js";

describe("reference picture set: prompt words", () => {
  it("reads the colour before 'background' as the background and reports unknown words", () => {
    const matches = matchingPictures("a red circle on a blue background");
    assert.equal(matches.length, 6);
    for (const p of matches) assert.deepEqual([p.colour, p.shape, p.background], ["red", "circle", "blue"]);
    assert.deepEqual(ignoredWords("a lighthouse on a cliff at dusk, red circle"), ["lighthouse", "cliff", "dusk"]);
    assert.deepEqual(ignoredWords("a small red circle at the left on a blue background"), []);
  });

  it("matches every picture for an empty prompt and one for a fully specified one", () => {
    assert.equal(matchingPictures("").length, PICTURES.length);
    assert.equal(matchingPictures("a large yellow star at the right on a purple background").length, 1);
  });
});
