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

  it("keeps two stages on a GPU worker's GPU by default, one on the CPU or unpipelined; an explicit value wins", () => {
    assert.equal(loadConfig({}).workerConcurrency, 1, "CPU provider");
    assert.equal(loadConfig({ KILN_PROVIDERS: "tensorrt,cuda,cpu" }).workerConcurrency, 2, "the image's providers");
    assert.equal(loadConfig({ KILN_PROVIDERS: "cuda,cpu" }).workerConcurrency, 2, "the fleet's providers");
    assert.equal(loadConfig({ KILN_PROVIDERS: "cuda", KILN_WORKER_PIPELINE: "false" }).workerConcurrency, 1);
    assert.equal(loadConfig({ KILN_PROVIDERS: "cuda", KILN_WORKER_CONCURRENCY: "1" }).workerConcurrency, 1);
    assert.equal(loadConfig({ KILN_WORKER_CONCURRENCY: "3" }).workerConcurrency, 3);
    assert.throws(() => loadConfig({ KILN_WORKER_CONCURRENCY: "0" }), /KILN_WORKER_CONCURRENCY/);
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

  it("reads the chat, batch and image-input sections", () => {
    const c = loadConfig({
      KILN_CHAT_KEY_ID: "key_chat",
      KILN_CHAT_BLOCKED_WORDS: "Foo, bar",
      KILN_SLACK_API_URL: "http://127.0.0.1:9/api",
      KILN_BATCH_WINDOW: "7",
      KILN_MAX_IMAGE_BYTES: "2048",
      KILN_TEST_HOOKS: "/tmp/hooks",
    });
    assert.equal(c.chat.keyId, "key_chat");
    assert.deepEqual(c.chat.blockedWords, ["foo", "bar"]);
    assert.equal(c.chat.slack.apiUrl, "http://127.0.0.1:9/api/");
    assert.equal(c.batches.window, 7);
    assert.equal(c.imageInputs.maxBytes, 2048);
    assert.equal(c.testHooksDir, "/tmp/hooks");
    assert.equal(c.builtinModels, "reference");
    assert.throws(() => loadConfig({ KILN_BATCH_TICK_SECONDS: "7" }), /KILN_BATCH_TICK_SECONDS/);
  });

  it("takes EventBridge batch schedules as three settings together", () => {
    assert.equal(loadConfig({}).batches.eventBridge, undefined);
    const c = loadConfig({
      KILN_BATCH_SCHEDULE_GROUP: "kiln-batch",
      KILN_BATCH_SCHEDULER_ROLE_ARN: "arn:aws:iam::1:role/r",
      KILN_BATCH_TRIGGER_ARN: "arn:aws:lambda:us-east-1:1:function:t",
      KILN_AWS_ENDPOINT: "http://127.0.0.1:4566",
    });
    assert.deepEqual(c.batches.eventBridge, {
      group: "kiln-batch",
      roleArn: "arn:aws:iam::1:role/r",
      triggerArn: "arn:aws:lambda:us-east-1:1:function:t",
      endpoint: "http://127.0.0.1:4566",
    });
    // EventBridge fires each manifest, so the API process does not run its own trigger as well.
    assert.equal(c.batches.scheduler, false);
    assert.equal(loadConfig({}).batches.scheduler, true);
    assert.throws(
      () => loadConfig({ KILN_BATCH_SCHEDULE_GROUP: "kiln-batch" }),
      /set KILN_BATCH_SCHEDULER_ROLE_ARN, KILN_BATCH_TRIGGER_ARN too/,
    );
  });
});
