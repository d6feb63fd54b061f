import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { compareKeys, END_ID, parseEventId, positionId, progressId, stageId } from "../../src/renders/event-ids.js";

describe("render event ids", () => {
  it("order a job's life: position shrinking, then stages and their steps, then the end", () => {
    const ids = [
      positionId(5),
      positionId(2),
      positionId(0),
      stageId(0),
      progressId(0, 1),
      progressId(0, 12),
      stageId(1),
      progressId(1, 3),
      END_ID,
    ];
    for (let i = 1; i < ids.length; i++) {
      assert.ok(compareKeys(parseEventId(ids[i])!, parseEventId(ids[i - 1])) > 0, `${ids[i]} after ${ids[i - 1]}`);
    }
    assert.equal(compareKeys(parseEventId(progressId(1, 3))!, parseEventId(progressId(1, 3))), 0);
  });

  it("treat ids it did not issue as no id (the stream starts over)", () => {
    for (const bad of ["", "q.", "r.1", "r.1.2.3", "end2", "q.-1", "x", "r.1.9999999"])
      assert.equal(parseEventId(bad), undefined, bad);
    assert.ok(compareKeys(parseEventId(positionId(100))!, undefined) > 0);
  });
});
