import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";

import { openLocalPorts } from "../../src/adapters/local/index.js";
import { redeliverDueEvents, tellDueEvents } from "../../src/jobs/event-outbox.js";
import { applyTransition, jobTransitions } from "../../src/jobs/job-transitions.js";
import { planRender } from "../../src/plan/stage-planner.js";
import type { JobRecord } from "../../src/schemas/job.js";
import type { JobEvent } from "../../src/schemas/job-event.js";
import { renderRequestSchema } from "../../src/schemas/render-request.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-event-outbox-"));
const ports = openLocalPorts({ dataDir: dir, publicBaseUrl: "http://127.0.0.1", urlSecret: "s", maxReceives: 1 });
after(async () => {
  await ports.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const plan = planRender(renderRequestSchema().parse({ prompt: "a kiln", mode: "base", width: 64, height: 64 }), 1);
const AT = new Date("2026-01-01T00:00:00Z");
let n = 0;
async function queuedJob(extra: Partial<JobRecord> = {}): Promise<JobRecord> {
  const job: JobRecord = {
    id: `job_o${++n}`,
    ownerKeyId: "key-1",
    status: "queued",
    version: 1,
    createdAt: AT.toISOString(),
    updatedAt: AT.toISOString(),
    plan,
    images: [],
    stageTimings: [],
    ...extra,
  };
  assert.equal(await ports.jobs.create(job), true);
  return job;
}
const WEBHOOK = { webhook: { url: "https://example.com/hook" } };

describe("the event outbox", () => {
  it("a job with a webhook stores each event with its transition; telling it clears it", async () => {
    const job = await queuedJob(WEBHOOK);
    const start = jobTransitions.start(job, plan.stages[0]!, "w1", AT);
    const told: JobEvent[] = [];
    // A sink that fails: the event stays due.
    const failing = async () => {
      throw new Error("queue down");
    };
    const running = (await applyTransition(ports.jobs, job.id, start, { events: failing }))!;
    assert.deepEqual(running.eventsDue, ["started"], "stored in the transition's own write");
    assert.deepEqual((await ports.jobs.get(job.id))!.eventsDue, ["started"], "still due after the sink failed");

    const end = jobTransitions.succeed(running, { images: [], stageTimings: [], progress: running.progress! }, AT);
    const ended = (await applyTransition(ports.jobs, job.id, end, { events: async (e) => void told.push(e) }))!;
    assert.deepEqual(ended.eventsDue, ["started", "succeeded"]);
    assert.deepEqual((await ports.jobs.get(job.id))!.eventsDue, ["started"], "the told event is cleared");
    assert.deepEqual(
      told.map((e) => e.type),
      ["succeeded"],
    );
  });

  it("the sweep re-tells what a crash left due, once its grace has passed, from the record", async () => {
    const job = await queuedJob(WEBHOOK);
    // A teller that died between the stored transition and the sink: no events option at all.
    const running = (await applyTransition(ports.jobs, job.id, jobTransitions.start(job, plan.stages[0]!, "w1", AT)))!;
    assert.deepEqual(running.eventsDue, ["started"]);
    const told: JobEvent[] = [];
    const sink = async (e: JobEvent) => void told.push(e);
    const updated = Date.parse(running.updatedAt);
    assert.deepEqual(
      await redeliverDueEvents(ports.jobs, sink, { now: new Date(updated), graceMs: 30_000 }),
      [],
      "within the grace its teller may still be at work",
    );
    const swept = await redeliverDueEvents(ports.jobs, sink, { now: new Date(updated + 31_000), graceMs: 30_000 });
    assert.ok(swept.includes(job.id));
    const mine = told.filter((e) => e.job.id === job.id);
    assert.deepEqual(
      mine.map((e) => [e.type, e.at]),
      [["started", running.startedAt]],
      "the event as the record tells it",
    );
    assert.equal("eventsDue" in (await ports.jobs.get(job.id))!, false);
    assert.deepEqual(await tellDueEvents(ports.jobs, sink, (await ports.jobs.get(job.id))!), [], "nothing twice");
  });

  it("a transition from a copy read before an event was told does not bring that event back", async () => {
    const job = await queuedJob(WEBHOOK);
    const told: JobEvent[] = [];
    const sink = async (e: JobEvent) => void told.push(e);
    // The worker keeps the record its start transition returned, then tells "started" (which clears it)…
    const start = jobTransitions.start(job, plan.stages[0]!, "w1", AT);
    const running = (await applyTransition(ports.jobs, job.id, start, { events: sink }))!;
    assert.deepEqual(running.eventsDue, ["started"]);
    assert.equal("eventsDue" in (await ports.jobs.get(job.id))!, false);
    // …and ends the job from that copy.
    const end = jobTransitions.succeed(running, { images: [], stageTimings: [], progress: running.progress! }, AT);
    assert.deepEqual(end.patch.eventsDue, ["succeeded"], "the transition names only its own event");
    const ended = (await applyTransition(ports.jobs, job.id, end, { events: sink }))!;
    assert.deepEqual(ended.eventsDue, ["succeeded"]);
    assert.equal("eventsDue" in (await ports.jobs.get(job.id))!, false, "nothing left for the sweep to tell twice");
    assert.deepEqual(
      told.map((e) => e.type),
      ["started", "succeeded"],
    );
  });

  it("a job with nowhere to tell stores no due events", async () => {
    const job = await queuedJob();
    const running = (await applyTransition(ports.jobs, job.id, jobTransitions.start(job, plan.stages[0]!, "w1", AT)))!;
    assert.equal(running.eventsDue, undefined);
  });
});
