import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { type AppFixture, openAppFixture } from "../app-fixture.js";

describe("openAiErrorShape middleware", () => {
  let f: AppFixture;
  before(() => {
    f = openAppFixture();
  });
  after(() => f.close());

  it("adds OpenAI's error member to problems on /v1/images, including the auth middleware's", async () => {
    const res = await f.app.request("/v1/images/generations", { method: "POST" });
    assert.equal(res.status, 401);
    const body = (await res.json()) as { code: string; detail: string; error: Record<string, unknown> };
    assert.equal(body.code, "unauthorized");
    assert.deepEqual(body.error, {
      message: body.detail,
      type: "authentication_error",
      param: null,
      code: "unauthorized",
    });
  });

  it("names the first offending field as param", async () => {
    const res = await f.app.request("/v1/images/generations", {
      method: "POST",
      headers: await f.keyHeaders(),
      body: JSON.stringify({ prompt: "a teapot", size: "13x13" }),
    });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { error: { type: string; param: string } };
    assert.equal(body.error.type, "invalid_request_error");
    assert.equal(body.error.param, "size");
  });

  it("leaves problems of other routes in plain problem+json", async () => {
    const res = await f.app.request("/v1/renders");
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.error, undefined);
  });
});
