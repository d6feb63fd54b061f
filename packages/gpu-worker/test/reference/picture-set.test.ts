import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { ignoredWords, matchingPictures, PICTURES, promptCode } from "../../src/models/reference/picture-set.js";

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

  it("composes two shapes: the first-named at the left, bindings by adjacency, one-shape prompts unchanged", () => {
    assert.equal(PICTURES.length, 1344 + 6272);
    const two = matchingPictures("a red circle and a yellow star on a blue background");
    assert.equal(two.length, 1);
    assert.deepEqual(
      [two[0]!.colour, two[0]!.shape, two[0]!.position, two[0]!.second?.colour, two[0]!.second?.shape],
      ["red", "circle", "left", "yellow", "star"],
    );
    // Shapes named without colours: both orders and any colours but the background's.
    assert.equal(matchingPictures("a circle and a star on a blue background").length, 2 * 7 * 7);
    // One shape word: one-shape pictures only, as before the pairs existed.
    assert.ok(matchingPictures("a red circle").every((p) => p.second === undefined));
    assert.equal(matchingPictures("a red circle").length, 7 * 6);
    // A comma between colour and shape breaks the binding, as it does for the CLIP tokens the encoder sees.
    const code = promptCode("a red, circle and a yellow star");
    assert.equal(
      code.reduce((a, v) => a + v, 0),
      6,
    ); // red, circle, yellow, star, second binding, count two
  });
});
