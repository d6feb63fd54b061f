/**
 * The pure derivations behind infra/: which queues exist and their SQS settings, the bucket's
 * lifecycle, the fleet's sizing, and least-privilege IAM statements per role.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { queueForStage, SST_LINKS, WARMUP_QUEUE } from "@kiln/shared";

import {
  apiStatements,
  batchScheduleStatements,
  batchTriggerStatements,
  deadLetterSweepStatements,
  outboxRelayStatements,
  overlyBroad,
  schedulerInvokeStatements,
  workerTaskStatements,
} from "../../infra/plan/iam.js";
import {
  DEFAULT_QUEUE_TIMINGS,
  kilnQueueSpecs,
  MAX_WARMUP_MINUTES,
  planQueues,
  WARMUP_RETENTION_SECONDS,
} from "../../infra/plan/queues.js";
import {
  backlogPerWorkerExpression,
  DEFAULT_FLEET,
  fleetSettingsFromEnv,
  planFleet,
  SPOT_NOTICE_SECONDS,
} from "../../infra/plan/scaling.js";
import { BUCKET_ARGS, KEPT_PREFIXES, LATENTS_TAG, lifecycleRules } from "../../infra/plan/storage.js";
import { CHAT_QUEUE, WEBHOOK_QUEUE } from "../../packages/shared/src/queues/registry.js";

describe("queues", () => {
  const plans = planQueues(kilnQueueSpecs());

  it("covers every queue the code sends to, each with a dead-letter queue", () => {
    const names = plans.map((p) => p.name).sort();
    for (const used of [
      queueForStage("base"),
      queueForStage("refine"),
      queueForStage("base", "batch"),
      queueForStage("refine", "batch"),
      WEBHOOK_QUEUE,
      CHAT_QUEUE,
    ]) {
      assert.ok(names.includes(used), `${used} has no queue in infra`);
    }
    // Roles come from the registry: the GPU fleet scales on interactive stage queues only.
    const role = (name: string) => plans.find((p) => p.name === name)!.role;
    assert.equal(role(queueForStage("base")), "stage");
    assert.equal(role(queueForStage("refine", "batch")), "batch");
    assert.equal(role(WEBHOOK_QUEUE), "webhook");
    assert.equal(role(CHAT_QUEUE), "webhook");
    // Batch warm-up: no worker reads it; retention bounds a warm-up its run did not clear.
    const warmup = plans.find((p) => p.name === WARMUP_QUEUE)!;
    assert.equal(warmup.role, "warmup");
    assert.equal(warmup.retentionSeconds, WARMUP_RETENTION_SECONDS);
    assert.ok(warmup.retentionSeconds > MAX_WARMUP_MINUTES * 60 && warmup.retentionSeconds < 2 * 3600);
    assert.equal(warmup.maxReceives, 1000, "received and released by every fire, never dead-lettered for it");
    for (const p of plans) {
      assert.equal(SST_LINKS.queues[`${p.name}-dlq` as keyof typeof SST_LINKS.queues], p.dlqLink);
      assert.ok(p.maxReceives >= 1);
      assert.equal(p.dlqDepthAlarm, 1);
    }
  });

  it("refuses a queue without a dead-letter queue", () => {
    assert.throws(() => kilnQueueSpecs({ "kiln-batch-base": "KilnBatchBaseQueue" }), /needs a dead-letter queue/);
  });

  it("treats a batch lane from the registry as a queue of its own", () => {
    const plans = planQueues(
      kilnQueueSpecs({
        ...SST_LINKS.queues,
        "kiln-batch-base": "KilnBatchBase",
        "kiln-batch-base-dlq": "KilnBatchBaseDlq",
      }),
    );
    const batch = plans.find((p) => p.name === "kiln-batch-base")!;
    assert.equal(batch.role, "batch");
    assert.equal(batch.dlqLink, "KilnBatchBaseDlq");
  });

  it("derives stage visibility from the longest stage and webhook visibility from one attempt", () => {
    const base = plans.find((p) => p.name === "kiln-base")!;
    const webhooks = plans.find((p) => p.name === "kiln-webhooks")!;
    assert.ok(base.visibilitySeconds >= DEFAULT_QUEUE_TIMINGS.longestStageSeconds);
    assert.ok(webhooks.visibilitySeconds >= DEFAULT_QUEUE_TIMINGS.webhookTimeoutSeconds);
    assert.ok(webhooks.visibilitySeconds < base.visibilitySeconds);
    const longer = planQueues(kilnQueueSpecs(), { ...DEFAULT_QUEUE_TIMINGS, longestStageSeconds: 100_000 });
    assert.equal(longer.find((p) => p.name === "kiln-base")!.visibilitySeconds, 43_200, "bounded by SQS's 12 h");
  });

  it("keeps webhook deliveries longer than their retry horizon and dead letters for 14 days", () => {
    const webhooks = plans.find((p) => p.name === "kiln-webhooks")!;
    assert.ok(webhooks.retentionSeconds > DEFAULT_QUEUE_TIMINGS.webhookRetryHours * 3600);
    for (const p of plans) assert.equal(p.dlqRetentionSeconds, 14 * 86_400);
  });

  it("alarms on a stage message older than a cold start plus two longest stages", () => {
    const base = plans.find((p) => p.name === "kiln-base")!;
    assert.equal(
      base.oldestAgeAlarmSeconds,
      DEFAULT_QUEUE_TIMINGS.coldStartSeconds + 2 * DEFAULT_QUEUE_TIMINGS.longestStageSeconds,
    );
  });
});

describe("bucket", () => {
  const rules = lifecycleRules({ maxRetentionHours: 24 * 30 });

  it("expires latents after a day by their tag, outputs after the longest retention, and never engines or models", () => {
    const latents = rules.find((r) => r.id === "expire-latents")!;
    assert.deepEqual(latents.filter.and?.tags, { [LATENTS_TAG.key]: LATENTS_TAG.value });
    assert.equal(latents.expiration?.days, 1);
    const outputs = rules.find((r) => r.id === "expire-job-outputs")!;
    assert.ok(outputs.expiration!.days * 24 >= 24 * 30, "never before a job's own retention");
    for (const rule of rules.filter((r) => r.expiration)) {
      const prefix = rule.filter.prefix ?? rule.filter.and?.prefix ?? "";
      for (const kept of KEPT_PREFIXES) assert.ok(!kept.startsWith(prefix), `${rule.id} would expire ${kept}`);
    }
  });

  it("blocks every form of public access", () => {
    assert.deepEqual(Object.values(BUCKET_ARGS.transform.publicAccessBlock), [true, true, true, true]);
  });
});

describe("fleet", () => {
  it("can reach zero instances and zero workers, and asks for one GPU per task", () => {
    const plan = planFleet(DEFAULT_FLEET);
    assert.equal(plan.asg.minSize, 0);
    assert.equal(plan.service.minCapacity, 0);
    assert.equal(plan.service.desiredCount, 0);
    assert.equal(plan.task.gpus, 1);
    assert.equal(plan.scaling.wakeFromZeroWorkers, 1);
  });

  // Capacity simulator (issue 15): the default the simulator recommends (docs/scaling.md).
  it("tracks one waiting stage per worker, scales in after 5 minutes and reads the target from the environment", () => {
    const plan = planFleet(DEFAULT_FLEET);
    assert.equal(plan.scaling.targetBacklogPerWorker, 1);
    assert.equal(plan.scaling.scaleInCooldown, 300);
    assert.equal(fleetSettingsFromEnv({ KILN_BACKLOG_PER_WORKER: "4" }).backlogPerWorker, 4);
  });

  it("fits drain and release inside the spot interruption notice", () => {
    const plan = planFleet(DEFAULT_FLEET);
    assert.ok(plan.task.stopTimeoutSeconds <= SPOT_NOTICE_SECONDS);
    assert.ok(plan.task.stopTimeoutSeconds > plan.task.drainSeconds);
    assert.throws(() => planFleet({ ...DEFAULT_FLEET, drainSeconds: 110 }), /spot notice/);
  });

  it("mixes an on-demand base with spot", () => {
    const plan = planFleet({ ...DEFAULT_FLEET, onDemandBase: 1, onDemandPercentAboveBase: 25 });
    assert.equal(plan.asg.onDemandBaseCapacity, 1);
    assert.equal(plan.asg.onDemandPercentageAboveBaseCapacity, 25);
    assert.ok(plan.asg.instanceTypes.length > 1, "several instance types, so spot has pools to choose from");
  });

  it("divides the stage backlog by running workers without dividing by zero", () => {
    assert.equal(backlogPerWorkerExpression(2), "(q0 + q1) / MAX([workers, 1])");
  });

  it("reads its settings from KILN_GPU_* and says what is wrong", () => {
    const s = fleetSettingsFromEnv({ KILN_GPU_MAX_WORKERS: "8", KILN_GPU_INSTANCE_TYPES: "g6.xlarge, g5.xlarge" });
    assert.equal(s.maxWorkers, 8);
    assert.deepEqual(s.instanceTypes, ["g6.xlarge", "g5.xlarge"]);
    assert.throws(() => fleetSettingsFromEnv({ KILN_GPU_MAX_WORKERS: "lots" }), /KILN_GPU_MAX_WORKERS=lots/);
  });
});

describe("IAM", () => {
  const data = {
    queues: ["arn:aws:sqs:us-east-1:1:kiln-base", "arn:aws:sqs:us-east-1:1:kiln-base-dlq"],
    bucket: "arn:aws:s3:::kiln",
    bucketObjects: "arn:aws:s3:::kiln/*",
    table: "arn:aws:dynamodb:us-east-1:1:table/kiln",
    tableIndexes: "arn:aws:dynamodb:us-east-1:1:table/kiln/index/*",
  };
  const isStar = (r: string) => r === "*";
  const roles = {
    api: apiStatements(data),
    worker: workerTaskStatements(data),
    sweep: deadLetterSweepStatements(data),
    relay: outboxRelayStatements({ ...data, tableStream: `${data.table}/stream/2026-12-01T00:00:00.000` }),
    schedules: batchScheduleStatements({
      scheduleGroupSchedules: "arn:aws:scheduler:us-east-1:1:schedule/kiln-batch/*",
      schedulerRole: "arn:aws:iam::1:role/kiln-scheduler",
    }),
    scheduler: schedulerInvokeStatements({
      triggerFunction: "arn:aws:lambda:us-east-1:1:function:kiln-batch-trigger",
    }),
    trigger: batchTriggerStatements({ ...data, warmupQueue: "arn:aws:sqs:us-east-1:1:kiln-batch-warmup" }),
  };

  for (const [role, statements] of Object.entries(roles)) {
    it(`${role}: no wildcard actions, no "*" resources`, () => {
      assert.deepEqual(overlyBroad(statements, isStar), []);
    });
  }

  it("the checker catches what it is for", () => {
    const bad = [
      { Effect: "Allow" as const, Action: ["s3:*"], Resource: ["*"] },
      { Effect: "Allow" as const, Action: ["*"], Resource: [data.bucket] },
      { Effect: "Allow" as const, Action: ["dynamodb:Get*"], Resource: [] },
    ];
    assert.equal(overlyBroad(bad, isStar).length, 5);
  });

  it("only the worker may change message visibility; only the worker writes latents' tags", () => {
    const actions = (s: { Action: string[] }[]) => s.flatMap((x) => x.Action);
    assert.ok(actions(roles.worker).includes("sqs:ChangeMessageVisibility"));
    assert.ok(!actions(roles.api).includes("sqs:ChangeMessageVisibility"));
    assert.ok(actions(roles.worker).includes("s3:PutObjectTagging"));
  });
});
