import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { openTempLocalPorts } from "@kiln/shared/testing";

import { expiresAtOnEnd, retentionEnd, sweepExpiredJobs } from "../../src/renders/retention.js";
import { jobRecord } from "../fixtures.js";

const T0 = Date.parse("2030-01-01T00:00:00Z") / 1000;

describe("retention", () => {
  it("counts from the end of the job: finishedAt plus (expiresAt − createdAt)", () => {
    const job = jobRecord({}, { status: "succeeded", expiresAt: T0 + 3600, finishedAt: "2030-01-01T02:00:00Z" });
    assert.equal(retentionEnd(job), T0 + 2 * 3600 + 3600);
    assert.equal(retentionEnd({ ...job, status: "running" }), undefined);
    assert.equal(expiresAtOnEnd(job, new Date("2030-01-01T05:00:00Z")), T0 + 6 * 3600);
  });

  it("sweeps ended jobs past retention (blobs, then record) and leaves the rest", async () => {
    const local = openTempLocalPorts({ prefix: "kiln-sweep-", maxReceives: 3 });
    const ports = local.ports;
    try {
      const jobs = {
        old: jobRecord(
          {},
          { id: "job_old", status: "succeeded", expiresAt: T0 + 3600, finishedAt: "2030-01-01T00:10:00Z" },
        ),
        slow: jobRecord(
          {},
          { id: "job_slow", status: "failed", expiresAt: T0 + 3600, finishedAt: "2030-01-01T05:00:00Z" },
        ),
        running: jobRecord({}, { id: "job_running", status: "running", expiresAt: T0 + 3600 }),
        fresh: jobRecord(
          {},
          { id: "job_fresh", status: "succeeded", expiresAt: T0 + 100 * 3600, finishedAt: "2030-01-01T00:10:00Z" },
        ),
      };
      for (const job of Object.values(jobs)) {
        await ports.jobs.create(job);
        await ports.blobs.put(`jobs/${job.id}/images/0.png`, Uint8Array.of(1));
        await ports.blobs.put(`jobs/${job.id}/stage-0.latents`, Uint8Array.of(2));
      }
      const result = await sweepExpiredJobs(ports, { now: new Date("2030-01-01T03:00:00Z") });
      assert.deepEqual(result, { deletedJobs: ["job_old"], deletedBlobs: 2 });
      assert.equal(await ports.jobs.get("job_old"), null);
      assert.deepEqual(await ports.blobs.list("jobs/job_old/"), []);
      for (const id of ["job_slow", "job_running", "job_fresh"]) {
        assert.ok(await ports.jobs.get(id), id);
        assert.equal((await ports.blobs.list(`jobs/${id}/`)).length, 2, id);
      }
      const later = await sweepExpiredJobs(ports, { now: new Date("2030-01-01T06:00:01Z") });
      assert.deepEqual(later.deletedJobs, ["job_slow"]);
    } finally {
      await local.close();
    }
  });
});
