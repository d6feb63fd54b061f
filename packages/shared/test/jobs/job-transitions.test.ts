import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";

import { openLocalPorts } from "../../src/adapters/local/index.js";
import {
  applyTransition,
  expiresAtOnEnd,
  type JobTransition,
  jobTransitions,
  retentionEnd,
} from "../../src/jobs/job-transitions.js";
import { failDeadLetteredJobs } from "../../src/orchestration/dead-letters.js";
import { enqueueStage, stageMessage } from "../../src/orchestration/stage-dispatch.js";
import { planRender } from "../../src/plan/stage-planner.js";
import type { JobRecord } from "../../src/schemas/job.js";
import type { JobEvent } from "../../src/schemas/job-event.js";
import { renderRequestSchema } from "../../src/schemas/render-request.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-transitions-"));
const ports = openLocalPorts({ dataDir: dir, publicBaseUrl: "http://127.0.0.1", urlSecret: "s", maxReceives: 1 });
after(async () => {
  await ports.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const plan = planRender(
  renderRequestSchema().parse({ prompt: "a kiln", mode: "ensemble", width: 64, height: 64, steps: 4 }),
  1,
);
const CREATED = new Date("2026-01-01T00:00:00Z");
const RETENTION = 3600;
let n = 0;
async function queuedJob(): Promise<JobRecord> {
  const job: JobRecord = {
    id: `job_t${++n}`,
    ownerKeyId: "key-1",
    status: "queued",
    version: 1,
    createdAt: CREATED.toISOString(),
    updatedAt: CREATED.toISOString(),
    plan,
    images: [],
    stageTimings: [],
    deadlineAt: new Date(CREATED.getTime() + 60_000).toISOString(),
    retentionSeconds: RETENTION,
    expiresAt: CREATED.getTime() / 1000 + RETENTION,
  };
  assert.equal(await ports.jobs.create(job), true);
  return job;
}
const running = async () => {
  const job = await queuedJob();
  return (await applyTransition(ports.jobs, job.id, jobTransitions.start(job, plan.stages[0]!, "w1", CREATED)))!;
};

describe("the job state machine", () => {
  const END = new Date("2026-01-01T05:00:00Z");
  const ends: [string, () => Promise<JobRecord>, (job: JobRecord) => JobTransition][] = [
    [
      "succeed (worker)",
      running,
      (j) => jobTransitions.succeed(j, { images: [], stageTimings: [], progress: j.progress! }, END),
    ],
    ["fail (worker)", running, (j) => jobTransitions.fail(j, { code: "x", message: "y" }, END)],
    ["cancel (API, queued)", queuedJob, (j) => jobTransitions.cancel(j, END, { from: ["queued"] })],
    ["cancel (worker, running)", running, (j) => jobTransitions.cancel(j, END)],
    ["expire (API or worker)", queuedJob, (j) => jobTransitions.expire(j, END)],
  ];
  for (const [name, make, end] of ends) {
    it(`${name}: retention and TTL count from the end, one event, and it cannot end twice`, async () => {
      const job = await make();
      const events: JobEvent[] = [];
      const sink = async (e: JobEvent) => void events.push(e);
      const ended = await applyTransition(ports.jobs, job.id, end(job), { events: sink, at: END });
      assert.ok(ended);
      assert.equal(ended.finishedAt, END.toISOString());
      assert.equal(ended.expiresAt, END.getTime() / 1000 + RETENTION, "the TTL moved to the end plus retention");
      assert.equal(retentionEnd(ended), END.getTime() / 1000 + RETENTION, "readers agree with the TTL");
      assert.deepEqual(
        events.map((e) => [e.type, e.job.version]),
        [[ended.status, ended.version]],
      );
      const again = await applyTransition(ports.jobs, job.id, end(ended), { events: sink, at: END });
      assert.equal(again, null, "an ended job cannot be ended again");
      assert.equal(events.length, 1, "no second event");
    });
  }

  it("the dead-letter sweep ends jobs the same way, with its event", async () => {
    const job = await running();
    await enqueueStage(ports.queue, stageMessage(job.id, plan, 0));
    // One receive allowed: the second receive moves the message to the dead-letter queue.
    await ports.queue.receive("kiln-base", { max: 1, visibilitySeconds: 0 });
    await ports.queue.receive("kiln-base", { max: 1, visibilitySeconds: 0 });
    const events: JobEvent[] = [];
    const failed = await failDeadLetteredJobs(ports, ["base"], END, async (e) => void events.push(e));
    assert.deepEqual(failed, [job.id]);
    const stored = (await ports.jobs.get(job.id))!;
    assert.equal(stored.error?.code, "stage_dead_lettered");
    assert.equal(stored.expiresAt, END.getTime() / 1000 + RETENTION);
    assert.deepEqual(
      events.map((e) => e.type),
      ["failed"],
    );
  });

  it("a record without retentionSeconds (written before it existed) keeps the retention its expiresAt implies", () => {
    const legacy = { createdAt: CREATED.toISOString(), expiresAt: CREATED.getTime() / 1000 + 7200 } as JobRecord;
    assert.equal(expiresAtOnEnd(legacy, END), END.getTime() / 1000 + 7200);
  });

  it("only a started job can succeed, and a started event is told only on the first start", async () => {
    const job = await queuedJob();
    assert.equal(
      await applyTransition(
        ports.jobs,
        job.id,
        jobTransitions.succeed(
          job,
          { images: [], stageTimings: [], progress: { stage: 0, stageKind: "base", step: 1, steps: 1 } },
          END,
        ),
      ),
      null,
    );
    const first = jobTransitions.start(job, plan.stages[0]!, "w1", CREATED);
    assert.equal(first.event, "started");
    const started = (await applyTransition(ports.jobs, job.id, first))!;
    assert.equal(jobTransitions.start(started, plan.stages[1]!, "w2", END).event, undefined);
  });
});
