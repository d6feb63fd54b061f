/**
 * Batch runs on the AWS family, against the fauxqs (SQS + S3) and dynalite (DynamoDB) stand-ins:
 * the run records and markers in S3, the claims in DynamoDB, the batch lane on SQS. No worker runs
 * here: jobs are ended through the job store, as a worker would end them.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import type { Ports } from "@kiln/shared";

import { cancelRun, getRun, listRuns, pumpKey } from "../../packages/api/src/batches/batch-service.js";
import { fireManifest, takeTickLease } from "../../packages/api/src/batches/schedule.js";
import {
  type AwsStandins,
  openStandinPorts,
  startAwsStandins,
} from "../../packages/shared/test/support/aws-standins.js";
import { batchKey, batchTestDeps, storeManifest, tinyManifest } from "../support/batch-fixture.js";

describe("batch runs on the AWS family (stand-ins)", () => {
  let standins: AwsStandins;
  let ports: Ports;

  before(async () => {
    standins = await startAwsStandins();
    ({ ports } = await openStandinPorts(standins, {
      queues: ["kiln-base", "kiln-refine", "kiln-base-batch", "kiln-refine-batch", "kiln-webhooks"],
      maxReceives: 3,
    }));
  });
  after(async () => {
    await ports.close?.();
    await standins.stop();
  });

  it("a double fire makes one run; the lane, reruns and cancel work on SQS, S3 and DynamoDB", async () => {
    const deps = batchTestDeps(ports, { window: 4 });
    const keyId = await batchKey(ports, "aws");
    const manifest = tinyManifest({
      id: "nightly",
      schedule: { cron: "0 2 * * *", timezone: "Europe/Berlin" },
      prompts: ["a chair"],
      seeds: [1, 2, 3],
    });
    await storeManifest(ports, keyId, manifest);

    const at = new Date("2026-12-05T01:00:00Z");
    const fires = await Promise.all([1, 2, 3].map(() => fireManifest(deps, keyId, "nightly", at)));
    assert.equal(new Set(fires.map((f) => f.runId)).size, 1, JSON.stringify(fires));
    assert.equal(fires.filter((f) => f.created).length, 1, JSON.stringify(fires));
    assert.equal(await takeTickLease(deps, at, 5), true);
    assert.equal(await takeTickLease(deps, at, 5), false);

    const runId = fires[0]!.runId!;
    let run = (await getRun(deps, keyId, runId))!;
    assert.equal(run.renders.filter((r) => r.state === "submitted").length, 3);
    const depth = await ports.queue.depth("kiln-base-batch");
    assert.equal(depth.visible, 3);
    assert.equal((await ports.queue.depth("kiln-base")).visible, 0);

    // Two succeed and one fails, as a worker would record them.
    const [first, second, third] = run.renders;
    for (const r of [first!, second!])
      await ports.jobs.update(r.jobId, { status: ["queued"] }, { status: "succeeded" });
    await ports.jobs.update(third!.jobId, { status: ["queued"] }, { status: "failed" });
    await pumpKey(deps, keyId);
    run = (await getRun(deps, keyId, runId))!;
    assert.equal(run.status, "failed");
    assert.deepEqual([run.counts.succeeded, run.counts.failed], [2, 1]);
    assert.ok(run.indexKey && (await ports.blobs.head(run.indexKey)), "index.json written to S3");

    // The next night's fire renders only the failed one, as its second attempt.
    const next = await fireManifest(deps, keyId, "nightly", new Date("2026-12-06T01:00:00Z"));
    const rerun = (await getRun(deps, keyId, next.runId!))!;
    assert.deepEqual([rerun.counts.skipped, rerun.counts.new], [2, 1]);
    assert.equal(rerun.renders.find((r) => r.state !== "skipped")!.jobId, `${third!.key}_r2`);
    assert.equal((await cancelRun(deps, keyId, rerun.id))!.status, "canceled");
    assert.deepEqual((await listRuns(deps, keyId)).map((r) => r.status).sort(), ["canceled", "failed"]);
  });
});
