import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { KilnError, loadConfig } from "@kiln/shared";

describe("config", () => {
  it("has working defaults", () => {
    const c = loadConfig({});
    assert.equal(c.backend, "local");
    assert.equal(c.port, 8787);
    assert.equal(c.dataDir, "./.kiln");
    assert.deepEqual(c.stages, ["base", "refine"]);
    assert.equal(c.visibilitySeconds, 60);
    assert.equal(c.publicUrl, "http://127.0.0.1:8787");
  });

  it("reads lists and numbers", () => {
    const c = loadConfig({ KILN_PROVIDERS: "tensorrt, cuda,cpu", PORT: "9000", KILN_STAGES: "refine" });
    assert.deepEqual(c.providers, ["tensorrt", "cuda", "cpu"]);
    assert.deepEqual(c.stages, ["refine"]);
    assert.equal(c.port, 9000);
  });

  it("names every bad variable in one error", () => {
    assert.throws(
      () => loadConfig({ PORT: "http", KILN_PROVIDERS: "gpu", KILN_BACKEND: "azure" }),
      (e: unknown) =>
        e instanceof KilnError &&
        e.code === "config_invalid" &&
        /PORT/.test(e.message) &&
        /KILN_PROVIDERS/.test(e.message) &&
        /KILN_BACKEND/.test(e.message),
    );
  });

  it("aws needs a bucket and a table", () => {
    assert.throws(() => loadConfig({ KILN_BACKEND: "aws" }), /KILN_BUCKET/);
  });
});
