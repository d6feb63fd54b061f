/**
 * Per-manifest schedules on EventBridge Scheduler, against a loopback stand-in speaking its
 * REST-JSON protocol, driven by the AWS SDK: PUT /v1/manifests creates (then replaces) one cron
 * schedule in the manifest's zone and one for its warm-up, DELETE removes them, what EventBridge
 * cannot express is a 400 naming the field, a scheduler outage a 503 with nothing stored. The
 * stand-in's own fire times (croner over the expression Kiln sent) must equal the manifest's,
 * across a DST change; its inputs, given to the trigger, start the run and the warm-up.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { SchedulerClient } from "@aws-sdk/client-scheduler";
import { createApiKey, WARMUP_QUEUE } from "@kiln/shared";

import { createApp } from "../../packages/api/src/app.js";
import type { BatchDeps } from "../../packages/api/src/batches/batch-service.js";
import { scheduleNames } from "../../packages/api/src/batches/manifest-schedules.js";
import { batchDepsFrom } from "../../packages/api/src/batches/routes.js";
import { nextFires } from "../../packages/api/src/batches/schedule.js";
import { type BatchTriggerEvent, handleBatchTrigger } from "../../packages/api/src/batches/trigger.js";
import { EventBridgeManifestSchedules } from "../../packages/api/src/entry/eventbridge-schedules.js";
import { batchApiDeps, openLocalBatchPorts } from "../support/batch-fixture.js";
import { type SchedulerStandIn, startSchedulerStandIn } from "../support/scheduler-standin.js";

const GROUP = "kiln-batch";
const TRIGGER = "arn:aws:lambda:us-east-1:123456789012:function:kiln-batch-trigger";
const ROLE = "arn:aws:iam::123456789012:role/kiln-batch-scheduler";

describe("batch schedules on EventBridge Scheduler (stand-in)", () => {
  let local: ReturnType<typeof openLocalBatchPorts>;
  let standin: SchedulerStandIn;
  let app: ReturnType<typeof createApp>;
  let batch: BatchDeps;
  let auth: Record<string, string>;
  let keyId: string;

  before(async () => {
    local = openLocalBatchPorts("batch-schedules");
    standin = await startSchedulerStandIn();
    const schedules = new EventBridgeManifestSchedules({
      group: GROUP,
      roleArn: ROLE,
      targetArn: TRIGGER,
      region: "us-east-1",
      client: new SchedulerClient({
        region: "us-east-1",
        endpoint: standin.url,
        credentials: { accessKeyId: "test", secretAccessKey: "test" },
        maxAttempts: 1,
      }),
    });
    const deps = batchApiDeps(local.ports, { batches: { window: 10, stepSeconds: 0.1, schedules } });
    app = createApp(deps);
    batch = batchDepsFrom(deps, deps.batches);
    const created = await createApiKey(local.ports.keys, { name: "schedules", scopes: ["render"] });
    keyId = created.record.id;
    auth = { authorization: `Bearer ${created.key}`, "content-type": "application/yaml" };
  });
  after(async () => {
    await standin.close();
    await local.close();
  });

  const manifest = (schedule: string) => `id: nightly
schedule:
${schedule}
defaults: { steps: 2, width: 64, height: 64, mode: base }
prompts: [a chair, a lamp]
seeds: [1, 2, 3]
`;
  const put = (body: string) => app.request("/v1/manifests/nightly", { method: "PUT", headers: auth, body });

  it("PUT creates the fire and warm-up schedules; their fire times are the manifest's across DST", async () => {
    const res = await put(manifest(`  cron: "30 2 * * 1-5"\n  timezone: Europe/Berlin\n  warmup_minutes: 20`));
    assert.equal(res.status, 201, await res.clone().text());
    const names = await scheduleNames(keyId, "nightly");
    const fire = standin.schedules.get(`${GROUP}/${names.fire}`)!;
    const warm = standin.schedules.get(`${GROUP}/${names.warmup}`)!;
    assert.equal(fire.ScheduleExpression, "cron(30 2 ? * MON,TUE,WED,THU,FRI *)");
    assert.equal(fire.ScheduleExpressionTimezone, "Europe/Berlin");
    assert.deepEqual([fire.Target.Arn, fire.Target.RoleArn], [TRIGGER, ROLE]);
    assert.deepEqual(fire.FlexibleTimeWindow, { Mode: "OFF" });
    assert.equal(warm.ScheduleExpression, "cron(10 2 ? * MON,TUE,WED,THU,FRI *)");

    // 2026-10-25 is the end of summer time in Berlin: 02:30 is 00:30Z before it and 01:30Z after.
    const from = new Date("2026-10-21T00:00:00Z");
    const expected = nextFires({ cron: "30 2 * * 1-5", timezone: "Europe/Berlin" }, from, 6);
    const fires = standin.nextFires(GROUP, names.fire, from, 6);
    assert.deepEqual(fires, expected);
    assert.deepEqual(
      fires.map((d) => d.toISOString().slice(11, 16)),
      ["00:30", "00:30", "00:30", "01:30", "01:30", "01:30"],
    );
    assert.deepEqual(
      standin.nextFires(GROUP, names.warmup, from, 6).map((d) => d.getTime() + 20 * 60_000),
      expected.map((d) => d.getTime()),
    );
  });

  it("the schedules' inputs, given to the trigger, warm the fleet up and then start the run", async () => {
    const names = await scheduleNames(keyId, "nightly");
    const fireAt = new Date("2026-10-26T01:30:00Z");
    const warmInput = standin.inputAt(GROUP, names.warmup, new Date(fireAt.getTime() - 20 * 60_000));
    const warmed = await handleBatchTrigger(batch, warmInput as BatchTriggerEvent);
    assert.deepEqual(
      warmed.warmups?.map((w) => [w.fireAt, w.messages]),
      [[fireAt.toISOString(), 6]],
    );
    // A retried warm-up sends nothing more.
    await handleBatchTrigger(batch, warmInput as BatchTriggerEvent);
    assert.equal((await local.ports.queue.depth(WARMUP_QUEUE)).visible, 6);

    const fired = await handleBatchTrigger(batch, standin.inputAt(GROUP, names.fire, fireAt) as BatchTriggerEvent);
    assert.equal(fired.fired[0]!.created, true);
    assert.equal((await local.ports.queue.depth("kiln-base-batch")).visible, 6);
    assert.equal((await local.ports.queue.depth(WARMUP_QUEUE)).visible, 0, "the fire cleared its warm-up");
  });

  it("a second PUT replaces the schedule and removes a warm-up no longer asked for", async () => {
    standin.calls.length = 0;
    const res = await put(manifest(`  cron: "0 6 * * *"\n  timezone: America/New_York`));
    assert.equal(res.status, 200);
    const names = await scheduleNames(keyId, "nightly");
    assert.deepEqual(standin.calls, [
      { method: "POST", name: names.fire },
      { method: "PUT", name: names.fire },
      { method: "DELETE", name: names.warmup },
    ]);
    assert.equal(standin.schedules.get(`${GROUP}/${names.fire}`)!.ScheduleExpression, "cron(0 6 * * ? *)");
    assert.equal(standin.schedules.has(`${GROUP}/${names.warmup}`), false);
  });

  it("what EventBridge cannot express is a 400 naming the field; nothing changes", async () => {
    const before = JSON.stringify([...standin.schedules]);
    const both = await put(manifest(`  cron: "0 2 1 * 1"`));
    assert.equal(both.status, 400);
    const e1 = (await both.json()) as { errors: { field: string; message: string; line?: number }[] };
    assert.equal(e1.errors[0]!.field, "$.schedule.cron");
    assert.match(e1.errors[0]!.message, /day of month OR day of week/);
    assert.equal(e1.errors[0]!.line, 3);
    const warm = await put(manifest(`  cron: "0 0 1 * *"\n  warmup_minutes: 30`));
    assert.equal(warm.status, 400);
    const e2 = (await warm.json()) as { errors: { field: string }[] };
    assert.equal(e2.errors[0]!.field, "$.schedule.warmup_minutes");
    assert.equal(JSON.stringify([...standin.schedules]), before);
  });

  it("a scheduler outage is a 503 and the manifest is not replaced", async () => {
    standin.failNext(500, "InternalServerException");
    const res = await put(manifest(`  cron: "15 4 * * *"`));
    assert.equal(res.status, 503);
    const stored = (await (await app.request("/v1/manifests/nightly", { headers: auth })).json()) as {
      manifest: { schedule: { cron: string } };
    };
    assert.equal(stored.manifest.schedule.cron, "0 6 * * *");
  });

  it("DELETE removes the schedules; a schedule outliving its manifest removes itself when it fires", async () => {
    const names = await scheduleNames(keyId, "nightly");
    assert.equal((await app.request("/v1/manifests/nightly", { method: "DELETE", headers: auth })).status, 204);
    assert.equal(standin.schedules.has(`${GROUP}/${names.fire}`), false);

    // An orphan (as if the DELETE's schedule removal had failed).
    assert.equal((await put(manifest(`  cron: "0 6 * * *"`))).status, 201);
    const orphan = standin.inputAt(GROUP, names.fire, new Date("2026-12-01T11:00:00Z")) as BatchTriggerEvent;
    await local.ports.blobs.delete(`batches/${keyId}/manifests/nightly.json`);
    const result = await handleBatchTrigger(batch, orphan);
    assert.equal(result.fired[0]!.error, "the manifest was deleted");
    assert.equal(standin.schedules.has(`${GROUP}/${names.fire}`), false);
  });
});
