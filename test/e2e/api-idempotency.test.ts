import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { createApiKey, sha256Hex } from "@kiln/shared";
import Database from "better-sqlite3";

import { api, type LocalStack, startLocalStack } from "../support/local-stack.js";

const body = { prompt: "idempotent lighthouse", width: 64, height: 64, steps: 2, seed: 3 };

/** `Idempotency-Key` on POST /v1/renders over HTTP, local family (no worker: jobs stay queued). */
describe("idempotent submits", () => {
  let stack: LocalStack;
  before(async () => {
    stack = await startLocalStack({ worker: false });
  });
  after(() => stack.stop());

  async function jobCount(client: LocalStack = stack): Promise<number> {
    return (await api(client, "GET", "/v1/renders?limit=100")).json.data.length;
  }

  it("replays the original job for the same key and body (200, Idempotent-Replayed), and refuses another body (422)", async () => {
    const before = await jobCount();
    const first = await api(stack, "POST", "/v1/renders", body, { "idempotency-key": "order-1" });
    assert.equal(first.status, 202, first.text);
    const replay = await api(
      stack,
      "POST",
      "/v1/renders",
      JSON.stringify({ seed: 3, steps: 2, height: 64, width: 64, prompt: body.prompt }),
      { "idempotency-key": "order-1" },
    );
    assert.equal(replay.status, 200);
    assert.equal(replay.headers.get("idempotent-replayed"), "true");
    assert.equal(replay.json.id, first.json.id);
    assert.equal(replay.headers.get("location"), first.headers.get("location"));
    assert.equal(first.headers.get("idempotent-replayed"), null);

    const other = await api(stack, "POST", "/v1/renders", { ...body, seed: 4 }, { "idempotency-key": "order-1" });
    assert.equal(other.status, 422);
    assert.equal(other.headers.get("content-type"), "application/problem+json");
    assert.equal(other.json.code, "idempotency_key_reused");
    assert.equal(await jobCount(), before + 1, "one job for three requests");
  });

  it("creates one job for 20 concurrent duplicates", async () => {
    const before = await jobCount();
    const responses = await Promise.all(
      Array.from({ length: 20 }, () => api(stack, "POST", "/v1/renders", body, { "idempotency-key": "burst-1" })),
    );
    assert.deepEqual(new Set(responses.map((r) => r.json.id)).size, 1, "every answer names the same job");
    assert.equal(responses.filter((r) => r.status === 202).length, 1);
    assert.equal(responses.filter((r) => r.status === 200).length, 19);
    assert.equal(await jobCount(), before + 1);
  });

  it("scopes keys to the API key, and stores no failed attempt", async () => {
    const { key } = await createApiKey(stack.ports.keys, {
      name: "second",
      scopes: ["render"],
      limits: { concurrentJobs: 1 },
    });
    const second = { ...stack, key };
    const mine = await api(second, "POST", "/v1/renders", body, { "idempotency-key": "order-1" });
    assert.equal(mine.status, 202, "another API key's order-1 is a new key");

    const invalid = await api(second, "POST", "/v1/renders", { ...body, steps: 0 }, { "idempotency-key": "retry-me" });
    assert.equal(invalid.status, 400);
    const limited = await api(second, "POST", "/v1/renders", body, { "idempotency-key": "retry-me" });
    assert.equal(limited.status, 429, "the concurrency limit (1) is full");
    assert.equal((await api(second, "DELETE", `/v1/renders/${mine.json.id}`)).status, 200);
    const accepted = await api(second, "POST", "/v1/renders", body, { "idempotency-key": "retry-me" });
    assert.equal(accepted.status, 202, "neither the 400 nor the 429 was remembered");
    assert.equal(
      (await api(second, "POST", "/v1/renders", body, { "idempotency-key": "retry-me" })).json.id,
      accepted.json.id,
    );
  });

  it("a replay answers with the job as it is now, not the stored body", async () => {
    const first = await api(stack, "POST", "/v1/renders", body, { "idempotency-key": "fresh-1" });
    assert.equal(first.status, 202);
    assert.equal((await api(stack, "DELETE", `/v1/renders/${first.json.id}`)).status, 200);
    const replay = await api(stack, "POST", "/v1/renders", body, { "idempotency-key": "fresh-1" });
    assert.equal(replay.status, 200);
    assert.equal(replay.headers.get("idempotent-replayed"), "true");
    assert.equal(replay.json.id, first.json.id);
    assert.equal(first.json.status, "queued");
    assert.equal(replay.json.status, "canceled", "the current state, not the 202's");
  });

  it("a retry after the first attempt died mid-submit (its claim lapsed) finds that job; stage 0 is sent once", async () => {
    const first = await api(stack, "POST", "/v1/renders", body, { "idempotency-key": "crash-1" });
    assert.equal(first.status, 202);
    // What a crash after storing the job leaves: the claim still pending until its lock lapses (here: lapsed), the
    // job stored and, on AWS, possibly no stage-0 message (the enqueued mark is dropped to show the re-send).
    const job = (await stack.ports.jobs.get(first.json.id))!;
    const db = new Database(path.join(stack.config.dataDir, "kiln.db"));
    db.prepare(
      `UPDATE idempotency SET record = json_set(record, '$.state', 'pending', '$.lockedUntil', 0, '$.response', NULL) WHERE id = ?`,
    ).run(await sha256Hex(`${job.ownerKeyId}\nPOST /v1/renders\ncrash-1`));
    db.close();
    await stack.ports.jobs.update(job.id, { version: job.version }, { enqueuedAt: undefined });
    const before = (await stack.ports.queue.depth("kiln-base")).visible;
    const retry = await api(stack, "POST", "/v1/renders", body, { "idempotency-key": "crash-1" });
    assert.equal(retry.status, 202, retry.text);
    assert.equal(retry.json.id, first.json.id, "the same job, not a second one");
    assert.equal(
      (await stack.ports.queue.depth("kiln-base")).visible,
      before + 1,
      "stage 0 re-sent for the unmarked job",
    );
    assert.ok((await stack.ports.jobs.get(first.json.id))?.enqueuedAt);
    const again = await api(stack, "POST", "/v1/renders", body, { "idempotency-key": "crash-1" });
    assert.equal(again.json.id, first.json.id);
    assert.equal((await stack.ports.queue.depth("kiln-base")).visible, before + 1, "not re-sent once marked");
  });

  it("rejects a malformed Idempotency-Key as problem+json naming the header", async () => {
    const res = await api(stack, "POST", "/v1/renders", body, { "idempotency-key": "x".repeat(300) });
    assert.equal(res.status, 400);
    assert.equal(res.json.errors[0].field, "header.idempotency-key");
  });
});
