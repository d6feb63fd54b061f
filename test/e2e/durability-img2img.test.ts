/**
 * Durability of img2img jobs on real `kiln worker` processes, on both families: a worker killed mid-stage
 * (held exactly there by a pause point, then SIGKILL) and a stage message delivered twice both end with
 * exactly one `succeeded` result whose images are byte-identical to a fault-free run on the same stored
 * picture, and nothing left on the queues. Every stage and retry reads the picture the job stored once.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { blobKeys, enqueueStage, type JobRecord, stageMessage } from "@kiln/shared";
import sharp from "sharp";

import {
  type ChildWorker,
  eventLog,
  type Family,
  isEnded,
  killAllWorkers,
  metricSum,
  type Namespace,
  referenceImagesOf,
  spawnWorker,
  startFamily,
  storedImages,
  submitImageJob,
  waitFor,
  waitForJob,
  waitForQueuesEmpty,
} from "../support/durability-harness.js";
import { PauseControl } from "../support/pause-control.js";

const SIDE = 128;
/** img2img with the refiner's ensemble: stage 0 (base) starts from the picture, stage 1 refines the hand-over. */
const BODY = {
  prompt: "a lighthouse, oil painting",
  mode: "img2img",
  refiner: "ensemble",
  strength: 0.6,
  steps: 30,
  seed: 7,
} as const;
const MID_STEP = 3;
const VISIBILITY_SECONDS = 5;

for (const name of ["local", "aws"] as const)
  describe(`durability of img2img jobs on the ${name} family`, { timeout: 900_000 }, () => {
    let family: Family;
    let ns: Namespace;
    let pool: ChildWorker[] = [];
    let picture: { bytes: Uint8Array; width: number; height: number };
    const hooks = new PauseControl();

    before(async () => {
      const rgb = new Uint8Array(SIDE * SIDE * 3).map((_, i) => (i * 37 + (i >> 7) * 11) & 255);
      picture = {
        bytes: await sharp(rgb, { raw: { width: SIDE, height: SIDE, channels: 3 } })
          .png()
          .toBuffer(),
        width: SIDE,
        height: SIDE,
      };
      family = await startFamily(name);
      ns = await family.open({ visibilitySeconds: VISIBILITY_SECONDS });
      pool = await Promise.all([spawnWorker(ns, hooks.env), spawnWorker(ns, hooks.env)]);
    });
    after(async () => {
      hooks.remove();
      await killAllWorkers();
      await ns?.close();
      await family?.stop();
    });

    const ranBy = (job: JobRecord, stage: number) =>
      pool.find((w) => job.stageTimings.find((t) => t.stage === stage)?.worker?.startsWith(w.idPrefix));

    /** One `succeeded` transition, the images of a fault-free run on the same picture, empty queues. */
    async function assertOneResult(job: JobRecord): Promise<JobRecord> {
      const done = await waitForJob(ns, job.id, isEnded, `job ${job.id} to end`, 120_000);
      assert.equal(done.status, "succeeded", JSON.stringify(done.error));
      const transitions = () =>
        new Set(
          eventLog(ns)
            .filter((e) => e.jobId === job.id && e.type === "succeeded")
            .map((e) => e.version),
        );
      await waitFor("the succeeded event", async () => transitions().size > 0, 10_000);
      const reference = await referenceImagesOf(ns.ports, done);
      const stored = await storedImages(ns.ports, done);
      assert.equal(reference.length, 1);
      assert.equal(stored.length, 1, "one set of images");
      assert.ok(stored[0]!.equals(reference[0]!), "byte-identical to a fault-free render of the same picture");
      assert.deepEqual(
        await ns.ports.blobs.list(`jobs/${job.id}/inputs/`),
        [blobKeys.input(job.id, "image", "png")],
        "the picture is stored once",
      );
      await waitForQueuesEmpty(ns);
      assert.deepEqual([...transitions()], [done.version], "one succeeded transition");
      return done;
    }

    it("kill -9 mid-way through the img2img stage: another worker re-runs it from the stored picture; one result", async () => {
      const point = `stage0-step${MID_STEP}`;
      hooks.arm(point);
      const job = await submitImageJob(ns.ports, BODY, picture);
      assert.equal(job.plan.stages[0]!.start, "image", "stage 0 starts from the picture");
      assert.equal(job.plan.stages.length, 2);
      const paused = await hooks.paused(point);
      assert.equal(paused.info.jobId, job.id);
      const held = await waitForJob(
        ns,
        job.id,
        (j) => j.status === "running" && j.progress?.stage === 0 && j.progress.step === MID_STEP,
        "stage 0 to show it is held mid-way",
      );
      const victim = ranBy(held, 0);
      assert.ok(victim, "the stage runs on a pool worker");
      assert.equal(victim.pid, paused.pid);
      victim.signal("SIGKILL");
      assert.equal((await victim.exited).signal, "SIGKILL");
      pool = pool.filter((w) => w !== victim);
      assert.equal(await ns.ports.blobs.head(blobKeys.latents(job.id, 0)), null, "no hand-over was written");

      const done = await assertOneResult(job);
      assert.ok(ranBy(done, 0), "the surviving worker re-ran the killed stage");
      // The pool is one worker short now; the next case needs two consumers for its duplicate.
      pool.push(await spawnWorker(ns, hooks.env));
    });

    it("the img2img stage message delivered twice: one result", async () => {
      const deliveries = async () =>
        (
          await Promise.all(
            pool.map(async (w) => metricSum(await w.metrics(), "kiln_stage_deliveries_total", { kind: "base" })),
          )
        ).reduce((a, b) => a + b, 0);
      const before = await deliveries();
      const job = await submitImageJob(ns.ports, BODY, picture);
      await enqueueStage(ns.ports.queue, stageMessage(job.id, job.plan, 0));
      await assertOneResult(job);
      assert.equal(
        new Set(
          eventLog(ns)
            .filter((e) => e.jobId === job.id && e.type === "started")
            .map((e) => e.version),
        ).size,
        1,
        "one started transition",
      );
      assert.ok((await deliveries()) - before >= 2, "both copies were delivered");
    });
  });
