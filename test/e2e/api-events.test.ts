import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { createApp } from "@kiln/api";
import { apiDeps } from "@kiln/api/config";
import { closeServer, serveOnNode } from "@kiln/api/node";
import { openPorts } from "@kiln/api/ports";
import { createApiKey, type JobRecord, loadConfig, type Ports } from "@kiln/shared";
import sharp from "sharp";

import { compareKeys, parseEventId } from "../../packages/api/src/renders/event-ids.js";
import { api, type LocalStack, startLocalStack } from "../support/local-stack.js";
import { openSse, type SseEvent } from "../support/sse-client.js";

/** `GET /v1/renders/{id}/events` read by a real HTTP client, including reconnects with Last-Event-ID. */

function assertIncreasingIds(events: SseEvent[], after?: string) {
  let last = parseEventId(after);
  for (const e of events) {
    if (e.id === undefined) continue;
    const key = parseEventId(e.id)!;
    assert.ok(key, `issued id ${e.id}`);
    assert.ok(
      compareKeys(key, last) > 0,
      `${e.id} comes after ${JSON.stringify(last)}: ${events.map((x) => `${x.event}#${x.id}`).join(" ")}`,
    );
    last = key;
  }
}

/** What a worker does to the job record, step by step (the real worker is exercised in the last test). */
async function move(ports: Ports, id: string, patch: (job: JobRecord) => Partial<JobRecord>) {
  const job = (await ports.jobs.get(id))!;
  const updated = await ports.jobs.update(id, { version: job.version }, patch(job));
  assert.ok(updated, "the simulated worker's update applied");
  return updated;
}

describe("render events over SSE", () => {
  let stack: LocalStack;
  before(async () => {
    stack = await startLocalStack({ worker: false });
  });
  after(() => stack.stop());

  const events = (id: string, headers: Record<string, string> = {}, query = "") =>
    openSse(`${stack.url}/v1/renders/${id}/events${query}`, { authorization: `Bearer ${stack.key}`, ...headers });

  it("streams position, stage, progress and the terminal event, and resumes after a reconnect without repeats or losses", async () => {
    const ahead = (await api(stack, "POST", "/v1/renders", { prompt: "ahead", width: 64, height: 64 })).json;
    const job = (
      await api(stack, "POST", "/v1/renders", { prompt: "watched", mode: "ensemble", width: 64, height: 64, steps: 10 })
    ).json;

    const first = await events(job.id);
    assert.equal(first.status, 200);
    assert.match(first.headers.get("content-type") ?? "", /^text\/event-stream/);
    const p1 = (await first.next())!;
    assert.equal(p1.event, "position");
    const before = JSON.parse(p1.data);
    assert.ok(before.position >= 1);
    assert.equal(p1.id, `q.${before.position}`);
    assert.ok(before.waiting_reason.code);

    await api(stack, "DELETE", `/v1/renders/${ahead.id}`);
    const p2 = (await first.next())!;
    assert.equal(p2.event, "position");
    assert.equal(JSON.parse(p2.data).position, before.position - 1);

    const t0 = new Date().toISOString();
    await move(stack.ports, job.id, () => ({
      status: "running",
      startedAt: t0,
      stageTimings: [{ stage: 0, kind: "base", startedAt: t0, worker: "sim" }],
      progress: { stage: 0, stageKind: "base", step: 0, steps: 8 },
    }));
    const stage0 = (await first.next())!;
    assert.deepEqual([stage0.event, stage0.id], ["stage", "r.0.0"]);
    assert.equal(JSON.parse(stage0.data).worker, "sim");
    await stack.ports.jobs.setProgress(job.id, { stage: 0, stageKind: "base", step: 3, steps: 8 });
    const progress = (await first.next())!;
    assert.deepEqual([progress.event, progress.id, JSON.parse(progress.data).step], ["progress", "r.0.3", 3]);
    first.close();

    // While the client is away: stage 0 ends, stage 1 runs, the job succeeds.
    await stack.ports.jobs.setProgress(job.id, { stage: 0, stageKind: "base", step: 8, steps: 8 });
    const t1 = new Date().toISOString();
    await move(stack.ports, job.id, (j) => ({
      stageTimings: [
        { ...j.stageTimings[0]!, finishedAt: t1, seconds: 0.1 },
        { stage: 1, kind: "refine", startedAt: t1 },
      ],
      progress: { stage: 1, stageKind: "refine", step: 2, steps: 2 },
    }));
    await move(stack.ports, job.id, (j) => ({
      status: "succeeded",
      finishedAt: new Date().toISOString(),
      stageTimings: [j.stageTimings[0]!, { ...j.stageTimings[1]!, finishedAt: new Date().toISOString(), seconds: 0.1 }],
    }));

    const resumed = await events(job.id, { "last-event-id": progress.id! });
    const rest = await resumed.rest();
    assert.deepEqual(
      rest.map((e) => `${e.event}#${e.id}`),
      ["stage#r.1.0", "progress#r.1.2", "succeeded#end"],
      "everything after r.0.3, once, ending with the terminal event (the last step of stage 0 was superseded)",
    );
    assertIncreasingIds(rest, progress.id);
    const final = JSON.parse(rest.at(-1)!.data);
    assert.equal(final.id, job.id);
    assert.equal(final.status, "succeeded");
    assert.equal(final.stage_timings.length, 2);

    const again = await events(job.id, { "last-event-id": "end" });
    assert.equal(again.status, 204, "a client that has the terminal event is told to stop");
    const late = await events(job.id, { "last-event-id": "r.1.0" });
    assert.deepEqual(
      (await late.rest()).map((e) => e.id),
      ["r.1.2", "end"],
    );
    const fresh = await events(job.id, { "last-event-id": "garbage" });
    assert.deepEqual(
      (await fresh.rest()).map((e) => e.id),
      ["r.0.0", "r.1.0", "r.1.2", "end"],
      "an unknown id starts over",
    );
  });

  it("sends ids in order when one poll sees a new stage and an older stage's step", async () => {
    const job = (
      await api(stack, "POST", "/v1/renders", {
        prompt: "odd record",
        mode: "ensemble",
        width: 64,
        height: 64,
        steps: 10,
      })
    ).json;
    const t = new Date().toISOString();
    await move(stack.ports, job.id, () => ({
      status: "running",
      startedAt: t,
      stageTimings: [
        { stage: 0, kind: "base", startedAt: t, finishedAt: t, seconds: 0 },
        { stage: 1, kind: "refine", startedAt: t },
      ],
      progress: { stage: 0, stageKind: "base", step: 8, steps: 8 },
    }));
    const s = await events(job.id, { "last-event-id": "r.0.3" });
    const first = [(await s.next())!, (await s.next())!];
    s.close();
    assert.deepEqual(
      first.map((e) => e.id),
      ["r.0.8", "r.1.0"],
    );
  });

  it("never loses the terminal event of a job that ends while no client is connected", async () => {
    const job = (await api(stack, "POST", "/v1/renders", { prompt: "canceled while away", width: 64, height: 64 }))
      .json;
    const s = await events(job.id);
    const position = (await s.next())!;
    s.close();
    await api(stack, "DELETE", `/v1/renders/${job.id}`);
    const back = await events(job.id, { "last-event-id": position.id! });
    const rest = await back.rest();
    assert.deepEqual(
      rest.map((e) => `${e.event}#${e.id}`),
      ["canceled#end"],
    );
    assert.equal(JSON.parse(rest[0]!.data).error.code, "canceled");
  });

  it("answers 404 problem+json for another key's render and 401 without a key", async () => {
    const job = (await api(stack, "POST", "/v1/renders", { prompt: "mine", width: 64, height: 64 })).json;
    const { key } = await createApiKey(stack.ports.keys, { name: "other", scopes: ["render"] });
    const other = await openSse(`${stack.url}/v1/renders/${job.id}/events`, { authorization: `Bearer ${key}` });
    assert.equal(other.status, 404);
    assert.equal(other.headers.get("content-type"), "application/problem+json");
    other.close();
    const anonymous = await openSse(`${stack.url}/v1/renders/${job.id}/events`);
    assert.equal(anonymous.status, 401);
    anonymous.close();
  });
});

describe("render events: heartbeats and stream length", () => {
  it("sends keep-alive comments and ends the stream after its time, to be resumed", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-sse-"));
    const config = loadConfig({ KILN_DATA_DIR: dir, KILN_MIN_SIDE: "64" });
    const ports = openPorts(config);
    const app = createApp({
      ...apiDeps(config, ports),
      timing: { heartbeatMs: 100, eventStreamSeconds: 1, pollMs: 50 },
    });
    const { server, port } = await serveOnNode(app, { port: 0, host: "127.0.0.1" });
    try {
      const { key } = await createApiKey(ports.keys, { name: "t", scopes: ["render"] });
      const auth = { authorization: `Bearer ${key}` };
      const created = await fetch(`http://127.0.0.1:${port}/v1/renders`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({ prompt: "idle", width: 64, height: 64 }),
      });
      const { id } = (await created.json()) as { id: string };
      const started = Date.now();
      const s = await openSse(`http://127.0.0.1:${port}/v1/renders/${id}/events`, auth);
      const all = await s.rest(5000);
      const took = Date.now() - started;
      assert.ok(took >= 900 && took < 3000, `the server ended the stream after ${took} ms`);
      assert.deepEqual(
        all.map((e) => e.event),
        ["position"],
        "the position is told once while it does not change",
      );
      assert.ok(s.comments.filter((c) => c === "keep-alive").length >= 3, `heartbeats: ${s.comments}`);
      const resumed = await openSse(`http://127.0.0.1:${port}/v1/renders/${id}/events`, {
        ...auth,
        "last-event-id": all[0]!.id!,
      });
      assert.deepEqual(await resumed.rest(5000), [], "nothing new to tell");
    } finally {
      await closeServer(server);
      await ports.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("render events with a real worker", () => {
  let stack: LocalStack;
  before(async () => {
    stack = await startLocalStack();
  });
  after(() => stack.stop());

  it("streams an ensemble render to its end with a preview of the hand-over latents", async () => {
    const job = (
      await api(stack, "POST", "/v1/renders", {
        prompt: "a lighthouse",
        mode: "ensemble",
        width: 128,
        height: 96,
        steps: 12,
        n: 2,
        seed: 9,
      })
    ).json;
    const s = await openSse(`${stack.url}/v1/renders/${job.id}/events?previews=true`, {
      authorization: `Bearer ${stack.key}`,
    });
    const all = await s.rest();
    assertIncreasingIds(all);
    const names = all.map((e) => e.event);
    assert.equal(names.at(-1), "succeeded");
    assert.ok(names.includes("stage"), names.join(","));
    const preview = all.find((e) => e.event === "preview");
    assert.ok(preview, `a preview in ${names}`);
    assert.equal(preview.id, undefined);
    const data = JSON.parse(preview.data);
    assert.deepEqual([data.stage, data.width, data.height, data.images.length], [0, 16, 12, 2]);
    assert.ok(data.sigma > 0, "ensemble hand-over latents are still noisy");
    const meta = await sharp(Buffer.from(data.images[0].replace(/^data:image\/png;base64,/, ""), "base64")).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ["png", 16, 12]);
    const done = JSON.parse(all.at(-1)!.data);
    assert.equal(done.images.length, 2);
  });
});
