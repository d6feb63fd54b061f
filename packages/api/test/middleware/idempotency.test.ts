import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";

import type { KeyRecord, Ports } from "@kiln/shared";
import { openTempLocalPorts, type TempLocalPorts } from "@kiln/shared/testing";
import { Hono } from "hono";

import type { ApiDeps, ApiEnv } from "../../src/deps.js";
import { canonicalJson, idempotency } from "../../src/middleware/idempotency.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const keyRecord = (id: string): KeyRecord => ({
  id,
  prefix: id,
  name: id,
  scopes: ["render"],
  hash: "h",
  createdAt: "2030-01-01T00:00:00.000Z",
});

describe("Idempotency-Key middleware", () => {
  let local: TempLocalPorts;
  let ports: Ports;
  let clock: number | undefined;
  let runs: number;
  /** What the route answers next (status), and how long it takes (or until `hold` resolves). */
  let answer: { status: number; delayMs: number; hold?: Promise<void> };
  /** Resolved each time the route starts running. */
  let routeStarted: () => void = () => undefined;

  beforeEach(() => {
    local = openTempLocalPorts({ prefix: "kiln-idem-", publicBaseUrl: "http://127.0.0.1" });
    ports = local.ports;
    clock = undefined;
    runs = 0;
    answer = { status: 202, delayMs: 0 };
  });
  afterEach(() => local.close());

  function app(options: { duplicateWaitMs?: number } = {}) {
    const deps = { ports, now: () => (clock === undefined ? new Date() : new Date(clock)) } as unknown as ApiDeps;
    const hono = new Hono<ApiEnv>();
    hono.use("*", async (c, next) => {
      c.set("key", keyRecord(c.req.header("x-key") ?? "key_a"));
      await next();
    });
    hono.use("/r", idempotency(deps, options));
    hono.post("/r", async (c) => {
      const n = ++runs;
      routeStarted();
      const body = await c.req.json();
      await sleep(answer.delayMs);
      await answer.hold;
      return c.json({ id: `job_${n}`, echo: body }, answer.status as 202, { Location: `http://x/r/job_${n}` });
    });
    return (body: unknown, headers: Record<string, string> = {}) =>
      hono.request("/r", {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: typeof body === "string" ? body : JSON.stringify(body),
      });
  }

  it("hashes bodies canonically: key order and spacing do not matter, values do", () => {
    assert.equal(canonicalJson({ b: [1, { d: 2, c: 3 }], a: "x" }), '{"a":"x","b":[1,{"c":3,"d":2}]}');
    assert.equal(canonicalJson(JSON.parse('{ "a" : 1.0 }')), canonicalJson({ a: 1 }));
    assert.notEqual(canonicalJson({ a: 1 }), canonicalJson({ a: "1" }));
  });

  it("runs the route once for 20 concurrent duplicates; the others wait and replay its answer", async () => {
    answer = { status: 202, delayMs: 150 };
    const post = app();
    const responses = await Promise.all(
      Array.from({ length: 20 }, () => post({ prompt: "same" }, { "idempotency-key": "k-1" })),
    );
    assert.equal(runs, 1, "one job");
    const statuses = responses.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, ...Array(18).fill(200), 202].sort());
    const bodies = await Promise.all(responses.map((r) => r.json() as Promise<{ id: string }>));
    assert.deepEqual(new Set(bodies.map((b) => b.id)), new Set(["job_1"]));
    for (const r of responses.filter((r) => r.status === 200)) {
      assert.equal(r.headers.get("idempotent-replayed"), "true");
      assert.equal(r.headers.get("location"), "http://x/r/job_1");
    }
  });

  it("answers 422 for the same key with another body, and keeps keys apart per API key", async () => {
    const post = app();
    assert.equal((await post({ prompt: "a" }, { "idempotency-key": "k-2" })).status, 202);
    const reused = await post({ prompt: "b" }, { "idempotency-key": "k-2" });
    assert.equal(reused.status, 422);
    assert.equal(((await reused.json()) as { code: string }).code, "idempotency_key_reused");
    assert.equal(
      (await post('{"prompt":  "a"}', { "idempotency-key": '"k-2"' })).status,
      200,
      "the structured-field form names the same key",
    );
    assert.equal(
      (await post({ prompt: "a" }, { "idempotency-key": "k-2", "x-key": "key_b" })).status,
      202,
      "another API key's k-2 is another key",
    );
    assert.equal(runs, 2);
  });

  it("does not store failures: the client may retry with the same key", async () => {
    const post = app();
    answer = { status: 429, delayMs: 0 };
    assert.equal((await post({ prompt: "a" }, { "idempotency-key": "k-3" })).status, 429);
    answer = { status: 202, delayMs: 0 };
    assert.equal((await post({ prompt: "a" }, { "idempotency-key": "k-3" })).status, 202);
    assert.equal((await post({ prompt: "a" }, { "idempotency-key": "k-3" })).status, 200);
    assert.equal(runs, 2);
  });

  it("forgets a key after 24 hours", async () => {
    const t0 = Math.floor(Date.now() / 1000) * 1000;
    const post = app();
    clock = t0;
    assert.equal((await post({ prompt: "a" }, { "idempotency-key": "k-4" })).status, 202);
    clock = t0 + 24 * 3_600_000 - 1_000;
    assert.equal(
      (await post({ prompt: "a" }, { "idempotency-key": "k-4" })).status,
      200,
      "still remembered just before 24 h",
    );
    clock = t0 + 24 * 3_600_000;
    const fresh = await post({ prompt: "b" }, { "idempotency-key": "k-4" });
    assert.equal(fresh.status, 202, "after 24 h the key is free, even for another body");
    assert.equal(runs, 2);
  });

  it("answers 409 with Retry-After when the first request outlasts a duplicate's wait", async () => {
    // The first request holds inside the route until the duplicate has had its answer: no race with the clock.
    let release!: () => void;
    answer = { status: 202, delayMs: 0, hold: new Promise<void>((resolve) => (release = resolve)) };
    const started = new Promise<void>((resolve) => (routeStarted = resolve));
    const post = app({ duplicateWaitMs: 100 });
    const first = post({ prompt: "slow" }, { "idempotency-key": "k-5" });
    await started;
    const dup = await post({ prompt: "slow" }, { "idempotency-key": "k-5" });
    release();
    assert.equal(dup.status, 409);
    assert.equal(dup.headers.get("retry-after"), "1");
    assert.equal((await first).status, 202);
    assert.equal((await post({ prompt: "slow" }, { "idempotency-key": "k-5" })).status, 200);
    assert.equal(runs, 1);
  });

  it("refuses a malformed key and leaves requests without one alone", async () => {
    const post = app();
    for (const bad of ["", "has space", "x".repeat(256), "é"]) {
      const res = await post({ prompt: "a" }, { "idempotency-key": bad });
      assert.equal(res.status, 400, JSON.stringify(bad));
    }
    assert.equal((await post({ prompt: "a" })).status, 202);
    assert.equal((await post({ prompt: "a" })).status, 202);
    assert.equal(runs, 2);
  });
});
