import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { loadConfig } from "../src/config.js";
import { isKilnError } from "../src/errors.js";

describe("config: key limits and webhook policy", () => {
  it("defaults to no limits and no private webhook targets", () => {
    const config = loadConfig({});
    assert.deepEqual(config.keyLimits, { requestsPerSecond: 0, burst: 1, concurrentJobs: 0, imagesPerDay: 0 });
    assert.deepEqual(config.webhooks, {
      allowPrivate: false,
      allowedHosts: [],
      retryHours: 24,
      backoffSeconds: 5,
      timeoutSeconds: 10,
    });
  });

  it("reads limits (burst twice the rate unless set) and the webhook allowlist", () => {
    const config = loadConfig({
      KILN_RATE_LIMIT_RPS: "2.5",
      KILN_CONCURRENT_JOBS: "3",
      KILN_IMAGES_PER_DAY: "1000",
      KILN_WEBHOOK_ALLOW_PRIVATE: "false",
      KILN_WEBHOOK_ALLOWED_HOSTS: " Hooks.Internal, 10.0.0.0/8 ,",
    });
    assert.deepEqual(config.keyLimits, { requestsPerSecond: 2.5, burst: 5, concurrentJobs: 3, imagesPerDay: 1000 });
    assert.deepEqual(config.webhooks.allowedHosts, ["hooks.internal", "10.0.0.0/8"]);
    assert.equal(loadConfig({ KILN_RATE_LIMIT_RPS: "2", KILN_RATE_LIMIT_BURST: "1" }).keyLimits.burst, 1);
  });

  it("names each bad variable", () => {
    assert.throws(
      () => loadConfig({ KILN_RATE_LIMIT_RPS: "-1", KILN_RATE_LIMIT_BURST: "0", KILN_WEBHOOK_ALLOW_PRIVATE: "maybe" }),
      (e: unknown) =>
        isKilnError(e) &&
        /KILN_RATE_LIMIT_RPS/.test(e.message) &&
        /KILN_RATE_LIMIT_BURST/.test(e.message) &&
        /KILN_WEBHOOK_ALLOW_PRIVATE/.test(e.message),
    );
  });
});
