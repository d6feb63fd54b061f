import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { createApiKey, type JobEvent, type Ports } from "@kiln/shared";
import { openTempLocalPorts, type TempLocalPorts } from "@kiln/shared/testing";

import { createApp } from "../../src/app.js";
import { cancelRender, expireIfOverdue, waitForEnd } from "../../src/renders/render-service.js";
import { jobRecord } from "../fixtures.js";

describe("render service: moves the API makes itself", () => {
  let local: TempLocalPorts;
  let ports: Ports;
  const events: JobEvent[] = [];
  const sink = async (e: JobEvent) => {
    events.push(e);
  };
  before(() => {
    local = openTempLocalPorts({ prefix: "kiln-service-", maxReceives: 3 });
    ports = local.ports;
  });
  after(() => local.close());

  it("cancels a queued job at once and tells the event sink; rebases retention on the end", async () => {
    events.length = 0;
    const job = jobRecord({}, { id: "job_q", expiresAt: Date.parse("2030-01-01T00:00:00Z") / 1000 + 3600 });
    await ports.jobs.create(job);
    const now = new Date("2030-01-01T05:00:00Z");
    const { job: after, outcome } = await cancelRender(ports, job, { now, events: sink });
    assert.equal(outcome, "canceled");
    assert.equal(after.status, "canceled");
    assert.equal(after.finishedAt, now.toISOString());
    assert.equal(after.expiresAt, now.getTime() / 1000 + 3600);
    assert.deepEqual(
      events.map((e) => [e.type, e.job.id]),
      [["canceled", "job_q"]],
    );
    assert.equal((await cancelRender(ports, after, { now, events: sink })).outcome, "ended");
    assert.equal(events.length, 1);
  });

  it("asks a running job to stop (the worker ends it and emits the event), and re-reads a job that started meanwhile", async () => {
    events.length = 0;
    const job = jobRecord({}, { id: "job_r" });
    await ports.jobs.create(job);
    // The worker claims it between the API's read and its write.
    await ports.jobs.update(job.id, { status: ["queued"] }, { status: "running" });
    const { job: after, outcome } = await cancelRender(ports, job, { now: new Date(), events: sink });
    assert.equal(outcome, "requested");
    assert.equal(after.status, "running");
    assert.equal(after.cancelRequested, true);
    assert.equal(events.length, 0);
    assert.equal((await cancelRender(ports, after, { now: new Date() })).outcome, "requested", "asking twice is fine");
  });

  it("expires a queued job past its deadline, once, and leaves others alone", async () => {
    events.length = 0;
    const job = jobRecord({}, { id: "job_d", deadlineAt: "2030-01-01T00:00:10Z" });
    await ports.jobs.create(job);
    assert.equal(
      (await expireIfOverdue(ports, job, { now: new Date("2030-01-01T00:00:09Z"), events: sink })).status,
      "queued",
    );
    const expired = await expireIfOverdue(ports, job, { now: new Date("2030-01-01T00:00:11Z"), events: sink });
    assert.equal(expired.status, "expired");
    assert.equal(expired.error?.code, "deadline_passed");
    assert.equal(
      (await expireIfOverdue(ports, job, { now: new Date("2030-01-01T00:00:12Z"), events: sink })).status,
      "expired",
    );
    assert.deepEqual(
      events.map((e) => e.type),
      ["expired"],
    );
  });

  it("waits until the job ends, the time runs out, or the caller goes away", async () => {
    const job = jobRecord({}, { id: "job_w" });
    await ports.jobs.create(job);
    const t = Date.now();
    assert.equal((await waitForEnd(ports, job, { now: new Date(), timeoutMs: 150, pollMs: 20 })).status, "queued");
    assert.ok(Date.now() - t >= 140);
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 50);
    const t2 = Date.now();
    await waitForEnd(ports, job, { now: new Date(), timeoutMs: 10_000, pollMs: 1000, signal: abort.signal });
    assert.ok(Date.now() - t2 < 500, "an aborted wait returns at once");
    setTimeout(
      () =>
        void ports.jobs.update(
          job.id,
          { status: ["queued"] },
          { status: "failed", error: { code: "x", message: "y" } },
        ),
      50,
    );
    assert.equal((await waitForEnd(ports, job, { now: new Date(), timeoutMs: 10_000, pollMs: 20 })).status, "failed");
  });

  it("DELETE through the app tells the deps' event sink", async () => {
    events.length = 0;
    const app = createApp({
      ports,
      publicUrl: "http://kiln.test",
      limits: { minSide: 64, maxSide: 2048, maxPixels: 2048 * 2048, maxPromptChars: 4000 },
      maxBodyBytes: 65536,
      downloadUrlSeconds: 600,
      retentionHours: 1,
      events: sink,
    });
    const { key } = await createApiKey(ports.keys, { name: "t", scopes: ["render"] });
    const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
    const created = (await (
      await app.request("/v1/renders", {
        method: "POST",
        headers,
        body: JSON.stringify({ prompt: "x", width: 64, height: 64 }),
      })
    ).json()) as { id: string; links: { self: string } };
    assert.equal(created.links.self, `http://kiln.test/v1/renders/${created.id}`);
    const res = await app.request(`/v1/renders/${created.id}`, { method: "DELETE", headers });
    assert.equal(res.status, 200);
    assert.deepEqual(
      events.map((e) => [e.type, e.job.id]),
      [["canceled", created.id]],
    );
  });
});
