import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { type AppFixture, openAppFixture } from "../app-fixture.js";

describe("rateLimit middleware", () => {
  let f: AppFixture;
  let now: number;
  before(() => {
    now = Date.parse("2030-01-01T00:00:00Z");
    f = openAppFixture({ now: () => new Date(now) });
  });
  after(() => f.close());

  it("takes one token per request and answers 429 with Retry-After and RateLimit fields when the bucket is empty", async () => {
    const headers = await f.keyHeaders({ limits: { requestsPerSecond: 1, burst: 2 } });
    const first = await f.app.request("/v1/renders", { headers });
    assert.equal(first.status, 200);
    assert.match(first.headers.get("ratelimit-policy") ?? "", /^"kiln-rps";q=2;w=2$/);
    assert.match(first.headers.get("ratelimit") ?? "", /^"kiln-rps";r=1;/);
    assert.equal((await f.app.request("/v1/renders", { headers })).status, 200);
    const refused = await f.app.request("/v1/renders", { headers });
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get("retry-after"), "1");
    const body = (await refused.json()) as { code: string; "violated-policies": string[] };
    assert.equal(body.code, "rate_limited");
    assert.deepEqual(body["violated-policies"], ["kiln-rps"]);
    now += 1000; // the bucket refills at one token a second
    assert.equal((await f.app.request("/v1/renders", { headers })).status, 200);
  });

  it("leaves keys without a rate limit alone", async () => {
    const headers = await f.keyHeaders();
    for (let i = 0; i < 5; i++) assert.equal((await f.app.request("/v1/renders", { headers })).status, 200);
  });
});
