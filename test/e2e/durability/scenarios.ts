/**
 * Durability under faults, on real `kiln worker` processes: each case breaks something for real
 * (SIGKILL, a duplicate message, a damaged blob, stores that refuse service, SIGTERM) and checks
 * what a user would see — the job ends `succeeded` exactly once with the images a fault-free run
 * gives, or fails with a clear code — and that nothing is left behind on the queues.
 *
 * Worker processes take seconds to start, so the cases share one namespace and a pool of workers
 * and run in order; each case leaves the pool as the next expects (the kill and the SIGTERM cases
 * take a worker out of it).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { blobKeys, enqueueStage, type JobRecord, queueForStage, stageMessage } from "@kiln/shared";
import Database from "better-sqlite3";

import {
  assertOneResult as assertResult,
  type ChildWorker,
  eventLog,
  type Family,
  type FamilyName,
  handOverDamaged,
  isEnded,
  killAllWorkers,
  metricSum,
  type Namespace,
  spawnWorker,
  startFamily,
  storedImages,
  submitJob,
  waitFor,
  waitForJob,
} from "../../support/durability-harness.js";
import { PauseControl, type Paused } from "../../support/pause-control.js";

/** Long enough to stop a worker mid-stage: the base stage runs 116 steps (≈1 s alone on 2 cores). */
const LONG = {
  prompt: "a lighthouse in a storm",
  mode: "ensemble",
  width: 768,
  height: 768,
  steps: 150,
  seed: 7,
} as const;
const SHORT = { prompt: "a small boat", mode: "ensemble", width: 256, height: 256, steps: 20, seed: 11 } as const;
const VISIBILITY_SECONDS = 5;
/** Where held stages wait: early in the base stage's 116 steps. */
const MID_STEP = 10;

export function describeDurability(name: FamilyName): void {
  describe(`durability on the ${name} family`, { timeout: 900_000 }, () => {
    let family: Family;
    let ns: Namespace;
    let pool: ChildWorker[] = [];
    const hooks = new PauseControl();
    const spawn = (env: Record<string, string> = {}) => spawnWorker(ns, { ...hooks.env, ...env });

    before(async () => {
      family = await startFamily(name);
      // Proxied: on AWS every worker reaches the stand-ins through proxies the outage case pauses.
      ns = await family.open({ visibilitySeconds: VISIBILITY_SECONDS, proxied: true });
      pool = await Promise.all([spawn(), spawn(), spawn()]);
    });
    after(async () => {
      hooks.remove();
      await killAllWorkers();
      await ns?.close();
      await family?.stop();
    });

    const poolMetric = async (metric: string, labels: Record<string, string> = {}) =>
      (
        await Promise.all(pool.filter((w) => w.alive()).map(async (w) => metricSum(await w.metrics(), metric, labels)))
      ).reduce((a, b) => a + b, 0);

    /** One `succeeded` transition, the images of a fault-free run, nothing left on the queues. */
    const assertOneResult = (job: JobRecord, body: Record<string, unknown>) =>
      assertResult(ns, job, body, { queuesEmpty: true });

    /**
     * Submits `body` with its stage 0 held at step `MID_STEP` by a pause point: the worker stops
     * there, its progress recorded, until `paused.release()` (or a signal). Before pause points,
     * this polled for progress and, under load, raced the stage: a worker whose progress writes
     * were paused after the outage case (BestEffortWrites shuts them for 5 s after a failure) could
     * finish the whole stage before any progress showed.
     */
    async function startHeld(body: Record<string, unknown>): Promise<{ job: JobRecord; paused: Paused }> {
      const point = `stage0-step${MID_STEP}`;
      hooks.arm(point);
      const submitted = await submitJob(ns.ports, body);
      const paused = await hooks.paused(point);
      assert.equal(paused.info.jobId, submitted.id, "the held stage is this job's");
      const job = await waitForJob(
        ns,
        submitted.id,
        (j) => j.status === "running" && j.progress?.stage === 0 && j.progress.step === MID_STEP,
        `stage 0 of ${submitted.id} to show it is held mid-way`,
      );
      return { job, paused };
    }

    const ranBy = (job: JobRecord, stage: number, workers: ChildWorker[]) =>
      workers.find((w) => job.stageTimings.find((t) => t.stage === stage)?.worker?.startsWith(w.idPrefix));

    it("kill -9 mid-stage: another worker re-runs the stage after the visibility timeout; one result", async () => {
      const { job: held } = await startHeld(LONG);
      const job = held;
      const victim = ranBy(held, 0, pool);
      assert.ok(victim, "the stage runs on a pool worker");
      victim.signal("SIGKILL");
      assert.equal((await victim.exited).signal, "SIGKILL");
      pool = pool.filter((w) => w !== victim);
      const killed = (await ns.ports.jobs.get(job.id))!;
      assert.equal(killed.status, "running");
      assert.ok(killed.progress!.step < killed.progress!.steps, "killed before the stage finished");
      assert.equal(await ns.ports.blobs.head(blobKeys.latents(job.id, 0)), null, "no hand-over was written");

      const done = await assertOneResult(job, LONG);
      assert.ok(ranBy(done, 0, pool), "a surviving worker re-ran the killed stage");
    });

    it("the same stage message delivered twice at once to two workers: one result", async () => {
      const before = await poolMetric("kiln_stage_deliveries_total", { kind: "base" });
      const body = { ...SHORT, width: 512, height: 512, steps: 30 };
      const job = await submitJob(ns.ports, body);
      await enqueueStage(ns.ports.queue, stageMessage(job.id, job.plan, 0));
      await assertOneResult(job, body);
      assert.equal(
        new Set(
          eventLog(ns)
            .filter((e) => e.jobId === job.id && e.type === "started")
            .map((e) => e.version),
        ).size,
        1,
        "one started transition",
      );
      assert.ok(
        (await poolMetric("kiln_stage_deliveries_total", { kind: "base" })) - before >= 2,
        "both copies were delivered",
      );
    });

    it("damaged latents: flipped or truncated → detected, the producer re-runs; an unknown version → the job fails with that code, no image", async () => {
      const corruptBefore = await poolMetric("kiln_stage_failures_total", { code: "latents_corrupt" });
      const flipped = { ...SHORT, prompt: "flipped" };
      const truncated = { ...SHORT, prompt: "truncated" };
      const jobs = {
        flipped: await handOverDamaged(ns.ports, flipped, (b) => {
          const copy = new Uint8Array(b);
          copy[copy.length - 32 - 100]! ^= 0x10;
          return copy;
        }),
        truncated: await handOverDamaged(ns.ports, truncated, (b) => b.subarray(0, Math.floor(b.length / 2))),
        version: await handOverDamaged(ns.ports, { ...SHORT, prompt: "from the future" }, (b) => {
          const copy = new Uint8Array(b);
          copy[4] = 99;
          return copy;
        }),
      };
      for (const [job, body] of [
        [jobs.flipped, flipped],
        [jobs.truncated, truncated],
      ] as const) {
        const done = await assertOneResult(job, body);
        assert.equal(done.recoveries, 1, `${body.prompt}: the producing stage ran again once`);
      }
      const failed = await waitForJob(ns, jobs.version.id, isEnded, "the unknown-version job to end");
      assert.equal(failed.status, "failed");
      assert.equal(failed.error?.code, "latents_version_unsupported");
      assert.match(failed.error!.message, /format version 99/);
      assert.deepEqual(await storedImages(ns.ports, failed), [], "no image from unusable latents");
      assert.equal((await poolMetric("kiln_stage_failures_total", { code: "latents_corrupt" })) - corruptBefore, 2);
    });

    it("the queue and stores refusing service for a few seconds: backoff, recovery, nothing lost", async () => {
      const retriesBefore = await poolMetric("kiln_io_retries_total");
      const { job, paused } = await startHeld(LONG);
      // Hold the stage again after its last step, so the outage meets the calls its hand-over needs however slowly
      // the steps run on a loaded machine (the wait below is for those calls, not for the steps).
      const last = `stage0-step${job.progress!.steps}`;
      hooks.arm(last);
      paused.release();
      const end = await hooks.paused(last, 600_000);
      assert.equal(end.info.jobId, job.id);
      const retried = () =>
        pool.some((w) =>
          w.logs.some((l) => l.msg === "queue or store call failed transiently; retrying" && Number(l.time) >= started),
        );
      const started = Date.now();
      const restore = await refuseService(ns);
      end.release();
      // At least 4 s, and until a worker has had to retry a call its stage needs (the hand-over).
      await waitFor(
        "a worker to retry a store call",
        async () => Date.now() - started >= 4_000 && retried(),
        120_000,
        50,
      ).finally(restore);
      await assertOneResult(job, LONG);
      assert.ok((await poolMetric("kiln_io_retries_total")) > retriesBefore);
    });

    it("SIGTERM mid-stage with grace to spare: the stage finishes, the worker exits 0, another refines", async () => {
      const { job, paused } = await startHeld(LONG);
      const draining = ranBy(job, 0, pool);
      assert.ok(draining);
      draining.signal("SIGTERM");
      paused.release();
      assert.deepEqual(await draining.exited, { code: 0, signal: null });
      const done = await assertOneResult(job, LONG);
      assert.equal(ranBy(done, 0, [draining]), draining, "the draining worker finished its stage");
      assert.ok(
        ranBy(
          done,
          1,
          pool.filter((w) => w !== draining),
        ),
        "another worker refined",
      );
      pool = pool.filter((w) => w !== draining);
    });

    it("SIGTERM mid-stage when the grace runs out: the message is released at once, the job is queued again, the worker exits 0", async () => {
      // An idle worker drains at once.
      for (const w of pool) w.signal("SIGTERM");
      for (const w of pool) assert.deepEqual(await w.exited, { code: 0, signal: null });
      const draining = await spawn({ KILN_DRAIN_SECONDS: "0", KILN_VISIBILITY_SECONDS: "60" });
      pool = [draining];
      const { job, paused } = await startHeld(LONG);
      draining.signal("SIGTERM");
      // Let the stage go on once the drain began: its 0 s grace timer fires before the held step
      // notices the release, so the stage stops at the next step boundary.
      await waitFor("the worker to start draining", async () =>
        draining.logs.some((l) => String(l.msg).startsWith("draining:")),
      );
      paused.release();
      assert.deepEqual(await draining.exited, { code: 0, signal: null });
      const released = (await ns.ports.jobs.get(job.id))!;
      assert.equal(released.status, "queued", "not left running");
      assert.deepEqual(
        await ns.ports.queue.depth(queueForStage("base")),
        { visible: 1, inFlight: 0, delayed: 0 },
        "released, not waiting out its 60 s visibility",
      );
      pool = [await spawn()];
      const done = await assertOneResult(job, LONG);
      assert.ok(ranBy(done, 0, pool), "a new worker ran it");
    });
  });
}

/**
 * Makes the namespace's stores refuse service; returns how to restore them. AWS: the TCP proxies
 * in front of the stand-ins stop listening and cut open connections. Local: another process (this
 * test) holds SQLite's write lock, so the workers' writes wait out the busy timeout and fail BUSY.
 */
async function refuseService(ns: Namespace): Promise<() => Promise<void>> {
  if (ns.proxies) {
    for (const proxy of ns.proxies) await proxy.pause();
    return async () => {
      for (const proxy of ns.proxies!) await proxy.resume();
    };
  }
  const db = new Database(ns.databaseFile!);
  db.pragma("busy_timeout = 10000");
  db.exec("BEGIN EXCLUSIVE");
  return async () => {
    db.exec("COMMIT");
    db.close();
  };
}
