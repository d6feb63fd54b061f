import assert from "node:assert/strict";
import fs from "node:fs";
import { after, before, describe, it } from "node:test";

import { buildPlayground, GENERATED_FILE } from "../../../../scripts/build-playground.js";
import type { KilnApp } from "../../src/app.js";
import { type AppFixture, openAppFixture } from "../app-fixture.js";

describe("the playground's assets", () => {
  let fixture: AppFixture;
  let app: KilnApp;
  before(() => {
    fixture = openAppFixture();
    ({ app } = fixture);
  });
  after(() => fixture.close());

  it("the committed generated module is what its sources build to (run npm run build:playground)", async () => {
    assert.ok(fs.readFileSync(GENERATED_FILE, "utf8") === (await buildPlayground()), "assets.generated.ts is stale");
  });

  it("serves the page with no-cache and its hashed assets as immutable", async () => {
    const page = await app.request("/");
    assert.equal(page.status, 200);
    assert.equal(page.headers.get("cache-control"), "no-cache");
    const html = await page.text();
    const refs = [...html.matchAll(/(?:src|href)="(playground\/[^"]+)"/g)].map((m) => m[1]!);
    assert.equal(refs.length, 2, html);
    for (const ref of refs) {
      assert.match(ref, /\.[0-9a-f]{12}\.(js|css)$/);
      const res = await app.request(`/${ref}`);
      assert.equal(res.status, 200, ref);
      assert.equal(res.headers.get("cache-control"), "public, max-age=31536000, immutable");
      assert.match(res.headers.get("content-type") ?? "", ref.endsWith(".js") ? /^text\/javascript/ : /^text\/css/);
      assert.ok((await res.text()).length > 500);
    }
    const missing = await app.request("/playground/main.000000000000.js");
    assert.equal(missing.status, 404);
    assert.match(missing.headers.get("content-type") ?? "", /problem\+json/);
  });
});
