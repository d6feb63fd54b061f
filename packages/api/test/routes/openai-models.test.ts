import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { createApiKey, type Ports } from "@kiln/shared";
import OpenAI from "openai";

import type { KilnApp } from "../../src/app.js";
import { type AppFixture, openAppFixture } from "../app-fixture.js";

/** `GET /v1/models` driven by the official OpenAI SDK, and the reference page's rough edges. */
describe("OpenAI models route and the reference page", () => {
  let fixture: AppFixture;
  let ports: Ports;
  let app: KilnApp;
  let key: string;
  const client = (apiKey: string) =>
    new OpenAI({
      apiKey,
      baseURL: "http://kiln.test/v1",
      maxRetries: 0,
      fetch: (url: string | URL | Request, init?: RequestInit) => app.request(String(url), init) as Promise<Response>,
    });
  before(async () => {
    fixture = openAppFixture();
    ({ app, ports } = fixture);
    key = (await createApiKey(ports.keys, { name: "t", scopes: ["render"] })).key;
  });
  after(() => fixture.close());

  it("models.list() lists the models of workers that polled recently, in OpenAI's shape", async () => {
    assert.ok(ports.workers, "the local family records worker polls");
    assert.deepEqual((await client(key).models.list()).data, [], "no worker has polled yet");
    await ports.workers.heartbeat({ workerId: "w1", stages: ["base"], lastPollAt: Date.now(), busy: 0 });
    const models = [];
    for await (const m of client(key).models.list()) models.push(m);
    assert.deepEqual(models, [{ id: "sdxl-base", object: "model", created: 1_690_329_600, owned_by: "kiln" }]);
    assert.equal((await client(key).models.retrieve("sdxl-base")).id, "sdxl-base");
    await assert.rejects(client(key).models.retrieve("sdxl-refiner"), (e: unknown) => {
      assert.ok(e instanceof OpenAI.NotFoundError);
      assert.match(e.message, /No loaded model "sdxl-refiner"/);
      return true;
    });
  });

  it("models.list() without a valid key is an authentication error the SDK recognises", async () => {
    await assert.rejects(client("kiln_nope").models.list(), OpenAI.AuthenticationError);
  });

  it("/docs and /docs/ serve the reference; its key field is masked and Try it starts small", async () => {
    for (const p of ["/docs", "/docs/"]) {
      const res = await app.request(p);
      assert.equal(res.status, 200, p);
      assert.match(await res.text(), /<input type="password" id="token"/);
    }
    const doc = (await (await app.request("/openapi.json")).json()) as any;
    const example = doc.components.schemas.RenderRequest.example;
    assert.ok(example.width * example.height <= 256 * 256 && example.steps <= 10, JSON.stringify(example));
  });
});
