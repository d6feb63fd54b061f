import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { type AppFixture, openAppFixture } from "../app-fixture.js";

describe("framework-level answers are problem+json", () => {
  let f: AppFixture;
  before(() => {
    f = openAppFixture();
  });
  after(() => f.close());

  it("answers an unknown path with 404 not_found", async () => {
    const res = await f.app.request("/v2/nothing");
    assert.equal(res.status, 404);
    assert.equal(res.headers.get("content-type"), "application/problem+json");
    assert.equal(((await res.json()) as { code: string }).code, "not_found");
  });

  it("answers a known path with the wrong method with 405 and Allow", async () => {
    const res = await f.app.request("/healthz", { method: "POST" });
    assert.equal(res.status, 405);
    assert.equal(res.headers.get("allow"), "GET, HEAD");
    assert.equal(((await res.json()) as { code: string }).code, "method_not_allowed");
  });

  it("answers a wrong method on a parameterised path with 405", async () => {
    const res = await f.app.request("/v1/renders/job_x", { method: "PUT", headers: await f.keyHeaders() });
    assert.equal(res.status, 405);
    assert.match(res.headers.get("allow") ?? "", /DELETE, GET/);
  });
});
