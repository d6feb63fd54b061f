/**
 * Crash-safe submit and the chaos run, on both families, with real `kiln api` and `kiln worker`
 * child processes killed with SIGKILL at exact pause points (KILN_TEST_HOOKS):
 *
 * 1. the API killed at each `submit:*` point, restarted, the same request retried with the same
 *    Idempotency-Key: one job, `succeeded`, images byte-identical to a fault-free render, the key's
 *    single job slot free again, nothing queued forever;
 * 2. a worker killed between a stored transition and its event (`event:before-tell`): the webhook
 *    is still delivered;
 * 3. the randomised chaos run: the API, the worker or both killed at random pause points during a
 *    bounded burst of submits with webhooks; every accepted job ends `succeeded` exactly once with
 *    the fault-free images, every webhook event arrives, no key is locked out.
 *
 * The chaos run is seeded (KILN_CHAOS_SEED, printed) so a failure reproduces; KILN_CHAOS_KILLS sets
 * the kill points across both families (default 100, half each).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it, type TestContext } from "node:test";

import { createApiKey, type JobRecord } from "@kiln/shared";

import { seededRandom } from "../../packages/cli/src/simulate/random.js";
import {
  type ChildKiln,
  type ChildWorker,
  eventLog,
  type Family,
  type FamilyName,
  isEnded,
  killAllWorkers,
  type Namespace,
  referenceImages,
  spawnKiln,
  spawnWorker,
  startFamily,
  storedImages,
  useKilnBin,
  waitFor,
  waitForJob,
  waitForQueuesEmpty,
} from "../support/durability-harness.js";
import { bundleKiln } from "../support/kiln-bundle.js";
import { PauseControl } from "../support/pause-control.js";
import { startWebhookReceiver, type WebhookReceiver } from "../support/webhook-receiver.js";

const TOTAL_KILLS = Number(process.env.KILN_CHAOS_KILLS ?? 100);
const SEED = Number(process.env.KILN_CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
/** Submits fired at each kill point of the chaos run. */
const BURST = 2;
/** The chaos key's job slots: tight enough that a leaked slot would show as a lockout at the end. */
const CHAOS_SLOTS = 4;

/** Where the API may be killed on each family (orchestration/submit-outbox.ts). */
const SUBMIT_POINTS: Record<FamilyName, string[]> = {
  local: ["submit:before-commit"],
  aws: ["submit:after-create", "submit:after-enqueue"],
};

/** Tiny, two stages (base 8 steps, refiner 2), so both stages have kill points. */
const bodyFor = (variant: number, webhook: string) => ({
  prompt: `a kiln in a storm, take ${variant % 4}`,
  mode: "ensemble",
  width: 64,
  height: 64,
  steps: 10,
  seed: 1 + (variant % 4),
  webhook: { url: webhook },
});
/** The parts of a body that decide its images (the webhook does not). */
const imageBody = (body: ReturnType<typeof bodyFor>) => {
  const { webhook: _webhook, ...rest } = body;
  return rest;
};

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Figures of one family's runs, for docs/operations.md. */
interface Figures {
  killPoints: number;
  byTarget: Record<string, number>;
  byPoint: Record<string, number>;
  jobs: number;
  lost: number;
  duplicated: number;
  stuck: number;
  webhooksMissing: number;
  retriedSubmits: number;
  wallSeconds: number;
}

function describeChaos(name: FamilyName, kills: number): void {
  describe(`crash-safe submit and chaos on the ${name} family`, { timeout: 1_500_000 }, () => {
    let family: Family;
    let ns: Namespace;
    let receiver: WebhookReceiver;
    /**
     * Processes: the API the client talks to, a warm spare API on another port (a restart costs
     * seconds of start-up; the spare takes over at once and a new spare starts behind it), and two
     * workers, each replaced in the background when killed.
     */
    let api: ChildKiln & { url: string };
    let spareApi: Promise<ChildKiln & { url: string }>;
    const workers = new Set<ChildWorker>();
    const starting = new Set<Promise<unknown>>();
    const hooks = new PauseControl();
    const keys: Record<"slot" | "chaos", { id: string; bearer: string }> = {} as never;
    const spawnApi = async () => {
      const url = `http://127.0.0.1:${await freePort()}`;
      const child = await spawnKiln(
        "api",
        {
          ...ns.env,
          ...hooks.env,
          PORT: url.split(":").pop()!,
          KILN_PUBLIC_URL: url,
          KILN_MIN_SIDE: "64",
          KILN_WEBHOOK_ALLOW_PRIVATE: "true",
        },
        "API listening",
      );
      return Object.assign(child, { url });
    };
    const addWorker = () => {
      const started = spawnWorker(ns, {
        ...hooks.env,
        KILN_WEBHOOK_ALLOW_PRIVATE: "true",
        KILN_WEBHOOK_BACKOFF_SECONDS: "1",
        // A webhook attempt in flight when its worker dies comes back after this + 30 s.
        KILN_WEBHOOK_TIMEOUT_SECONDS: "2",
      }).then((w) => void workers.add(w));
      starting.add(started);
      void started.finally(() => starting.delete(started));
      return started;
    };
    /** Kills a child where a pause point holds it and waits for it to be gone. */
    async function kill(child: ChildKiln | ChildWorker) {
      child.signal("SIGKILL");
      assert.equal((await child.exited).signal, "SIGKILL");
    }
    /** The spare becomes the API (the client follows it), then the old one dies and a new spare starts. */
    async function replaceApi() {
      const old = api;
      api = await spareApi;
      spareApi = spawnApi();
      spareApi.catch(() => undefined);
      await kill(old);
    }
    async function replaceSpare() {
      const old = await spareApi;
      spareApi = spawnApi();
      spareApi.catch(() => undefined);
      await kill(old);
    }
    async function killWorker(worker: ChildWorker) {
      workers.delete(worker);
      await kill(worker);
      void addWorker();
    }
    const workerHolding = (pid: number) => [...workers].find((w) => w.pid === pid);

    before(async () => {
      family = await startFamily(name);
      // A short visibility timeout: a killed worker's stage comes back within seconds.
      ns = await family.open({ visibilitySeconds: 3, maxReceives: 100 });
      receiver = await startWebhookReceiver();
      for (const [role, limits] of [
        ["slot", { concurrentJobs: 1 }],
        ["chaos", { concurrentJobs: CHAOS_SLOTS }],
      ] as const) {
        const { key, record } = await createApiKey(ns.ports.keys, { name: role, scopes: ["render"], limits });
        keys[role] = { id: record.id, bearer: key };
      }
      spareApi = spawnApi();
      [api] = await Promise.all([spawnApi(), spareApi, addWorker(), addWorker()]);
    });
    after(async () => {
      hooks.remove();
      await Promise.allSettled([...starting]);
      await api?.stop();
      await (await spareApi.catch(() => undefined))?.stop();
      await killAllWorkers();
      await receiver?.close();
      await ns?.close();
      await family?.stop();
    });

    /**
     * POSTs the render until it is accepted, as a careful client does: the same Idempotency-Key on
     * every attempt; a dropped connection (the API killed) or a refused one (not yet restarted), 409
     * (the first attempt's claim not yet lapsed), 429 (a slot not yet free) or 5xx are retried.
     */
    async function submitUntilAccepted(
      key: { bearer: string },
      idempotencyKey: string,
      body: Record<string, unknown>,
      timeoutMs = 180_000,
    ): Promise<{ id: string; attempts: number; status: number }> {
      const deadline = Date.now() + timeoutMs;
      for (let attempts = 1; ; attempts++) {
        let wait = 200;
        try {
          const res = await fetch(`${api.url}/v1/renders`, {
            method: "POST",
            headers: {
              authorization: `Bearer ${key.bearer}`,
              "content-type": "application/json",
              "idempotency-key": idempotencyKey,
            },
            body: JSON.stringify(body),
            signal: AbortSignal.timeout(60_000),
          });
          const text = await res.text();
          if (res.status >= 200 && res.status < 300)
            return { id: (JSON.parse(text) as { id: string }).id, attempts, status: res.status };
          if (![409, 429, 500, 502, 503].includes(res.status))
            throw new Error(`submit answered ${res.status}: ${text}`);
          wait = Math.min(1000, Number(res.headers.get("retry-after") ?? 0.2) * 1000);
        } catch (e) {
          if (e instanceof Error && e.message.startsWith("submit answered")) throw e;
        }
        if (Date.now() > deadline) throw new Error(`submit ${idempotencyKey} not accepted in ${timeoutMs} ms`);
        await sleep(wait);
      }
    }

    const delivered = () => new Set(receiver.received.map((r) => String(r.headers["webhook-id"])));
    const short = (jobId: string) => jobId.replace(/^job_/, "");

    /** Every job ended `succeeded` once, with the fault-free images and its webhooks; returns the misses. */
    async function checkJobs(jobs: { id: string; body: ReturnType<typeof bodyFor> }[]) {
      const ended = await Promise.all(
        jobs.map((j) => waitForJob(ns, j.id, isEnded, `job ${j.id} to end`, 240_000).catch(() => null)),
      );
      const stuck = ended.filter((j) => !j || !isEnded(j)).length;
      for (const [i, job] of ended.entries()) {
        assert.ok(job, `job ${jobs[i]!.id} ended`);
        assert.equal(job.status, "succeeded", `${job.id}: ${JSON.stringify(job.error)}`);
        const reference = await referenceImages(imageBody(jobs[i]!.body));
        const stored = await storedImages(ns.ports, job);
        assert.equal(stored.length, reference.length, `${job.id}: one set of images`);
        stored.forEach((image, k) => assert.ok(image.equals(reference[k]!), `${job.id}: image ${k} byte-identical`));
      }
      // Events are at least once; a transition is a distinct version, so two would mean two transitions.
      const succeededVersions = (job: JobRecord) =>
        new Set(
          eventLog(ns)
            .filter((e) => e.jobId === job.id && e.type === "succeeded")
            .map((e) => e.version),
        );
      await waitFor(
        "every succeeded transition in the event log",
        async () => ended.every((j) => succeededVersions(j!).size > 0),
        60_000,
        200,
      );
      const duplicated = ended.filter((j) => succeededVersions(j!).size > 1).length;
      // Every webhook event (started, succeeded) of every job reaches the receiver at least once.
      const wanted = jobs.flatMap((j) => [`msg_${short(j.id)}_started`, `msg_${short(j.id)}_succeeded`]);
      await waitFor(
        "every webhook event at the receiver",
        async () =>
          (() => {
            const got = delivered();
            return wanted.every((w) => got.has(w));
          })(),
        120_000,
        200,
      ).catch(() => undefined);
      const got = delivered();
      const webhooksMissing = wanted.filter((w) => !got.has(w));
      assert.deepEqual(webhooksMissing, [], "every webhook event delivered at least once");
      assert.equal(duplicated, 0, "one succeeded transition per job");
      await waitForQueuesEmpty(ns);
      return { stuck, duplicated, webhooksMissing: webhooksMissing.length };
    }

    for (const point of SUBMIT_POINTS[name]) {
      it(`the API killed at ${point}, restarted, the request retried with its Idempotency-Key: one job, succeeded, fault-free images, the key's one slot free again`, async () => {
        const body = bodyFor(point.length, receiver.url);
        const idempotencyKey = `crash-${point}`;
        hooks.arm(point);
        // One attempt, no retry: it gets no answer, because the API dies holding it.
        const first = fetch(`${api.url}/v1/renders`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${keys.slot.bearer}`,
            "content-type": "application/json",
            "idempotency-key": idempotencyKey,
          },
          body: JSON.stringify(body),
        }).catch((e: unknown) => e);
        const paused = await hooks.paused(point);
        assert.equal(paused.pid, api.pid, "the API holds at the point");
        await replaceApi();
        assert.ok((await first) instanceof Error, "the first attempt got no answer");

        const accepted = await submitUntilAccepted(keys.slot, idempotencyKey, body);
        const owned = await ns.ports.jobs.listByOwner(keys.slot.id, { limit: 100 });
        assert.deepEqual(
          owned.jobs.filter((j) => j.plan.prompt === body.prompt).map((j) => j.id),
          [accepted.id],
          "exactly one job for the request",
        );
        await checkJobs([{ id: accepted.id, body }]);
        // Once the job ended, the key's single slot takes a new render: nothing leaked.
        const next = await submitUntilAccepted(keys.slot, `${idempotencyKey}-next`, body, 30_000);
        assert.notEqual(next.id, accepted.id);
        await checkJobs([{ id: next.id, body }]);
      });
    }

    // The point is reached only between a stored transition and the event it stored (the worker's progress
    // events, which are not in the outbox, pass it by), so the record holds exactly that event here.
    it("a worker killed between a stored transition and its event: the webhook is still delivered", async () => {
      const body = bodyFor(7, receiver.url);
      hooks.arm("event:before-tell");
      const accepted = await submitUntilAccepted(keys.slot, "event-kill", body);
      const paused = await hooks.paused("event:before-tell");
      const worker = workerHolding(paused.pid);
      assert.ok(worker, "a worker holds between the transition and the event");
      assert.equal(paused.info.jobId, accepted.id);
      assert.equal(paused.info.event, "started", "the first event a transition stores");
      const held = (await ns.ports.jobs.get(accepted.id))!;
      assert.deepEqual(held.eventsDue, [paused.info.event], "the event is stored with its transition");
      await killWorker(worker);
      await checkJobs([{ id: accepted.id, body }]);
    });

    it(`chaos: ${kills} random kill points of the API, the worker or both during a burst of submits with webhooks`, async (t: TestContext) => {
      const seed = SEED + (name === "aws" ? 1 : 0);
      t.diagnostic(`KILN_CHAOS_SEED=${SEED} (this family: ${seed}), ${kills} kill points`);
      const random = seededRandom(seed);
      const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)]!;
      const workerPoints = [1, 2, 3, 4, 5, 6]
        .map((s) => `stage0-step${s}`)
        .concat(["stage1-step1", "event:before-tell"]);
      const started = Date.now();
      const figures: Figures = {
        killPoints: 0,
        byTarget: {},
        byPoint: {},
        jobs: 0,
        lost: 0,
        duplicated: 0,
        stuck: 0,
        webhooksMissing: 0,
        retriedSubmits: 0,
        wallSeconds: 0,
      };
      const submits: Promise<{ id: string; attempts: number; body: ReturnType<typeof bodyFor> }>[] = [];
      let n = 0;
      for (let k = 0; k < kills; k++) {
        const target = pick(["api", "api", "worker", "worker", "both"] as const);
        const point =
          target === "api"
            ? pick(SUBMIT_POINTS[name])
            : target === "worker"
              ? pick(workerPoints)
              : pick([...SUBMIT_POINTS[name], ...workerPoints]);
        hooks.arm(point);
        for (let b = 0; b < BURST; b++) {
          const body = bodyFor(n, receiver.url);
          const idempotencyKey = `chaos-${seed}-${n++}`;
          submits.push(submitUntilAccepted(keys.chaos, idempotencyKey, body, 1_200_000).then((r) => ({ ...r, body })));
        }
        // Slow under load: the key's 4 slots hold admissions back while killed stages come back.
        const paused = await hooks.paused(point, 600_000);
        let worker = workerHolding(paused.pid);
        // A worker started after an earlier kill can claim a stage and reach a pause point before its "worker
        // polling" line has reached this process (under load the two arrive in either order): wait for the starting
        // workers to report, then look again.
        if (!worker && paused.pid !== api.pid) {
          await Promise.allSettled([...starting]);
          worker = workerHolding(paused.pid);
        }
        // The spare API runs the same sweeps as the serving one (events due, the submit outbox), so it can be the
        // process that reaches an event point first: then it is the API instance killed there.
        const spare = await spareApi;
        assert.ok(
          paused.pid === api.pid || paused.pid === spare.pid || worker,
          `the process held at ${point} (${paused.pid}) is the API, the spare API or a worker`,
        );
        const kills: Promise<void>[] = [];
        if (paused.pid === spare.pid) kills.push(replaceSpare());
        else if (paused.pid === api.pid || target === "both") kills.push(replaceApi());
        const victim = worker ?? (target === "both" ? [...workers][0] : undefined);
        if (victim) kills.push(killWorker(victim));
        await Promise.all(kills);
        figures.killPoints++;
        t.diagnostic(`kill ${k + 1} (${target} at ${point}) after ${Math.round((Date.now() - started) / 1000)} s`);
        figures.byTarget[target] = (figures.byTarget[target] ?? 0) + 1;
        figures.byPoint[point] = (figures.byPoint[point] ?? 0) + 1;
      }
      const accepted = await Promise.all(submits);
      t.diagnostic(`all accepted after ${Math.round((Date.now() - started) / 1000)} s`);
      figures.jobs = accepted.length;
      figures.retriedSubmits = accepted.filter((a) => a.attempts > 1).length;

      // Exactly one job per Idempotency-Key, and none the client was not told about.
      const ids = new Set(accepted.map((a) => a.id));
      assert.equal(ids.size, accepted.length, "one job per request");
      const owned: JobRecord[] = [];
      for (let cursor: string | undefined, first = true; first || cursor; first = false) {
        const page = await ns.ports.jobs.listByOwner(keys.chaos.id, { limit: 1000, cursor });
        owned.push(...page.jobs);
        cursor = page.nextCursor;
      }
      figures.duplicated = owned.filter((j) => !ids.has(j.id)).length;
      figures.lost = [...ids].filter((id) => !owned.some((j) => j.id === id)).length;
      const checked = await checkJobs(accepted.map((a) => ({ id: a.id, body: a.body })));
      figures.stuck = checked.stuck;
      figures.duplicated += checked.duplicated;
      figures.webhooksMissing = checked.webhooksMissing;
      assert.equal(figures.duplicated, 0, "no job the client was not told about");
      assert.equal(figures.lost, 0, "every accepted job is stored");
      t.diagnostic(`all checked after ${Math.round((Date.now() - started) / 1000)} s`);

      // No lockout: with every job ended, the key's CHAOS_SLOTS slots all take a render at once.
      const probes = await Promise.all(
        Array.from({ length: CHAOS_SLOTS }, (_, i) =>
          submitUntilAccepted(keys.chaos, `chaos-${seed}-probe-${i}`, bodyFor(i, receiver.url), 30_000),
        ),
      );
      await checkJobs(probes.map((p, i) => ({ id: p.id, body: bodyFor(i, receiver.url) })));
      figures.wallSeconds = Math.round((Date.now() - started) / 1000);
      t.diagnostic(`chaos figures (${name}): ${JSON.stringify(figures)}`);
      console.log(`chaos figures (${name}, seed ${seed}): ${JSON.stringify(figures)}`);
    });
  });
}

// A restart from one bundle costs a fraction of one through tsx; with ~100 restarts that decides the run's length.
let bundle: Awaited<ReturnType<typeof bundleKiln>> | undefined;
before(async () => {
  bundle = await bundleKiln();
  useKilnBin(bundle.file);
});
after(() => {
  useKilnBin(undefined);
  bundle?.remove();
});

describeChaos("local", Math.ceil(TOTAL_KILLS / 2));
describeChaos("aws", Math.floor(TOTAL_KILLS / 2));
