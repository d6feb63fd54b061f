import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import Database from "better-sqlite3";

import { openLocalPorts } from "../../src/adapters/local/index.js";
import { applyTransition, jobTransitions } from "../../src/jobs/job-transitions.js";
import { createQueuedJob, reconcileQueuedJobs } from "../../src/orchestration/submit-outbox.js";
import { planRender } from "../../src/plan/stage-planner.js";
import type { Ports } from "../../src/ports/index.js";
import type { JobRecord } from "../../src/schemas/job.js";
import { renderRequestSchema } from "../../src/schemas/render-request.js";
import { type AwsStandins, openStandinPorts, startAwsStandins } from "../support/aws-standins.js";

const plan = planRender(
  renderRequestSchema().parse({ prompt: "a kiln", mode: "ensemble", width: 64, height: 64, steps: 4 }),
  1,
);
let n = 0;
const newJob = (createdAt: Date): JobRecord => ({
  id: `job_outbox${++n}_${Math.random().toString(36).slice(2, 8)}`,
  ownerKeyId: "key-1",
  status: "queued",
  version: 1,
  createdAt: createdAt.toISOString(),
  updatedAt: createdAt.toISOString(),
  plan,
  images: [],
  stageTimings: [],
});

async function drain(ports: Ports): Promise<string[]> {
  const ids: string[] = [];
  for (;;) {
    const got = await ports.queue.receive<{ jobId: string }>("kiln-base", { max: 10, visibilitySeconds: 30 });
    if (got.length === 0) return ids;
    for (const m of got) {
      ids.push(m.body.jobId);
      await ports.queue.ack("kiln-base", m.receipt);
    }
  }
}

function describeOutbox(family: string, open: () => Promise<{ ports: Ports; close: () => Promise<void> }>) {
  describe(`submit outbox on the ${family} family`, () => {
    let ports: Ports;
    let close: () => Promise<void>;
    before(async () => ({ ports, close } = await open()));
    after(() => close());

    it("a new job is stored with its stage-0 message and marked enqueued; a second create of the id sends nothing", async () => {
      const job = newJob(new Date());
      assert.equal(await createQueuedJob(ports, job, { now: new Date() }), true);
      assert.ok((await ports.jobs.get(job.id))?.enqueuedAt, "marked enqueued");
      assert.equal(await createQueuedJob(ports, job, { now: new Date() }), false);
      assert.deepEqual(await drain(ports), [job.id], "exactly one stage-0 message");
    });

    it("a job its submit left unmarked (died after the create) gets stage 0 re-sent once, after the grace", async () => {
      const now = new Date();
      const orphan = newJob(new Date(now.getTime() - 60_000));
      assert.equal(await ports.jobs.create(orphan), true);
      const fresh = newJob(now);
      assert.equal(await ports.jobs.create(fresh), true);
      assert.deepEqual(await reconcileQueuedJobs(ports, { now, graceMs: 30_000 }), [orphan.id], "only past the grace");
      assert.deepEqual(await drain(ports), [orphan.id]);
      assert.ok((await ports.jobs.get(orphan.id))?.enqueuedAt, "marked, so it is not re-sent again");
      assert.deepEqual(await reconcileQueuedJobs(ports, { now, graceMs: 30_000 }), []);
      await ports.jobs.delete(fresh.id);
    });

    it("re-sending is harmless: a job a worker already started cannot be started again from the old version", async () => {
      const job = newJob(new Date());
      await createQueuedJob(ports, job, { now: new Date() });
      const stored = (await ports.jobs.get(job.id))!;
      const started = await applyTransition(
        ports.jobs,
        job.id,
        jobTransitions.start(stored, plan.stages[0]!, "w1", new Date()),
      );
      assert.ok(started);
      // A duplicate delivery read the job before the first start: its claim fails on the version.
      assert.equal(
        await applyTransition(ports.jobs, job.id, jobTransitions.start(stored, plan.stages[0]!, "w2", new Date())),
        null,
      );
      // And the reconciler leaves started jobs alone.
      assert.deepEqual(await reconcileQueuedJobs(ports, { now: new Date(Date.now() + 3_600_000), graceMs: 0 }), []);
      await drain(ports);
    });
  });
}

describeOutbox("local", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-outbox-"));
  const ports = openLocalPorts({ dataDir: dir, publicBaseUrl: "http://127.0.0.1", urlSecret: "s", maxReceives: 5 });
  return {
    ports,
    close: async () => {
      await ports.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
});

describeOutbox("aws (fauxqs + dynalite)", async () => {
  const standins: AwsStandins = await startAwsStandins();
  const { ports } = await openStandinPorts(standins, { queues: ["kiln-base", "kiln-refine"], maxReceives: 5 });
  return {
    ports,
    close: async () => {
      await ports.close();
      await standins.stop();
    },
  };
});

describe("local submit is one transaction", () => {
  it("when the stage-0 message cannot be stored, the job is not stored either", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-outbox-"));
    const ports = openLocalPorts({ dataDir: dir, publicBaseUrl: "http://127.0.0.1", urlSecret: "s", maxReceives: 5 });
    try {
      assert.ok(ports.jobs.createWithMessages, "the local family commits job and message together");
      // Another process makes the queue refuse inserts (as a full disk would, after the job row went in).
      const db = new Database(path.join(dir, "kiln.db"));
      db.exec("CREATE TRIGGER refuse BEFORE INSERT ON queue_messages BEGIN SELECT RAISE(ABORT, 'refused'); END");
      const job = newJob(new Date());
      await assert.rejects(createQueuedJob(ports, job, { now: new Date() }), /refused/);
      assert.equal(await ports.jobs.get(job.id), null, "no job without its message");
      db.exec("DROP TRIGGER refuse");
      db.close();
      // Other writes of the same batch are not rolled back with it.
      const other = newJob(new Date());
      const [a, b] = await Promise.allSettled([
        createQueuedJob(ports, other, { now: new Date() }),
        ports.queue.send("kiln-refine", { x: 1 }),
      ]);
      assert.equal(a.status, "fulfilled");
      assert.equal(b.status, "fulfilled");
      assert.deepEqual(await drain(ports), [other.id]);
    } finally {
      await ports.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
