import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { KilnError, loadConfig, loadDeployConfig } from "@kiln/shared";

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

describe("config: every KILN_* variable in one place", () => {
  it("reads the command's and the benchmarks' settings", () => {
    const c = loadConfig({ KILN_START_DEMO: "false", KILN_API_KEY: "kiln_x", KILN_BENCH_HANDOFFS: "50" });
    assert.deepEqual(c.cli, { startDemo: false, apiKey: "kiln_x" });
    assert.deepEqual(c.bench, { handoffs: 50, apiSeconds: 10 });
    assert.equal(loadConfig({}).cli.startDemo, true);
    assert.throws(() => loadConfig({ KILN_START_DEMO: "maybe" }), /KILN_START_DEMO/);
  });

  it("keeps KILN_PUBLIC_URL apart from the derived public URL", () => {
    assert.equal(loadConfig({}).explicitPublicUrl, undefined);
    const c = loadConfig({ KILN_PUBLIC_URL: "https://kiln.example/" });
    assert.equal(c.explicitPublicUrl, "https://kiln.example");
    assert.equal(c.publicUrl, "https://kiln.example");
  });

  it("reports a bound crossed between two variables in its own words", () => {
    assert.throws(
      () => loadConfig({ KILN_MIN_SIDE: "1024", KILN_MAX_SIDE: "512" }),
      (e: unknown) =>
        e instanceof KilnError && e.message === "KILN_MIN_SIDE (1024) must not exceed KILN_MAX_SIDE (512).",
    );
  });

  it("reads the deploy-time settings infra/ uses", () => {
    const d = loadDeployConfig({ KILN_GPU_MIN_WORKERS: "1", KILN_MODELS_S3_URI: "s3://models/sdxl" });
    assert.equal(d.retentionDays, 7);
    assert.deepEqual(d.gpu, {
      instanceType: "g5.xlarge",
      maxInstances: 4,
      minWorkers: 1,
      backlogPerWorker: 4,
      modelsS3Uri: "s3://models/sdxl",
    });
    assert.throws(() => loadDeployConfig({ KILN_MODELS_S3_URI: "models" }), /KILN_MODELS_S3_URI/);
  });
});
