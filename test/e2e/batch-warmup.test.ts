/**
 * The warm-up on the embedded trigger: a manifest with `warmup_minutes` gets, at its fire time
 * minus the warm-up, as many messages on the warm-up queue as its run will first put in the batch
 * lane (what the fleet's autoscaling counts); once however many ticks see it; cleared by the fire.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { type Ports, WARMUP_QUEUE } from "@kiln/shared";

import { schedulerTick } from "../../packages/api/src/batches/schedule.js";
import { batchKey, batchTestDeps, openLocalBatchPorts, storeManifest, tinyManifest } from "../support/batch-fixture.js";

describe("batch warm-up (embedded trigger)", () => {
  let local: ReturnType<typeof openLocalBatchPorts>;
  let ports: Ports;

  before(() => {
    local = openLocalBatchPorts("batch-warmup");
    ports = local.ports;
  });
  after(() => local.close());

  it("is sent warmup_minutes before the fire, once, sized to the run's first burst, and cleared by the fire", async () => {
    const keyId = await batchKey(ports);
    const manifest = tinyManifest({
      id: "dawn",
      schedule: { cron: "0 6 * * *", timezone: "Europe/Berlin", warmup_minutes: 15 },
      prompts: ["a cup", "a jug"],
      seeds: Array.from({ length: 10 }, (_, i) => i),
    });
    await storeManifest(ports, keyId, manifest, new Date("2026-12-01T00:00:00Z"));
    const deps = batchTestDeps(ports, { window: 8 });
    const depth = async () => (await ports.queue.depth(WARMUP_QUEUE)).visible;

    // 06:00 in Berlin is 05:00Z in December: the warm-up is due at 04:45Z.
    await schedulerTick(deps, new Date("2026-12-02T04:44:00Z"));
    assert.equal(await depth(), 0, "not before its time");
    await schedulerTick(deps, new Date("2026-12-02T04:45:30Z"));
    assert.equal(await depth(), 8, "20 renders, a window of 8: eight messages");
    await schedulerTick(deps, new Date("2026-12-02T04:50:00Z"));
    assert.equal(await depth(), 8, "a later tick sends no second warm-up");
    assert.equal((await ports.queue.depth("kiln-base-batch")).visible, 0, "no render yet");

    const fired = await schedulerTick(deps, new Date("2026-12-02T05:00:10Z"));
    assert.equal(fired.filter((f) => f.created).length, 1);
    assert.equal(await depth(), 0, "the fire cleared its warm-up");
    assert.equal((await ports.queue.depth("kiln-base-batch")).visible, 8);
  });
});
