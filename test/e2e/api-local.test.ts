import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { createApiKey } from "@kiln/shared";
import sharp from "sharp";

import { api, download, type LocalStack, startLocalStack, waitForJob } from "../support/local-stack.js";
import { PauseControl, type Paused } from "../support/pause-control.js";

/** The public API over real HTTP on the local family: happy paths, errors and limits of every endpoint. */

async function call(
  stack: LocalStack,
  key: string,
  method: string,
  pathname: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  return api({ ...stack, key }, method, pathname, body, headers);
}

function assertProblem(res: { status: number; headers: Headers; json: any }, status: number, fields: string[] = []) {
  assert.equal(res.status, status, JSON.stringify(res.json));
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  assert.equal(res.json.status, status);
  assert.equal(typeof res.json.code, "string");
  assert.equal(typeof res.json.detail, "string");
  const named = (res.json.errors ?? []).map((e: { field: string }) => e.field);
  for (const f of fields) assert.ok(named.includes(f), `${f} named in ${JSON.stringify(res.json.errors)}`);
}

describe("API with a worker (local family)", () => {
  let stack: LocalStack;
  // Pause points (KILN_TEST_HOOKS): inert unless a test arms one; each test that arms one disarms it.
  const hooks = new PauseControl();
  before(async () => {
    stack = await startLocalStack({ env: { KILN_MAX_RETENTION_HOURS: "48", ...hooks.env } });
  });
  after(async () => {
    await stack.stop();
    hooks.remove();
  });

  it("POST with Prefer: wait answers 201 with the finished render and Preference-Applied", async () => {
    const res = await api(
      stack,
      "POST",
      "/v1/renders",
      { prompt: "a kiln", mode: "base", width: 64, height: 64, steps: 4, seed: 3, retention_hours: 2 },
      { prefer: "wait=30" },
    );
    assert.equal(res.status, 201, res.text);
    assert.equal(res.headers.get("preference-applied"), "wait=30");
    assert.match(res.headers.get("location") ?? "", new RegExp(`/v1/renders/${res.json.id}$`));
    assert.equal(res.json.status, "succeeded");
    assert.equal(res.json.images.length, 1);
    assert.equal((await sharp(await download(res.json.images[0].url)).metadata()).width, 64);
    assert.equal(res.json.stage_timings.length, 1);
    assert.ok(res.json.stage_timings[0].seconds > 0);
    // Retention counts from the end of the job.
    const retained = Date.parse(res.json.expires_at) - Date.parse(res.json.finished_at);
    assert.ok(retained >= 2 * 3600_000 && retained <= 2 * 3600_000 + 2000, `kept ${retained} ms after the end`);
    assert.equal(res.json.links.cancel, undefined);
  });

  it("GET of a finished render has per-stage timings and no queue fields", async () => {
    const created = await api(
      stack,
      "POST",
      "/v1/renders",
      { prompt: "two stages", width: 64, height: 64, steps: 6 },
      { prefer: "wait=30" },
    );
    assert.equal(created.status, 201);
    const job = (await api(stack, "GET", `/v1/renders/${created.json.id}`)).json;
    assert.deepEqual(
      job.stage_timings.map((t: { kind: string }) => t.kind),
      ["base", "refine"],
    );
    for (const t of job.stage_timings) assert.ok(Date.parse(t.finished_at) >= Date.parse(t.started_at));
    assert.equal(job.queue_position, undefined);
    assert.equal(job.waiting_reason, undefined);
  });

  it("DELETE stops a running render in its refine stage at the next step", async () => {
    // Held at step 2 of its 5 refine steps (a pause point, not a race with the render's speed) while it is canceled.
    const point = "stage1-step2";
    hooks.arm(point);
    let paused: Paused | undefined;
    try {
      const created = await api(stack, "POST", "/v1/renders", {
        prompt: "long refine",
        width: 64,
        height: 64,
        steps: 10,
        high_noise_frac: 0.5,
      });
      assert.equal(created.status, 202);
      paused = await hooks.paused(point);
      assert.equal(paused.info.jobId, created.json.id);
      const refining = (await api(stack, "GET", `/v1/renders/${created.json.id}`)).json;
      assert.equal(refining.status, "running");
      assert.deepEqual(refining.progress, { stage: 1, stages: 2, stage_kind: "refine", step: 2, steps: 5 });
      const canceled = await api(stack, "DELETE", `/v1/renders/${created.json.id}`);
      assert.equal(canceled.status, 202, canceled.text);
      assert.equal(canceled.json.cancel_requested, true);
      // Let go, the stage looks at its job before step 3 and stops there.
      paused.release();
      const end = await waitForJob(stack, created.json.id);
      assert.equal(end.status, "canceled");
      assert.equal(end.error.code, "canceled");
      assert.equal(end.images.length, 0);
      assert.deepEqual([end.progress.stage, end.progress.step, end.progress.steps], [1, 2, 5], "stopped before step 3");
      assertProblem(await api(stack, "DELETE", `/v1/renders/${created.json.id}`), 409);
    } finally {
      hooks.disarm(point);
      paused?.release();
    }
  });

  it("POST /v1/images/generations answers an OpenAI-SDK-shaped request with URLs or base64 images", async () => {
    // What the OpenAI JS SDK sends: bearer key, JSON, its own headers, the fields the user set.
    const headers = {
      authorization: `Bearer ${stack.key}`,
      "content-type": "application/json",
      accept: "application/json",
      "user-agent": "OpenAI/JS 4.67.0",
      "x-stainless-lang": "js",
      "x-stainless-retry-count": "0",
    };
    const post = (body: unknown) =>
      fetch(`${stack.url}/v1/images/generations`, { method: "POST", headers, body: JSON.stringify(body) });
    const res = await post({
      model: "dall-e-3",
      prompt: "a teapot",
      n: 2,
      size: "128x64",
      quality: "hd",
      style: "vivid",
      user: "u1",
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { created: number; data: { url: string }[] };
    assert.ok(Math.abs(body.created - Date.now() / 1000) < 120);
    assert.equal(body.data.length, 2);
    const meta = await sharp(await download(body.data[1]!.url)).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ["png", 128, 64]);
    assert.match(res.headers.get("x-kiln-render-id") ?? "", /^job_/);

    const b64 = await post({
      prompt: "a teapot",
      size: "64x64",
      response_format: "b64_json",
      output_format: "jpeg",
      output_compression: 80,
      model: null,
    });
    assert.equal(b64.status, 200);
    const [item] = ((await b64.json()) as { data: { b64_json: string; url?: string }[] }).data;
    assert.equal(item!.url, undefined);
    assert.equal((await sharp(Buffer.from(item!.b64_json, "base64")).metadata()).format, "jpeg");
  });

  it("OpenAI errors are problem+json carrying OpenAI's error member", async () => {
    const bad = await api(stack, "POST", "/v1/images/generations", { prompt: "x", size: "100x100" });
    assertProblem(bad, 400, ["size"]);
    assert.equal(bad.json.error.param, "size");
    assert.equal(bad.json.error.type, "invalid_request_error");
    assert.match(bad.json.error.message, /multiple of 8/);
    for (const body of [
      { prompt: "x", size: "1024" },
      { prompt: "x", n: 5 },
      { prompt: "x", stream: true },
      { prompt: "x", response_format: "png" },
      { prompt: "x", extra: 1 },
      {},
    ]) {
      const res = await api(stack, "POST", "/v1/images/generations", body);
      assertProblem(res, 400);
      assert.equal(typeof res.json.error.message, "string", JSON.stringify(body));
    }
    const unauth = await fetch(`${stack.url}/v1/images/generations`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    const problem = (await unauth.json()) as any;
    assert.equal(unauth.status, 401);
    assert.equal(problem.error.type, "authentication_error");
    const notJson = await fetch(`${stack.url}/v1/images/generations`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.key}`, "content-type": "text/plain" },
      body: "prompt",
    });
    assert.equal(notJson.status, 415);
    assert.equal(((await notJson.json()) as any).error.code, "unsupported_media_type");
  });
});

describe("API without a worker (local family): queue, list, cancel, deadlines, limits", () => {
  let stack: LocalStack;
  let otherKey: string;
  before(async () => {
    stack = await startLocalStack({
      worker: false,
      env: {
        KILN_MAX_PIXELS: String(1024 * 1024),
        KILN_MAX_RETENTION_HOURS: "48",
        KILN_MAX_BODY_BYTES: "8192",
        // POST /v1/renders takes pictures: its bound is 2 × 4/3 × KILN_MAX_IMAGE_BYTES + KILN_MAX_BODY_BYTES.
        KILN_MAX_IMAGE_BYTES: "1024",
      },
    });
    otherKey = (await createApiKey(stack.ports.keys, { name: "other", scopes: ["render"] })).key;
  });
  after(() => stack.stop());

  const small = { prompt: "queued", width: 64, height: 64, steps: 2 };

  it("POST with a Prefer wait that runs out answers 202 with the job as it is", async () => {
    const started = Date.now();
    const res = await api(stack, "POST", "/v1/renders", small, { prefer: "respond-async, wait=1" });
    assert.equal(res.status, 202);
    assert.ok(Date.now() - started >= 900, "it waited");
    assert.equal(res.headers.get("preference-applied"), "wait=1");
    assert.equal(res.json.status, "queued");
    const plain = await api(stack, "POST", "/v1/renders", small);
    assert.equal(plain.status, 202);
    assert.equal(plain.headers.get("preference-applied"), null);
    assertProblem(await api(stack, "POST", "/v1/renders", small, { prefer: "wait=61" }), 400, ["header.prefer"]);
  });

  it("GET shows the queue position and, without a worker registry, an unknown waiting reason", async () => {
    const a = (await api(stack, "POST", "/v1/renders", small)).json;
    const b = (await api(stack, "POST", "/v1/renders", small)).json;
    const ja = (await api(stack, "GET", `/v1/renders/${a.id}`)).json;
    const jb = (await api(stack, "GET", `/v1/renders/${b.id}`)).json;
    assert.equal(jb.queue_position, ja.queue_position + 1);
    const workers = stack.ports.workers;
    delete stack.ports.workers;
    try {
      const again = (await api(stack, "GET", `/v1/renders/${b.id}`)).json;
      assert.equal(again.waiting_reason.code, "unknown");
    } finally {
      if (workers) stack.ports.workers = workers;
    }
    assert.equal(jb.eta, null, "no finished renders to estimate from");
  });

  it("with the family's own worker registry and no worker running, a queued render says there is no capacity", async () => {
    assert.ok(stack.ports.workers, "the local family reports worker liveness");
    const job = (await api(stack, "POST", "/v1/renders", small)).json;
    const view = (await api(stack, "GET", `/v1/renders/${job.id}`)).json;
    assert.equal(view.waiting_reason.code, "no_workers");
    assert.equal(view.waiting_reason.stage_kind, "base");
  });

  it("GET tells no capacity from busy workers using the worker registry", async () => {
    const job = (await api(stack, "POST", "/v1/renders", small)).json;
    const workers = stack.ports.workers;
    const beats = [{ workerId: "gpu-1", stages: ["base" as const], lastPollAt: Date.now() - 120_000, busy: 0 }];
    stack.ports.workers = {
      heartbeat: async () => {},
      list: async (since: number) => beats.filter((b) => b.lastPollAt >= since),
    };
    try {
      let view = (await api(stack, "GET", `/v1/renders/${job.id}`)).json;
      assert.equal(view.waiting_reason.code, "workers_silent");
      assert.match(
        view.waiting_reason.message,
        /No worker for the base stage has polled in 1[12]\d s \(last seen: gpu-1\)/,
      );
      beats[0]!.lastPollAt = Date.now();
      view = (await api(stack, "GET", `/v1/renders/${job.id}`)).json;
      assert.equal(view.waiting_reason.code, view.queue_position > 0 ? "workers_busy" : "next_in_line");
    } finally {
      if (workers) stack.ports.workers = workers;
      else delete stack.ports.workers;
    }
  });

  it("lists the key's own renders newest first, a page at a time, filtered by status", async () => {
    const { key } = await createApiKey(stack.ports.keys, { name: "lister", scopes: ["render"] });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await call(stack, key, "POST", "/v1/renders", small)).json.id);
    await call(stack, key, "DELETE", `/v1/renders/${ids[1]}`);
    const seen: string[] = [];
    let next: string | undefined = "/v1/renders?limit=2";
    while (next) {
      const page = await call(stack, key, "GET", next);
      assert.equal(page.status, 200, page.text);
      assert.ok(page.json.data.length <= 2);
      seen.push(...page.json.data.map((j: { id: string }) => j.id));
      next = page.json.links.next?.slice(stack.url.length);
      if (next) assert.equal(new URL(page.json.links.next).searchParams.get("cursor"), page.json.next_cursor);
    }
    assert.deepEqual(seen, [...ids].reverse());
    const canceled = await call(stack, key, "GET", "/v1/renders?status=canceled");
    assert.deepEqual(
      canceled.json.data.map((j: { id: string }) => j.id),
      [ids[1]],
    );
    assert.equal(
      (await call(stack, otherKey, "GET", "/v1/renders?limit=100")).json.data.some((j: { id: string }) =>
        ids.includes(j.id),
      ),
      false,
    );
    assertProblem(await call(stack, key, "GET", "/v1/renders?limit=0"), 400, ["limit"]);
    assertProblem(await call(stack, key, "GET", "/v1/renders?limit=101"), 400, ["limit"]);
    assertProblem(await call(stack, key, "GET", "/v1/renders?status=done"), 400, ["status"]);
    assertProblem(await call(stack, key, "GET", "/v1/renders?cursor=bm9wZQ"), 400, ["cursor"]);
  });

  it("DELETE cancels a queued render at once; the worker never runs it", async () => {
    const job = (await api(stack, "POST", "/v1/renders", small)).json;
    assertProblem(await call(stack, otherKey, "DELETE", `/v1/renders/${job.id}`), 404);
    const res = await api(stack, "DELETE", `/v1/renders/${job.id}`);
    assert.equal(res.status, 200);
    assert.equal(res.json.status, "canceled");
    assert.ok(res.json.finished_at);
    assertProblem(await api(stack, "DELETE", `/v1/renders/${job.id}`), 409);
    assertProblem(await api(stack, "DELETE", "/v1/renders/job_missing"), 404);
  });

  it("a queued render past its deadline reads as expired at once, without a worker", async () => {
    const job = (await api(stack, "POST", "/v1/renders", { ...small, deadline_seconds: 1 })).json;
    assert.equal(Date.parse(job.deadline_at) - Date.parse(job.created_at), 1000);
    await new Promise((r) => setTimeout(r, 1100));
    const view = (await api(stack, "GET", `/v1/renders/${job.id}`)).json;
    assert.equal(view.status, "expired");
    assert.equal(view.error.code, "deadline_passed");
    assert.equal(view.started_at, undefined);
    assertProblem(await api(stack, "DELETE", `/v1/renders/${job.id}`), 409);
  });

  it("rejects every out-of-bounds field with problem+json naming it", async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ width: 100 }, "width"],
      [{ width: 2056 }, "width"],
      [{ width: 56 }, "width"],
      [{ width: 2048, height: 1024 }, "width"], // pixel budget (KILN_MAX_PIXELS = 1024²)
      [{ mode: "sdedit", width: 1024, height: 1024, hires_scale: 1.5 }, "width"], // the budget applies to the upscaled output
      [{ steps: 0 }, "steps"],
      [{ steps: 151 }, "steps"],
      [{ guidance_scale: -0.1 }, "guidance_scale"],
      [{ guidance_scale: 30.5 }, "guidance_scale"],
      [{ n: 0 }, "n"],
      [{ n: 5 }, "n"],
      [{ strength: 0 }, "strength"],
      [{ strength: 1.01 }, "strength"],
      [{ prompt: "" }, "prompt"],
      [{ prompt: "x".repeat(4001) }, "prompt"],
      [{ retention_hours: 0 }, "retention_hours"],
      [{ retention_hours: 49 }, "retention_hours"],
      [{ deadline_seconds: 0 }, "deadline_seconds"],
      [{ seed: -1 }, "seed"],
      [{ turbo: true }, "turbo"],
    ];
    for (const [patch, field] of cases) {
      assertProblem(await api(stack, "POST", "/v1/renders", { ...small, ...patch }), 400, [field]);
    }
    for (const ok of [{ strength: 1, mode: "sdedit" }, { width: 1024, height: 1024 }, { retention_hours: 48 }]) {
      assert.equal((await api(stack, "POST", "/v1/renders", { ...small, ...ok })).status, 202, JSON.stringify(ok));
    }
  });

  it("answers 413 past the body limit, 415 for non-JSON, 400 for broken JSON and 401/404 as problems", async () => {
    assertProblem(await api(stack, "POST", "/v1/renders", { ...small, prompt: "y".repeat(12_000) }), 413, ["body"]);
    const form = await fetch(`${stack.url}/v1/renders`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.key}`, "content-type": "application/x-www-form-urlencoded" },
      body: "prompt=x",
    });
    assert.equal(form.status, 415);
    assert.equal(form.headers.get("content-type"), "application/problem+json");
    assert.deepEqual(
      ((await form.json()) as any).errors.map((e: { field: string }) => e.field),
      ["header.content-type"],
    );
    assertProblem(await api(stack, "POST", "/v1/renders", "[1,"), 400);
    assertProblem(await api(stack, "POST", "/v1/renders", "[]"), 400);
    assertProblem(await call(stack, "kiln_nope", "GET", "/v1/renders"), 401);
    assertProblem(await api(stack, "GET", "/v1/nothing"), 404);
    assertProblem(await api(stack, "GET", `/v1/renders/${"x".repeat(65)}`), 400, ["id"]);
  });

  it("serves an OpenAPI 3.1 document covering every route with its problem responses, and a self-contained /docs page", async () => {
    const spec = (await api(stack, "GET", "/openapi.json")).json;
    assert.equal(spec.openapi, "3.1.0");
    const ops = Object.entries(spec.paths as Record<string, Record<string, any>>).flatMap(([p, item]) =>
      Object.entries(item).map(([m, op]) => [`${m.toUpperCase()} ${p}`, op] as [string, any]),
    );
    const names = ops.map(([n]) => n);
    for (const route of [
      "POST /v1/renders",
      "GET /v1/renders",
      "GET /v1/renders/{id}",
      "DELETE /v1/renders/{id}",
      "GET /v1/renders/{id}/events",
      "POST /v1/images/generations",
      "GET /healthz",
      "GET /docs",
      "GET /v1/files/{key}",
    ]) {
      assert.ok(names.includes(route), `${route} in ${names}`);
    }
    for (const [name, op] of ops) {
      if (op.security?.length)
        assert.ok(op.responses["401"]?.content["application/problem+json"], `${name} documents 401 as a problem`);
      if (["POST /v1/renders", "POST /v1/images/generations"].includes(name))
        for (const s of ["400", "413", "415"]) assert.ok(op.responses[s], `${name} documents ${s}`);
    }
    assert.equal(spec.components.schemas.RenderRequest.additionalProperties, false);
    assert.equal(spec.components.schemas.RenderRequest.properties.steps.maximum, 150);
    const docs = await fetch(`${stack.url}/docs`);
    assert.equal(docs.status, 200);
    const html = await docs.text();
    assert.match(html, /"openapi\.json"/);
    assert.doesNotMatch(html, /https?:\/\//, "loads nothing from the internet");
    assert.equal((await fetch(`${stack.url}/healthz`)).status, 200);
  });
});
