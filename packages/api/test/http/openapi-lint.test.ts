import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { lintFromString, loadConfig } from "@redocly/openapi-core";

import type { KilnApp } from "../../src/app.js";
import { type AppFixture, openAppFixture } from "../app-fixture.js";

/**
 * The generated /openapi.json, linted with Redocly's engine (what `redocly lint` runs) on its
 * `recommended` ruleset as redocly.yaml sets it: no errors and no warnings, so generated clients and
 * reference UIs get operation ids, a licence, declared security and every documented status.
 */
describe("GET /openapi.json", () => {
  let fixture: AppFixture;
  let app: KilnApp;
  before(() => {
    fixture = openAppFixture({ serveFiles: { verify: async () => false } });
    ({ app } = fixture);
  });
  after(() => fixture.close());

  it("passes redocly's recommended ruleset with no errors and no warnings", async () => {
    const res = await app.request("/openapi.json");
    assert.equal(res.status, 200);
    const problems = await lintFromString({
      source: await res.text(),
      absoluteRef: "http://kiln.test/openapi.json",
      config: await loadConfig({ configPath: path.resolve(import.meta.dirname, "../../../../redocly.yaml") }),
    });
    const lines = problems.map((p) => `${p.severity} ${p.ruleId}: ${p.message} at ${p.location[0]?.pointer ?? ""}`);
    assert.deepEqual(lines, []);
  });

  it("documents 401 and 429 on every keyed route, no security on public ones, and each image type of downloads", async () => {
    const doc = (await (await app.request("/openapi.json")).json()) as {
      paths: Record<string, Record<string, { security?: unknown[]; responses: Record<string, any> }>>;
    };
    const keyed: string[] = [];
    for (const [p, item] of Object.entries(doc.paths))
      for (const [method, op] of Object.entries(item)) {
        assert.ok(op.security, `${method} ${p} declares its security`);
        if (op.security.length === 0) continue;
        keyed.push(`${method} ${p}`);
        for (const status of ["401", "429"]) assert.ok(op.responses[status], `${method} ${p} documents ${status}`);
      }
    assert.ok(keyed.length >= 12, keyed.join(", "));
    assert.deepEqual(doc.paths["/healthz"]!.get!.security, []);
    assert.deepEqual(Object.keys(doc.paths["/v1/files/{key}"]!.get!.responses["200"].content).sort(), [
      "image/jpeg",
      "image/png",
      "image/webp",
    ]);
  });
});
