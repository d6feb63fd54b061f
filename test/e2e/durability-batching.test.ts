/**
 * Batching (KILN_WORKER_BATCH) under kill -9, on real `kiln worker` processes, on both families: a worker
 * holding three jobs' stages in one UNet batch (held mid-step by a pause point) dies; every message comes back
 * after its visibility timeout, a new worker (batching too) runs them, and each job ends `succeeded` exactly
 * once with the images the same job gives rendered alone in this process.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { type JobRecord, queueForStage } from "@kiln/shared";

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

const COMMON = { mode: "ensemble", width: 128, height: 128, steps: 12 } as const;
const BODIES = [
  { ...COMMON, prompt: "a lighthouse in a storm", seed: 3 },
  { ...COMMON, prompt: "a small boat", seed: 4, n: 2, guidance_scale: 7 },
  { ...COMMON, prompt: "a harbour at dawn", seed: 5, scheduler: "euler_a" },
];
const BATCH = { KILN_WORKER_BATCH: String(BODIES.length) };

for (const name of ["local", "aws"] as const)
  describe(`durability of batched stages on the ${name} family`, { timeout: 900_000 }, () => {
    let family: Family;
    let ns: Namespace;
    const hooks = new PauseControl();

    before(async () => {
      family = await startFamily(name);
      ns = await family.open({ visibilitySeconds: 3 });
    });
    after(async () => {
      hooks.remove();
      await killAllWorkers();
      await ns?.close();
      await family?.stop();
    });

    it("kill -9 mid-batch: every message comes back after its visibility timeout; one result each, as alone", async () => {
      // Queued before the worker starts, so its first receive claims all three together.
      const jobs: JobRecord[] = [];
      for (const body of BODIES) jobs.push(await submitJob(ns.ports, body));
      hooks.arm("stage0-step3");
      const victim = await spawnWorker(ns, { ...hooks.env, ...BATCH });
      const held = await hooks.paused("stage0-step3");
      assert.ok(
        jobs.some((j) => j.id === held.info.jobId),
        "a batched stage is held mid-step",
      );
      assert.equal(
        (await ns.ports.queue.depth(queueForStage("base"))).inFlight,
        BODIES.length,
        "all three claimed together",
      );
      for (const j of jobs) assert.equal((await ns.ports.jobs.get(j.id))!.status, "running", `${j.id} running`);

      victim.signal("SIGKILL");
      assert.equal((await victim.exited).signal, "SIGKILL");

      const survivor = await spawnWorker(ns, BATCH);
      for (const [i, job] of jobs.entries()) await assertOneResult(ns, job, BODIES[i]!);
      await waitForQueuesEmpty(ns);
      await survivor.stop();
    });
  });
