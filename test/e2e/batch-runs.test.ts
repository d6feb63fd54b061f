/**
 * Batch runs end to end on the local family: the API (its batch routes), real SQLite queues and
 * job store, files for blobs, and the real worker runtime whose executor paints a flat PNG per
 * render instead of running SDXL (the pipeline is not what these tests are about).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";

import { nullExecutor, type StageExecutor, Worker } from "@kiln/gpu-worker";
import { createApiKey, KilnError, type Ports } from "@kiln/shared";
import { openLocalPorts } from "@kiln/shared/local";
import { createLogger } from "@kiln/shared/node";
import sharp from "sharp";

import { createApp } from "../../packages/api/src/app.js";
import { type BatchDeps, getRun, isRunEnded, pumpKey } from "../../packages/api/src/batches/batch-service.js";
import { batchDepsFrom } from "../../packages/api/src/batches/routes.js";
import { BatchScheduler, fireManifest, schedulerTick, takeTickLease } from "../../packages/api/src/batches/schedule.js";
import type { ApiDeps } from "../../packages/api/src/deps.js";
import { sharpContactSheet } from "../../packages/api/src/entry/contact-sheet.js";
import { closeServer, serveOnNode } from "../../packages/api/src/entry/node.js";

const logger = createLogger({ level: "silent" });

describe("batch runs on the local family", () => {
  let dir: string;
  let ports: Ports;
  let worker: Worker;
  let deps: ApiDeps;
  let batch: BatchDeps;
  let app: ReturnType<typeof createApp>;
  let auth: Record<string, string>;
  let keyId: string;
  /** Renders whose prompt contains "flaky" fail while this is set (a non-retryable model error). */
  let failFlaky = true;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-batch-"));
    ports = openLocalPorts({
      dataDir: dir,
      publicBaseUrl: "http://127.0.0.1:9",
      urlSecret: "b".repeat(32),
      maxReceives: 3,
    });
    const inner = nullExecutor();
    const execute: StageExecutor = async (job, stage, input, hooks) => {
      if (stage.output !== "images") return inner(job, stage, input, hooks);
      if (failFlaky && job.plan.prompt.includes("flaky")) throw new KilnError("model_mismatch", "flaky render fails");
      // A flat colour per seed: renders differ, so the contact sheet has something to show.
      const { width, height, seed } = job.plan;
      const bytes = await sharp({
        create: { width, height, channels: 3, background: { r: (seed * 70) % 256, g: 90, b: 160 } },
      })
        .png()
        .toBuffer();
      return {
        kind: "images",
        images: [{ bytes: new Uint8Array(bytes), format: "png", contentType: "image/png", width, height }],
        unetSeconds: 0,
        denoiseSeconds: 0,
        steps: 0,
      };
    };
    worker = new Worker({
      ports,
      execute,
      logger,
      stages: ["base", "refine"],
      concurrency: 1,
      visibilitySeconds: 30,
      maxReceives: 3,
      pollWaitSeconds: 0.05,
      workerId: "w-batch",
    });
    worker.start();
    const created = await createApiKey(ports.keys, { name: "batch", scopes: ["render"] });
    keyId = created.record.id;
    auth = { authorization: `Bearer ${created.key}` };
    deps = {
      ports,
      publicUrl: "http://127.0.0.1:9",
      limits: { minSide: 64, maxSide: 2048, maxPixels: 2048 * 2048, maxPromptChars: 4000 },
      maxBodyBytes: 65536,
      downloadUrlSeconds: 600,
      retentionHours: 1,
      batches: { contactSheet: sharpContactSheet, window: 8, stepSeconds: 0.1 },
    };
    app = createApp(deps);
    batch = batchDepsFrom(deps, deps.batches);
  });
  after(async () => {
    await worker.drain(5);
    await ports.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function untilEnded(runId: string) {
    const deadline = Date.now() + 60_000;
    for (;;) {
      await pumpKey(batch, keyId);
      const run = await getRun(batch, keyId, runId);
      if (run && isRunEnded(run.status)) return run;
      assert.ok(Date.now() < deadline, `run ${runId} did not end: ${JSON.stringify(run?.counts)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  const MANIFEST = [
    "id: catalogue",
    "defaults: { steps: 2, mode: base }",
    "prompts:",
    "  - a red chair",
    "  - a flaky blue lamp",
    "seeds: [1, 2]",
    "sizes: [64x64]",
    "output: { prefix: shop/nightly }",
    "",
  ].join("\n");

  const post = (body: string, query = "") =>
    app.request(`/v1/batches${query}`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/yaml" },
      body,
    });

  it("dry run: the expansion and estimate, nothing stored or enqueued", async () => {
    const res = await post(MANIFEST, "?dry_run=true");
    assert.equal(res.status, 200);
    const body = (await res.json()) as { count: number; estimate: { gpu_seconds: number; images: number } };
    assert.equal(body.count, 4);
    assert.equal(body.estimate.images, 4);
    assert.ok(body.estimate.gpu_seconds > 0);
    assert.equal((await ports.jobs.listByOwner(keyId, { limit: 10 })).jobs.length, 0);
  });

  it("a manifest error answers 400 with the line and column", async () => {
    const res = await post("id: x\nprompts: [a]\nseeds: [1, two]\n");
    assert.equal(res.status, 400);
    assert.match(res.headers.get("content-type") ?? "", /problem\+json/);
    const body = (await res.json()) as {
      code: string;
      errors: { field: string; message: string; line: number; column: number }[];
    };
    assert.equal(body.code, "manifest_invalid");
    assert.deepEqual(body.errors[0], { field: "$.seeds[1]", message: body.errors[0]!.message, line: 3, column: 12 });
  });

  it("a cap refuses the run with the estimate in the error, before anything is enqueued", async () => {
    const res = await post(`${MANIFEST}caps: { max_gpu_seconds: 0.001 }\n`);
    assert.equal(res.status, 422);
    const body = (await res.json()) as { code: string; detail: string; estimate: { gpu_seconds: number } };
    assert.equal(body.code, "batch_cap_exceeded");
    assert.ok(body.estimate.gpu_seconds > 0.001);
    assert.match(body.detail, /GPU seconds/);
    assert.equal((await ports.jobs.listByOwner(keyId, { limit: 10 })).jobs.length, 0);
  });

  let firstRunFailed: string[] = [];

  it("runs a manifest: partial failure, images under the prefix, index, gallery and contact sheet", async () => {
    const res = await post(MANIFEST);
    assert.equal(res.status, 202);
    const started = (await res.json()) as { id: string; counts: { total: number; new: number } };
    assert.equal(started.counts.total, 4);
    assert.equal(started.counts.new, 4);
    const run = await untilEnded(started.id);
    assert.equal(run.status, "failed");
    assert.deepEqual(
      { ...run.counts },
      { total: 4, new: 4, skipped: 0, queued: 0, running: 0, succeeded: 2, failed: 2 },
    );
    firstRunFailed = run.renders.filter((r) => r.status === "failed").map((r) => r.key);
    const files = await ports.blobs.list("outputs/");
    assert.ok(files.includes(`outputs/${keyId}/shop/nightly/a-red-chair-1-64x64-base.png`), files.join("\n"));
    assert.ok(files.includes(`outputs/${keyId}/shop/nightly/${run.id}.index.html`));
    const index = JSON.parse(new TextDecoder().decode((await ports.blobs.get(run.indexKey!))!));
    assert.equal(index.renders.length, 4);
    const sheet = await sharp((await ports.blobs.get(run.contactSheetKey!))!).metadata();
    assert.equal(sheet.format, "png");
    assert.ok(sheet.width! > 2 * 192 && sheet.height! > 192);

    const view = (await (await app.request(`/v1/batches/${run.id}`, { headers: auth })).json()) as {
      status: string;
      contact_sheet: { url: string };
      index: { url: string };
    };
    assert.equal(view.status, "failed");
    assert.match(view.contact_sheet.url, /\/v1\/files\//);
    assert.match(view.index.url, /index\.json/);
  });

  it("a rerun renders only the failed ones again", async () => {
    failFlaky = false;
    const before = (await ports.jobs.listByOwner(keyId, { limit: 100 })).jobs.length;
    const res = await post(MANIFEST);
    const started = (await res.json()) as { id: string; counts: { new: number; skipped: number } };
    assert.equal(started.counts.skipped, 2);
    assert.equal(started.counts.new, 2);
    const run = await untilEnded(started.id);
    assert.equal(run.status, "succeeded");
    const made = run.renders.filter((r) => r.state !== "skipped");
    assert.deepEqual(made.map((r) => r.key).sort(), [...firstRunFailed].sort());
    assert.ok(made.every((r) => r.jobId === `${r.key}_r2`));
    assert.equal((await ports.jobs.listByOwner(keyId, { limit: 100 })).jobs.length, before + 2);
  });

  it("an idempotent rerun enqueues nothing", async () => {
    const jobsBefore = (await ports.jobs.listByOwner(keyId, { limit: 100 })).jobs.length;
    const res = await post(MANIFEST);
    const started = (await res.json()) as { id: string; status: string; counts: { new: number; skipped: number } };
    assert.deepEqual([started.counts.new, started.counts.skipped], [0, 4]);
    assert.equal(started.status, "succeeded");
    for (const q of ["kiln-base", "kiln-base-batch", "kiln-refine", "kiln-refine-batch"]) {
      const depth = await ports.queue.depth(q);
      assert.equal(depth.visible + depth.inFlight + depth.delayed, 0, q);
    }
    assert.equal((await ports.jobs.listByOwner(keyId, { limit: 100 })).jobs.length, jobsBefore);
  });

  it("a double fire of a scheduled manifest makes one run", async () => {
    const stored =
      MANIFEST.replace("id: catalogue", "id: nightly") + 'schedule: { cron: "0 2 * * *", timezone: Europe/Berlin }\n';
    const put = await app.request("/v1/manifests/nightly", {
      method: "PUT",
      headers: { ...auth, "content-type": "application/yaml" },
      body: stored,
    });
    assert.equal(put.status, 201, await put.clone().text());
    const listed = (await (await app.request("/v1/manifests", { headers: auth })).json()) as {
      data: { id: string; next_fires: string[] }[];
    };
    assert.deepEqual(
      listed.data.map((m) => m.id),
      ["nightly"],
    );
    assert.equal(listed.data[0]!.next_fires.length, 3);

    const at = new Date("2026-06-01T00:00:00Z");
    // Two processes and a retried trigger fire the same scheduled time.
    const fires = await Promise.all([
      fireManifest(batch, keyId, "nightly", at),
      fireManifest(batch, keyId, "nightly", at),
      fireManifest(batch, keyId, "nightly", at),
    ]);
    const ids = new Set(fires.map((f) => f.runId).filter(Boolean));
    assert.equal(ids.size, 1, JSON.stringify(fires));
    assert.equal(fires.filter((f) => f.created).length, 1, JSON.stringify(fires));
    const again = await fireManifest(batch, keyId, "nightly", at);
    assert.equal(again.runId, [...ids][0]);
    assert.equal(again.created, false);
    const runs = (await (await app.request("/v1/batches", { headers: auth })).json()) as {
      data: { id: string; trigger: string }[];
    };
    assert.equal(runs.data.filter((r) => r.trigger === "schedule").length, 1);
    await untilEnded([...ids][0]!);
  });

  it("a scheduler tick fires due stored manifests once, under a lease only one process takes", async () => {
    const text = MANIFEST.replace("id: catalogue", "id: minutely") + 'schedule: { cron: "* * * * *" }\n';
    const put = await app.request("/v1/manifests/minutely", {
      method: "PUT",
      headers: { ...auth, "content-type": "application/yaml" },
      body: text,
    });
    assert.equal(put.status, 201);
    const at = new Date(Date.now() + 61_000);
    assert.equal(await takeTickLease(batch, at, 5), true);
    assert.equal(await takeTickLease(batch, at, 5), false, "a second process in the same tick does nothing");
    const fired = (await schedulerTick(batch, at)).filter((f) => f.manifestId === "minutely");
    assert.ok(fired.length >= 1 && fired.every((f) => f.runId && f.created), JSON.stringify(fired));
    const again = (await schedulerTick(batch, at)).filter((f) => f.manifestId === "minutely");
    assert.ok(again.every((f) => f.created === false));
    for (const f of fired) await untilEnded(f.runId!);
    const del = await app.request("/v1/manifests/minutely", { method: "DELETE", headers: auth });
    assert.equal(del.status, 204);
  });

  it("kiln batch run FILE --wait follows a run to its end through the public API", async () => {
    const { server, port } = await serveOnNode(app, { port: 0, host: "127.0.0.1" });
    const scheduler = new BatchScheduler(batch, 1);
    scheduler.start();
    try {
      const file = path.join(dir, "cli.yaml");
      fs.writeFileSync(file, MANIFEST.replace("id: catalogue", "id: from-cli").replace("seeds: [1, 2]", "seeds: [5]"));
      const bin = path.resolve(import.meta.dirname, "../../packages/cli/bin/kiln.js");
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [bin, "batch", "run", file, "--wait", "--poll-ms", "100", "--url", `http://127.0.0.1:${port}`],
        {
          env: { ...process.env, KILN_API_KEY: auth.authorization!.slice(7), KILN_LOG_LEVEL: "silent" },
          timeout: 60_000,
        },
      );
      assert.match(stdout, /from-cli\s+succeeded/);
      assert.match(stdout, /succeeded 2/);
      assert.match(stdout, /contact sheet: http/);
      const listed = await promisify(execFile)(
        process.execPath,
        [bin, "batch", "list", "--url", `http://127.0.0.1:${port}`],
        {
          env: { ...process.env, KILN_API_KEY: auth.authorization!.slice(7) },
        },
      );
      assert.match(listed.stdout, /from-cli/);
    } finally {
      await scheduler.stop();
      await closeServer(server);
    }
  });
});
