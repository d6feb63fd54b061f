import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { createApiKey, type KeyLimits } from "@kiln/shared";

import { api, type LocalStack, startLocalStack } from "../support/local-stack.js";

const RATE_LIMIT = /^"kiln-rps";r=(\d+);t=(\d+)$/;
const render = (n = 1, extra: Record<string, unknown> = {}) => ({
  prompt: "quota",
  width: 64,
  height: 64,
  steps: 2,
  n,
  ...extra,
});

/**
 * Rate limits and quotas per key on the local family, over HTTP. No worker runs, so submitted
 * jobs stay queued and count against the concurrency limit until canceled.
 */
describe("rate limits and quotas", () => {
  let stack: LocalStack;
  before(async () => {
    stack = await startLocalStack({ worker: false });
  });
  after(() => stack.stop());

  async function keyWith(limits: KeyLimits): Promise<LocalStack> {
    const { key } = await createApiKey(stack.ports.keys, { name: "limited", scopes: ["render"], limits });
    return { ...stack, key };
  }

  it("answers 429 with Retry-After and RateLimit fields past the burst, and lets requests through again after the refill", async () => {
    const client = await keyWith({ requestsPerSecond: 1, burst: 3 });
    const remaining: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await api(client, "GET", "/v1/renders");
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("ratelimit-policy"), '"kiln-rps";q=3;w=3');
      const match = RATE_LIMIT.exec(res.headers.get("ratelimit") ?? "");
      assert.ok(match, `RateLimit field: ${res.headers.get("ratelimit")}`);
      remaining.push(Number(match[1]));
    }
    assert.deepEqual(remaining, [2, 1, 0]);

    const limited = await api(client, "GET", "/v1/renders");
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get("content-type"), "application/problem+json");
    assert.equal(limited.json.code, "rate_limited");
    assert.deepEqual(limited.json["violated-policies"], ["kiln-rps"]);
    const retryAfter = Number(limited.headers.get("retry-after"));
    assert.ok(retryAfter >= 1 && retryAfter <= 2, `Retry-After ${retryAfter}`);
    assert.equal(limited.headers.get("ratelimit-policy"), '"kiln-rps";q=3;w=3');
    assert.match(limited.headers.get("ratelimit") ?? "", /^"kiln-rps";r=0;t=[12]$/);
    assert.equal((await api(client, "POST", "/v1/renders", render())).status, 429, "submits share the bucket");

    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const again = await api(client, "GET", "/v1/renders");
    assert.equal(again.status, 200, "one token back after a second");
    assert.equal(RATE_LIMIT.exec(again.headers.get("ratelimit") ?? "")?.[1], "0");
    assert.equal((await api(client, "GET", "/v1/renders")).status, 429, "and only one");

    const other = await keyWith({ requestsPerSecond: 1, burst: 3 });
    assert.equal((await api(other, "GET", "/v1/renders")).status, 200, "buckets are per key");
    assert.equal(
      (await api(stack, "GET", "/v1/renders")).headers.get("ratelimit"),
      null,
      "unlimited keys carry no RateLimit fields",
    );
  });

  it("caps queued-plus-running jobs per key, and frees the slot when a job ends", async () => {
    const client = await keyWith({ concurrentJobs: 2 });
    const a = await api(client, "POST", "/v1/renders", render());
    const b = await api(client, "POST", "/v1/renders", render());
    assert.deepEqual([a.status, b.status], [202, 202]);
    const over = await api(client, "POST", "/v1/renders", render());
    assert.equal(over.status, 429);
    assert.equal(over.json.code, "concurrent_jobs_exceeded");
    assert.deepEqual(over.json["violated-policies"], ["kiln-concurrent-jobs"]);
    assert.ok(Number(over.headers.get("retry-after")) >= 1);
    assert.equal(over.headers.get("ratelimit-policy"), '"kiln-concurrent-jobs";q=2');
    assert.equal(over.headers.get("ratelimit"), '"kiln-concurrent-jobs";r=0');

    assert.equal((await api(client, "DELETE", `/v1/renders/${a.json.id}`)).status, 200);
    assert.equal((await api(client, "POST", "/v1/renders", render())).status, 202, "a canceled job frees its slot");
  });

  it("holds the concurrency limit under 12 simultaneous submits", async () => {
    const client = await keyWith({ concurrentJobs: 3 });
    const results = await Promise.all(Array.from({ length: 12 }, () => api(client, "POST", "/v1/renders", render())));
    const statuses = results.map((r) => r.status).sort();
    assert.equal(statuses.filter((s) => s === 202).length, 3, `statuses ${statuses.join(",")}`);
    assert.equal(statuses.filter((s) => s === 429).length, 9);
    const owner = (await api(client, "GET", "/v1/renders?limit=100")).json.data;
    assert.equal(owner.length, 3, "exactly three jobs exist");
  });

  it("counts images per UTC day, refuses what does not fit, and counts only accepted renders", async () => {
    const client = await keyWith({ imagesPerDay: 5 });
    assert.equal((await api(client, "POST", "/v1/renders", render(2))).status, 202);
    assert.equal(
      (await api(client, "POST", "/v1/renders", render(2, { steps: 0 }))).status,
      400,
      "an invalid render counts nothing",
    );
    assert.equal((await api(client, "POST", "/v1/renders", render(2))).status, 202);
    const over = await api(client, "POST", "/v1/renders", render(2));
    assert.equal(over.status, 429);
    assert.equal(over.json.code, "images_per_day_exceeded");
    assert.match(over.json.detail, /used 4 of its 5 images/);
    const now = new Date();
    const toMidnight = (Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1) - now.getTime()) / 1000;
    const retryAfter = Number(over.headers.get("retry-after"));
    assert.ok(Math.abs(retryAfter - toMidnight) < 5, `Retry-After ${retryAfter} ≈ ${toMidnight} s to UTC midnight`);
    assert.equal(over.headers.get("ratelimit-policy"), '"kiln-images-per-day";q=5;w=86400');
    assert.match(over.headers.get("ratelimit") ?? "", /^"kiln-images-per-day";r=1;t=\d+$/);
    assert.equal((await api(client, "POST", "/v1/renders", render(1))).status, 202, "the refused render took nothing");
    assert.equal((await api(client, "POST", "/v1/renders", render(1))).status, 429);
    assert.equal((await api(client, "GET", "/v1/renders?limit=100")).json.data.length, 3);

    const tiny = await keyWith({ imagesPerDay: 2 });
    const never = await api(tiny, "POST", "/v1/renders", render(3));
    assert.equal(never.status, 429);
    assert.match(never.json.detail, /at most 2 images a day, fewer than the 3/);
  });

  it("holds the daily quota under 10 simultaneous submits", async () => {
    const client = await keyWith({ imagesPerDay: 4 });
    const results = await Promise.all(Array.from({ length: 10 }, () => api(client, "POST", "/v1/renders", render(1))));
    assert.equal(results.filter((r) => r.status === 202).length, 4);
    assert.equal(results.filter((r) => r.status === 429).length, 6);
  });
});

describe("rate limit defaults from the configuration", () => {
  let stack: LocalStack;
  before(async () => {
    stack = await startLocalStack({ worker: false, env: { KILN_RATE_LIMIT_RPS: "0.5", KILN_CONCURRENT_JOBS: "1" } });
  });
  after(() => stack.stop());

  it("applies KILN_RATE_LIMIT_RPS (burst twice the rate, at least 1) and KILN_CONCURRENT_JOBS to keys without their own", async () => {
    const first = await api(stack, "POST", "/v1/renders", render());
    assert.equal(first.status, 202, first.text);
    assert.equal(first.headers.get("ratelimit-policy"), '"kiln-rps";q=1;w=2');
    const second = await api(stack, "GET", "/v1/renders");
    assert.equal(second.status, 429);
    assert.equal(second.headers.get("retry-after"), "2");

    const { key } = await createApiKey(stack.ports.keys, {
      name: "own",
      scopes: ["render"],
      limits: { requestsPerSecond: 0, concurrentJobs: 0 },
    });
    const own = { ...stack, key };
    for (let i = 0; i < 3; i++)
      assert.equal((await api(own, "POST", "/v1/renders", render())).status, 202, "a key's own 0 means no limit");
  });
});
