import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { type AppFixture, openAppFixture } from "../app-fixture.js";

describe("requireJsonBody middleware", () => {
  let f: AppFixture;
  let headers: Record<string, string>;
  before(async () => {
    f = openAppFixture();
    headers = await f.keyHeaders();
  });
  after(() => f.close());

  it("refuses a form body with 415 naming the content-type header", async () => {
    const res = await f.app.request("/v1/renders", {
      method: "POST",
      headers: { ...headers, "content-type": "application/x-www-form-urlencoded" },
      body: "prompt=a+cat",
    });
    assert.equal(res.status, 415);
    const body = (await res.json()) as { errors: { field: string }[] };
    assert.equal(body.errors[0]!.field, "header.content-type");
  });

  it("accepts +json media types", async () => {
    const res = await f.app.request("/v1/renders", {
      method: "POST",
      headers: { ...headers, "content-type": "application/merge-patch+json" },
      body: JSON.stringify({ prompt: "a cat", width: 64, height: 64, steps: 1 }),
    });
    assert.equal(res.status, 202);
  });

  it("answers malformed JSON with 400 invalid_body problem+json", async () => {
    const res = await f.app.request("/v1/renders", { method: "POST", headers, body: "{not json" });
    assert.equal(res.status, 400);
    assert.equal(res.headers.get("content-type"), "application/problem+json");
  });

  // POST /v1/renders takes pictures, so its bound is the image one (KILN_MAX_IMAGE_BYTES); other routes keep
  // KILN_MAX_BODY_BYTES.
  it("answers an over-large body with 413 body_too_large", async () => {
    const res = await f.app.request("/v1/keys", {
      method: "POST",
      headers,
      body: JSON.stringify({ prompt: "x".repeat(70_000) }),
    });
    assert.equal(res.status, 413);
    assert.equal(((await res.json()) as { code: string }).code, "body_too_large");
  });
});
