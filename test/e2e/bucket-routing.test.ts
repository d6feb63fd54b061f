/**
 * Resolution buckets, KILN_BUCKET_ROUTING=lanes: a job's stages travel in its bucket's queues, so a
 * worker advertising bucket set B only ever receives jobs of B (plus unbucketed sizes, which stay on
 * the shared queues every worker reads). Run on the local family (SQLite) and on the AWS family
 * against fauxqs (SQS + S3) and dynalite. Small buckets stand in for SDXL's, so the null executor
 * (no model) is enough: routing is the queue's business, not the model's.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { nullExecutor, Worker } from "@kiln/gpu-worker";
import {
  type BucketPolicy,
  bucketQueueDefinitions,
  createApiKey,
  DEFAULT_RENDER_LIMITS,
  type JobRecord,
  type Ports,
  renderRequestSchema,
  stageQueues,
} from "@kiln/shared";
import { openLocalPorts } from "@kiln/shared/local";
import { createLogger } from "@kiln/shared/node";

import { submitRender } from "../../packages/api/src/renders/render-service.js";
import {
  type AwsStandins,
  openStandinPorts,
  startAwsStandins,
} from "../../packages/shared/test/support/aws-standins.js";

const ROUTES = ["128x128", "256x128"];
const POLICY: BucketPolicy = {
  buckets: [
    { width: 128, height: 128 },
    { width: 256, height: 128 },
  ],
  strict: false,
  routeByBucket: true,
};

interface Family {
  name: string;
  open(): Promise<{ ports: Ports; close(): Promise<void> }>;
}

const families: Family[] = [
  {
    name: "local (SQLite)",
    async open() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-routing-"));
      const ports = openLocalPorts({
        dataDir: dir,
        publicBaseUrl: "http://127.0.0.1:9",
        urlSecret: "r".repeat(32),
        maxReceives: 3,
      });
      return {
        ports,
        async close() {
          await ports.close();
          fs.rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: "aws (fauxqs + dynalite)",
    async open() {
      const standins: AwsStandins = await startAwsStandins();
      const { ports } = await openStandinPorts(standins, {
        queues: [...stageQueues(), ...bucketQueueDefinitions(ROUTES).map((q) => q.name)],
        maxReceives: 3,
      });
      return {
        ports,
        async close() {
          await ports.close?.();
          await standins.stop();
        },
      };
    },
  },
];

async function waitForStatus(ports: Ports, id: string, status: JobRecord["status"]): Promise<JobRecord> {
  for (;;) {
    const job = await ports.jobs.get(id);
    if (job?.status === status) return job;
    if (job && ["failed", "canceled", "expired"].includes(job.status)) throw new Error(`${id} ended ${job.status}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

for (const family of families) {
  describe(`bucket routing on ${family.name}`, () => {
    let opened: Awaited<ReturnType<Family["open"]>>;
    const workers: Worker[] = [];

    before(async () => {
      opened = await family.open();
    });
    after(async () => {
      for (const w of workers) await w.drain(5);
      await opened.close();
    });

    it("a worker advertising bucket set B takes only jobs of B and unbucketed sizes", async () => {
      const { ports } = opened;
      const { record } = await createApiKey(ports.keys, { name: "routing", scopes: ["render"] });
      const submit = async (width: number, height: number) => {
        const request = renderRequestSchema(DEFAULT_RENDER_LIMITS).parse({ prompt: "p", width, height, steps: 2 });
        return submitRender(ports, {
          ownerKeyId: record.id,
          request,
          now: new Date(),
          retentionHours: 1,
          buckets: POLICY,
        });
      };
      const square = await submit(128, 128);
      const wide = await submit(256, 128);
      // 240×120 is near 2:1 at bucket scale: it snaps to 256×128 and travels with it.
      const snapped = await submit(240, 120);
      const tiny = await submit(64, 64);
      assert.deepEqual(
        [square, wide, snapped, tiny].map((j) => [j.plan.bucket, j.plan.route, j.plan.width, j.plan.height]),
        [
          ["128x128", "128x128", 128, 128],
          ["256x128", "256x128", 256, 128],
          ["256x128", "256x128", 256, 128],
          [undefined, undefined, 64, 64],
        ],
      );
      assert.deepEqual(snapped.plan.requestedSize, [240, 120]);
      assert.equal((await ports.queue.depth("kiln-base-256x128")).visible, 2);
      assert.equal((await ports.queue.depth("kiln-base-128x128")).visible, 1);
      assert.equal((await ports.queue.depth("kiln-base")).visible, 1);

      const ranBy = new Map<string, string>();
      const start = (id: string, take: string[]) => {
        const worker = new Worker({
          ports,
          execute: nullExecutor({ onStage: (jobId, _stage, phase) => phase === "start" && ranBy.set(jobId, id) }),
          logger: createLogger({ level: "silent" }),
          stages: ["base", "refine"],
          concurrency: 1,
          visibilitySeconds: 30,
          maxReceives: 3,
          pollWaitSeconds: 0.05,
          workerId: id,
          buckets: { take, all: ROUTES },
        });
        workers.push(worker);
        worker.start();
        return worker;
      };

      const squares = start("squares", ["128x128"]);
      await waitForStatus(ports, square.id, "succeeded");
      await waitForStatus(ports, tiny.id, "succeeded");
      await squares.drain(5);
      // The 2:1 jobs were never received by the worker without their bucket: still visible, not in flight.
      assert.deepEqual(await ports.queue.depth("kiln-base-256x128"), { visible: 2, inFlight: 0, delayed: 0 });
      assert.equal((await ports.jobs.get(wide.id))?.status, "queued");

      start("wides", ["256x128"]);
      await waitForStatus(ports, wide.id, "succeeded");
      await waitForStatus(ports, snapped.id, "succeeded");
      assert.deepEqual(Object.fromEntries(ranBy), {
        [square.id]: "squares",
        [tiny.id]: "squares",
        [wide.id]: "wides",
        [snapped.id]: "wides",
      });
    });
  });
}
