import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { parsePrefer, preferWait } from "../../src/http/prefer.js";

describe("Prefer header", () => {
  it("parses preferences per RFC 7240: tokens, values, quoted values, parameters, first one wins", () => {
    const p = parsePrefer('respond-async, WAIT=10;foo=bar, handling="lenient", wait=20');
    assert.equal(p.get("respond-async"), "");
    assert.equal(p.get("wait"), "10");
    assert.equal(p.get("handling"), "lenient");
    assert.equal(parsePrefer(undefined).size, 0);
  });

  it("accepts wait from 0 to 60 whole seconds and names the rule otherwise", () => {
    assert.deepEqual(preferWait("wait=5"), { seconds: 5 });
    assert.deepEqual(preferWait("wait=0"), { seconds: 0 });
    assert.deepEqual(preferWait("respond-async"), {});
    assert.match(preferWait("wait=61").error!, /at most 60/);
    assert.match(preferWait("wait=1.5").error!, /whole number/);
    assert.match(preferWait("wait=").error!, /whole number/);
    assert.match(preferWait("wait=-3").error!, /whole number/);
  });
});
