import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { createApiKey, type Ports } from "@kiln/shared";
import { openTempLocalPorts, type TempLocalPorts } from "@kiln/shared/testing";

import { createApp, type KilnApp } from "../../src/app.js";

/** The OpenAI route's outcomes other than success (success is covered end to end in test/e2e). */
describe("POST /v1/images/generations when the render does not succeed", () => {
  let local: TempLocalPorts;
  let ports: Ports;
  let app: KilnApp;
  let headers: Record<string, string>;
  before(async () => {
    local = openTempLocalPorts({ prefix: "kiln-openai-", maxReceives: 3 });
    ports = local.ports;
    app = createApp({
      ports,
      publicUrl: "http://kiln.test",
      limits: { minSide: 64, maxSide: 2048, maxPixels: 2048 * 2048, maxPromptChars: 4000 },
      maxBodyBytes: 65536,
      downloadUrlSeconds: 600,
      retentionHours: 1,
      timing: { syncWaitSeconds: 0.4, pollMs: 20 },
    });
    headers = {
      authorization: `Bearer ${(await createApiKey(ports.keys, { name: "t", scopes: ["render"] })).key}`,
      "content-type": "application/json",
    };
  });
  after(() => local.close());

  const generate = () =>
    app.request("/v1/images/generations", {
      method: "POST",
      headers,
      body: JSON.stringify({ prompt: "a teapot", size: "64x64" }),
    });

  it("times out with 504 and cancels the render nobody will collect", async () => {
    const res = await generate();
    assert.equal(res.status, 504);
    const body = (await res.json()) as any;
    assert.equal(body.code, "render_timeout");
    assert.deepEqual(body.error, { message: body.detail, type: "server_error", param: null, code: "render_timeout" });
    const job = await ports.jobs.get(res.headers.get("x-kiln-render-id")!);
    assert.equal(job?.status, "canceled");
  });

  it("reports a failed render as 500 with the render's own error, and a canceled one as 409", async () => {
    const finish = (status: "failed" | "canceled") =>
      setTimeout(async () => {
        const [queued] = (
          await ports.jobs.listByOwner((await ports.keys.list())[0]!.id, { limit: 1, status: "queued" })
        ).jobs;
        await ports.jobs.update(
          queued!.id,
          { status: ["queued"] },
          { status, error: { code: "unet_nan", message: "The UNet produced NaN." } },
        );
      }, 100);
    finish("failed");
    const failed = await generate();
    assert.equal(failed.status, 500);
    const body = (await failed.json()) as any;
    assert.equal(body.code, "render_failed");
    assert.equal(body.render_error.code, "unet_nan");
    assert.match(body.error.message, /The UNet produced NaN/);
    finish("canceled");
    const canceled = await generate();
    assert.equal(canceled.status, 409);
    assert.equal(((await canceled.json()) as any).error.type, "invalid_request_error");
  });
});
