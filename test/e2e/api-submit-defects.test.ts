import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { createApiKey, type KeyLimits } from "@kiln/shared";

import { api, type LocalStack, startLocalStack } from "../support/local-stack.js";

const render = (n = 1, extra: Record<string, unknown> = {}) => ({
  prompt: "defects",
  width: 64,
  height: 64,
  steps: 2,
  n,
  ...extra,
});

/** Defects found by probing the submit path (issue 8), over HTTP on the local family; no worker runs. */
describe("submit path: defects found by probing", () => {
  let stack: LocalStack;
  let oldUmask: number;
  before(async () => {
    // Files must come out private even under a permissive umask.
    oldUmask = process.umask(0o000);
    stack = await startLocalStack({ worker: false });
  });
  after(async () => {
    await stack.stop();
    process.umask(oldUmask);
  });

  async function keyWith(limits: KeyLimits) {
    const { key, record } = await createApiKey(stack.ports.keys, { name: "limited", scopes: ["render"], limits });
    return { client: { ...stack, key }, keyId: record.id };
  }

  it("a malformed percent-escape in /v1/files is a 400 problem naming the path, not a 500", async () => {
    for (const bad of ["%zz", "%", "%c0%ae", "%e0", "jobs/%zz/x.png"]) {
      const res = await fetch(`${stack.url}/v1/files/${bad}?expires=1&sig=00`);
      assert.equal(res.status, 400, bad);
      assert.equal(res.headers.get("content-type"), "application/problem+json", bad);
      const body = (await res.json()) as { errors: { field: string }[] };
      assert.equal(body.errors[0]!.field, "path");
    }
  });

  it("sdedit whose strength × steps leaves no step is refused at submit, naming strength and steps", async () => {
    const res = await api(stack, "POST", "/v1/renders", render(1, { mode: "sdedit", strength: 0.04, steps: 20 }));
    assert.equal(res.status, 400, res.text);
    const fields = (res.json.errors as { field: string; message: string }[]).map((e) => e.field).sort();
    assert.deepEqual(fields, ["steps", "strength"]);
    assert.match(res.json.errors[0].message, /strength × steps must be at least 1/);
    assert.equal(
      (await api(stack, "POST", "/v1/renders", render(1, { mode: "sdedit", strength: 0.05, steps: 20 }))).status,
      202,
      "one step is enough",
    );
  });

  it("the database and blobs are private (0600, folders 0700) under umask 000", async () => {
    const job = await api(stack, "POST", "/v1/renders", render());
    assert.equal(job.status, 202);
    await stack.ports.blobs.put(`jobs/${job.json.id}/images/0.png`, new Uint8Array([1, 2, 3]));
    const dir = stack.config.dataDir;
    for (const name of ["kiln.db", "kiln.db-wal", "kiln.db-shm"]) {
      const file = path.join(dir, name);
      if (fs.existsSync(file)) assert.equal(fs.statSync(file).mode & 0o777, 0o600, name);
    }
    const walk = (d: string): string[] =>
      fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => {
        const p = path.join(d, e.name);
        return e.isDirectory() ? [p, ...walk(p)] : [p];
      });
    const blobs = walk(path.join(dir, "blobs"));
    assert.ok(blobs.some((p) => p.endsWith("0.png")));
    for (const p of blobs) assert.equal(fs.statSync(p).mode & 0o777, fs.statSync(p).isDirectory() ? 0o700 : 0o600, p);
  });

  it("a limit that resets in hours says x-should-retry: false; one that resets in seconds does not", async () => {
    const { client } = await keyWith({ imagesPerDay: 1, concurrentJobs: 5 });
    assert.equal((await api(client, "POST", "/v1/renders", render())).status, 202);
    const daily = await api(client, "POST", "/v1/renders", render());
    assert.equal(daily.status, 429);
    assert.equal(daily.headers.get("x-should-retry"), "false");
    const { client: busy } = await keyWith({ concurrentJobs: 1 });
    assert.equal((await api(busy, "POST", "/v1/renders", render())).status, 202);
    const slot = await api(busy, "POST", "/v1/renders", render());
    assert.equal(slot.status, 429);
    assert.equal(slot.headers.get("x-should-retry"), null, "a slot frees soon: SDKs may retry");
  });

  it("when two limits apply, each keeps its own RateLimit fields", async () => {
    const { client } = await keyWith({ imagesPerDay: 1, requestsPerSecond: 100, burst: 100 });
    assert.equal((await api(client, "POST", "/v1/renders", render())).status, 202);
    const over = await api(client, "POST", "/v1/renders", render());
    assert.equal(over.status, 429);
    assert.equal(over.json.code, "images_per_day_exceeded");
    const policy = over.headers.get("ratelimit-policy") ?? "";
    const field = over.headers.get("ratelimit") ?? "";
    assert.match(policy, /"kiln-images-per-day";q=1;w=86400/);
    assert.match(policy, /"kiln-rps";q=100/);
    assert.match(field, /"kiln-images-per-day";r=0;t=\d+/);
    assert.match(field, /"kiln-rps";r=\d+/);
  });

  it("a submit that crashed holding a slot costs the key a few seconds at most, not minutes", async () => {
    const { client, keyId } = await keyWith({ concurrentJobs: 1 });
    const lease = Math.floor(Date.now() / 1000 / 3);
    // What a submit that died between claiming its place and giving it back leaves behind.
    await stack.ports.keys.incrementCounter(`submitting:${keyId}:${lease}`, 1, (lease + 3) * 3);
    const now = await api(client, "POST", "/v1/renders", render());
    assert.equal(now.status, 429, "counted while its lease is current or just past");
    // The same leftover from two leases ago (≥ 3 s) no longer counts.
    const { client: later, keyId: laterId } = await keyWith({ concurrentJobs: 1 });
    await stack.ports.keys.incrementCounter(`submitting:${laterId}:${lease - 2}`, 1, (lease + 1) * 3);
    assert.equal((await api(later, "POST", "/v1/renders", render())).status, 202, "healed");
  });
});
