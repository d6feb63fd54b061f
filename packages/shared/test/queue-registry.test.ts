import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  allQueueNames,
  deadLetterQueueOf,
  loadConfig,
  queueForStage,
  QUEUES,
  SST_LINKS,
  stageQueues,
  WEBHOOK_QUEUE,
} from "@kiln/shared";

describe("queue registry", () => {
  it("keeps the names deployed queues and their links already have", () => {
    assert.deepEqual(
      QUEUES.map((q) => [q.name, q.link]),
      [
        ["kiln-base", "KilnBase"],
        ["kiln-refine", "KilnRefine"],
        ["kiln-base-batch", "KilnBaseBatch"],
        ["kiln-refine-batch", "KilnRefineBatch"],
        ["kiln-webhooks", "KilnWebhook"],
        ["kiln-chat", "KilnChat"],
        ["kiln-batch-warmup", "KilnBatchWarmup"],
      ],
    );
    assert.equal(queueForStage("base"), "kiln-base");
    assert.equal(queueForStage("refine", "interactive"), "kiln-refine");
    assert.equal(WEBHOOK_QUEUE, "kiln-webhooks");
    assert.equal(queueForStage("base", "batch"), "kiln-base-batch");
    assert.deepEqual(stageQueues(["refine"]), ["kiln-refine", "kiln-refine-batch"]);
    assert.deepEqual(stageQueues(), ["kiln-base", "kiln-refine", "kiln-base-batch", "kiln-refine-batch"]);
  });

  it("gives every queue and its dead-letter queue an SST link, which the AWS config reads", () => {
    assert.deepEqual(allQueueNames(), [
      "kiln-base",
      "kiln-base-dlq",
      "kiln-refine",
      "kiln-refine-dlq",
      "kiln-base-batch",
      "kiln-base-batch-dlq",
      "kiln-refine-batch",
      "kiln-refine-batch-dlq",
      "kiln-webhooks",
      "kiln-webhooks-dlq",
      "kiln-chat",
      "kiln-chat-dlq",
      "kiln-batch-warmup",
      "kiln-batch-warmup-dlq",
    ]);
    assert.deepEqual(SST_LINKS.queues, {
      "kiln-base": "KilnBaseQueue",
      "kiln-base-dlq": "KilnBaseDlq",
      "kiln-refine": "KilnRefineQueue",
      "kiln-refine-dlq": "KilnRefineDlq",
      "kiln-base-batch": "KilnBaseBatchQueue",
      "kiln-base-batch-dlq": "KilnBaseBatchDlq",
      "kiln-refine-batch": "KilnRefineBatchQueue",
      "kiln-refine-batch-dlq": "KilnRefineBatchDlq",
      "kiln-webhooks": "KilnWebhookQueue",
      "kiln-webhooks-dlq": "KilnWebhookDlq",
      "kiln-chat": "KilnChatQueue",
      "kiln-chat-dlq": "KilnChatDlq",
      "kiln-batch-warmup": "KilnBatchWarmupQueue",
      "kiln-batch-warmup-dlq": "KilnBatchWarmupDlq",
    });
    const env = Object.fromEntries(
      allQueueNames().map((name) => [
        `SST_RESOURCE_${SST_LINKS.queues[name]}`,
        JSON.stringify({ url: `https://sqs/1/${name}` }),
      ]),
    );
    const config = loadConfig({ KILN_BACKEND: "aws", KILN_BUCKET: "b", KILN_TABLE: "t", ...env });
    for (const q of QUEUES) {
      assert.equal(config.aws.queueUrls[q.name], `https://sqs/1/${q.name}`);
      assert.equal(config.aws.queueUrls[deadLetterQueueOf(q.name)], `https://sqs/1/${q.name}-dlq`);
    }
  });
});
