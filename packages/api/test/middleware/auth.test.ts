import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { type AppFixture, openAppFixture } from "../app-fixture.js";

describe("requireKey middleware", () => {
  let f: AppFixture;
  before(() => {
    f = openAppFixture();
  });
  after(() => f.close());

  it("answers 401 problem+json with a Bearer challenge when no key is sent", async () => {
    const res = await f.app.request("/v1/renders");
    assert.equal(res.status, 401);
    assert.equal(res.headers.get("content-type"), "application/problem+json");
    assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="kiln"');
    const body = (await res.json()) as { code: string; detail: string };
    assert.equal(body.code, "unauthorized");
    assert.match(body.detail, /kiln keys create/);
  });

  it("answers 401 with error=invalid_token for an unknown key", async () => {
    const res = await f.app.request("/v1/renders", { headers: { authorization: "Bearer kiln_nope_nope" } });
    assert.equal(res.status, 401);
    assert.match(res.headers.get("www-authenticate") ?? "", /error="invalid_token"/);
  });

  it("answers 403 with error=insufficient_scope when the key lacks the admin scope", async () => {
    const res = await f.app.request("/v1/keys", { headers: await f.keyHeaders() });
    assert.equal(res.status, 403);
    assert.equal(((await res.json()) as { code: string }).code, "forbidden");
  });

  it("lets a valid key through to the route", async () => {
    const res = await f.app.request("/v1/renders", { headers: await f.keyHeaders() });
    assert.equal(res.status, 200);
  });

  it("does not guard routes outside the keyed groups", async () => {
    const res = await f.app.request("/healthz");
    assert.equal(res.status, 200);
  });
});
