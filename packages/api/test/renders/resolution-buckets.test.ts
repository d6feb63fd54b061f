/**
 * Resolution buckets through the HTTP API: strict refusal as problem+json listing the buckets, and
 * the mapping recorded on the job (bucket, size asked for) when not strict.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";

import { SDXL_BUCKETS } from "@kiln/shared";

import { type AppFixture, openAppFixture } from "../app-fixture.js";

const limits = { minSide: 64, maxSide: 2048, maxPixels: 2048 * 2048, maxPromptChars: 4000 };

describe("resolution buckets in POST /v1/renders", () => {
  const fixtures: AppFixture[] = [];
  after(async () => {
    for (const f of fixtures) await f.close();
  });
  const open = (strict: boolean) => {
    const f = openAppFixture({ limits: { ...limits, buckets: { buckets: SDXL_BUCKETS, strict } } });
    fixtures.push(f);
    return f;
  };
  const post = async (f: AppFixture, body: Record<string, unknown>) => {
    const res = await f.app.request("/v1/renders", {
      method: "POST",
      headers: await f.keyHeaders(),
      body: JSON.stringify({ prompt: "a lighthouse", steps: 2, ...body }),
    });
    return { res, json: (await res.json()) as Record<string, unknown> };
  };

  it("KILN_STRICT_BUCKETS: a size that is not a bucket is a 400 problem listing the buckets", async () => {
    const f = open(true);
    const { res, json } = await post(f, { width: 1024, height: 768 });
    assert.equal(res.status, 400);
    assert.equal(res.headers.get("content-type"), "application/problem+json");
    assert.equal(json.code, "size_not_a_bucket");
    assert.match(String(json.detail), /1024×768 is not one of this server's resolution buckets \(1024x1024, 1152x896/);
    assert.deepEqual(
      (json.errors as { field: string }[]).map((e) => e.field),
      ["width"],
    );
    assert.equal((json.buckets as unknown[]).length, 9);
    assert.deepEqual((json.buckets as unknown[])[1], { width: 1152, height: 896, id: "1152x896" });
    // Nothing was stored or queued.
    assert.equal((await f.ports.queue.depth("kiln-base")).visible, 0);

    const ok = await post(f, { width: 1344, height: 768 });
    assert.equal(ok.res.status, 202);
    const job = await f.ports.jobs.get(String(ok.json.id));
    assert.equal(job?.plan.bucket, "1344x768");
  });

  it("not strict: an SDXL-scale size snaps to its bucket and the job records both; small sizes are kept", async () => {
    const f = open(false);
    const snapped = await post(f, { width: 1024, height: 768 });
    assert.equal(snapped.res.status, 202);
    assert.deepEqual([snapped.json.width, snapped.json.height], [1152, 896]);
    const job = await f.ports.jobs.get(String(snapped.json.id));
    assert.equal(job?.plan.bucket, "1152x896");
    assert.deepEqual(job?.plan.requestedSize, [1024, 768]);
    // SDXL's size conditioning follows the size rendered.
    assert.deepEqual(job?.plan.targetSize, [896, 1152]);
    assert.equal(job?.plan.route, undefined, "shared routing: no bucket queue");

    const small = await post(f, { width: 128, height: 64 });
    assert.equal(small.res.status, 202);
    assert.deepEqual([small.json.width, small.json.height], [128, 64]);
    const smallJob = await f.ports.jobs.get(String(small.json.id));
    assert.equal(smallJob?.plan.bucket, undefined);
  });

  it("not strict: a size is not snapped when the bucket's output would exceed the server's limits", async () => {
    const f = openAppFixture({
      limits: { ...limits, maxPixels: 1_600_000, buckets: { buckets: SDXL_BUCKETS, strict: false } },
    });
    fixtures.push(f);
    // 960×720 upscaled 1.5× is 1440×1080 (within 1.6 MP); its bucket 1152×896 upscaled would be 1728×1344.
    const { res, json } = await post(f, { mode: "sdedit", width: 960, height: 720, hires_scale: 1.5, steps: 10 });
    assert.equal(res.status, 202, JSON.stringify(json));
    const job = await f.ports.jobs.get(String(json.id));
    assert.deepEqual([job?.plan.width, job?.plan.height, job?.plan.bucket], [960, 720, undefined]);
  });
});
