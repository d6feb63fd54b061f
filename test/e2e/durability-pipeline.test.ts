/**
 * The pipelined worker under kill -9, on real `kiln worker` processes (local family): a worker holding one
 * stage on the GPU and the next message claimed ahead (prompt encoded, waiting at the `gpu-wait` pause point)
 * dies; both messages come back after their visibility timeout and each job ends `succeeded` exactly once
 * with the images of a fault-free run.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { queueForStage } from "@kiln/shared";

import {
  assertOneResult,
  type Family,
  killAllWorkers,
  type Namespace,
  spawnWorker,
  startFamily,
  submitJob,
  waitForQueuesEmpty,
} from "../support/durability-harness.js";
import { PauseControl } from "../support/pause-control.js";

const FIRST = { prompt: "a lighthouse in a storm", mode: "ensemble", width: 256, height: 256, steps: 20, seed: 3 };
const SECOND = { prompt: "a small boat", mode: "ensemble", width: 256, height: 256, steps: 20, seed: 4 };

describe("durability of the pipelined worker (local family)", { timeout: 900_000 }, () => {
  let family: Family;
  let ns: Namespace;
  const hooks = new PauseControl();

  before(async () => {
    family = await startFamily("local");
    ns = await family.open({ visibilitySeconds: 3 });
  });
  after(async () => {
    hooks.remove();
    await killAllWorkers();
    await ns?.close();
    await family?.stop();
  });

  it("kill -9 with a message claimed ahead: both come back after the visibility timeout; one result each", async () => {
    hooks.arm("stage0-step5");
    const victim = await spawnWorker(ns, hooks.env);
    const first = await submitJob(ns.ports, FIRST);
    const held = await hooks.paused("stage0-step5");
    assert.equal(held.info.jobId, first.id);
    hooks.arm("gpu-wait");
    const second = await submitJob(ns.ports, SECOND);
    const waiting = await hooks.paused("gpu-wait");
    assert.equal(waiting.info.jobId, second.id, "the second job was claimed ahead and waits for the GPU");
    assert.equal(waiting.pid, victim.pid);

    victim.signal("SIGKILL");
    assert.equal((await victim.exited).signal, "SIGKILL");
    assert.equal((await ns.ports.jobs.get(second.id))!.status, "running", "claimed, then its worker died");
    // Claimed or already back (their 3 s visibility may pass while this runs on a loaded machine), but both there:
    // a kill acknowledges nothing.
    const depth = await ns.ports.queue.depth(queueForStage("base"));
    assert.equal(depth.inFlight + depth.visible, 2, "both messages still in the queue, neither acknowledged");

    const survivor = await spawnWorker(ns);
    await assertOneResult(ns, first, FIRST);
    await assertOneResult(ns, second, SECOND);
    await waitForQueuesEmpty(ns);
    await survivor.stop();
  });
});
