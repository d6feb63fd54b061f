/**
 * A run's end is told once: a signed `batch.ended` webhook through the real webhook queue and
 * dispatcher to a loopback receiver, and a chat post through the BatchChatNotifier interface (here
 * a recording stand-in for the Slack/Discord bots). No worker: jobs are ended through the job store.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { createApiKey, DEFAULT_RENDER_LIMITS, type Ports } from "@kiln/shared";
import { openLocalPorts } from "@kiln/shared/local";
import { createLogger } from "@kiln/shared/node";

import { getRun, pumpKey, startRun } from "../../packages/api/src/batches/batch-service.js";
import { manifestSchema } from "../../packages/api/src/batches/manifest.js";
import type { BatchChatMessage, BatchChatNotifier } from "../../packages/api/src/batches/notify.js";
import { batchDepsFrom } from "../../packages/api/src/batches/routes.js";
import { WebhookDispatcher } from "../../packages/api/src/entry/webhook-dispatcher.js";
import { startWebhookReceiver, verifyStandardWebhook, type WebhookReceiver } from "../support/webhook-receiver.js";

describe("batch run notifications", () => {
  let dir: string;
  let ports: Ports;
  let receiver: WebhookReceiver;
  let dispatcher: WebhookDispatcher;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-batch-notify-"));
    ports = openLocalPorts({
      dataDir: dir,
      publicBaseUrl: "http://127.0.0.1:9",
      urlSecret: "n".repeat(32),
      maxReceives: 3,
    });
    receiver = await startWebhookReceiver();
    dispatcher = new WebhookDispatcher({
      ports,
      logger: createLogger({ level: "silent" }),
      policy: { allowPrivate: true, allowedHosts: [] },
      retryWindowMs: 60_000,
      backoffBaseSeconds: 1,
      timeoutMs: 5_000,
      pollWaitSeconds: 0.2,
    });
    dispatcher.start();
  });
  after(async () => {
    await dispatcher.stop();
    await receiver.close();
    await ports.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("tells the webhook (signed) and the chat channels once, with the counts", async () => {
    const posts: { target: { platform: string; channel: string }; message: BatchChatMessage }[] = [];
    const chat: BatchChatNotifier = {
      async post(target, message) {
        posts.push({ target, message });
      },
    };
    const deps = batchDepsFrom(
      {
        ports,
        publicUrl: "http://127.0.0.1:9",
        limits: DEFAULT_RENDER_LIMITS,
        maxBodyBytes: 65536,
        downloadUrlSeconds: 60,
        retentionHours: 1,
      },
      { window: 10, stepSeconds: 0.1, chat },
    );
    const { record } = await createApiKey(ports.keys, { name: "notify", scopes: ["render"] });
    const manifest = manifestSchema.parse({
      id: "told",
      defaults: { steps: 2, width: 64, height: 64, mode: "base" },
      prompts: ["a lamp"],
      seeds: [1, 2],
      notify: { webhook: { url: receiver.url }, slack: { channel: "C0123" }, discord: { channel_id: "42" } },
    });
    const { run } = await startRun(deps, { ownerKeyId: record.id, manifest, trigger: "manual" });
    const [a, b] = (await getRun(deps, record.id, run.id))!.renders;
    await ports.jobs.update(a!.jobId, { status: ["queued"] }, { status: "succeeded" });
    await ports.jobs.update(b!.jobId, { status: ["queued"] }, { status: "failed" });
    await pumpKey(deps, record.id);
    await pumpKey(deps, record.id);

    const [hook] = await receiver.waitFor(1, 10_000);
    assert.ok(verifyStandardWebhook(record.webhookSecret!, hook!.headers, hook!.body), "signed with the key's secret");
    assert.equal(hook!.headers["webhook-id"], `msg_${run.id}_batch_ended`);
    const body = JSON.parse(hook!.body) as {
      type: string;
      data: { status: string; counts: { succeeded: number; failed: number } };
    };
    assert.equal(body.type, "batch.ended");
    assert.equal(body.data.status, "failed");
    assert.deepEqual([body.data.counts.succeeded, body.data.counts.failed], [1, 1]);

    assert.deepEqual(
      posts.map((p) => [p.target.platform, p.target.channel]),
      [
        ["slack", "C0123"],
        ["discord", "42"],
      ],
    );
    assert.match(posts[0]!.message.text, /told .* failed: 1 succeeded, 1 failed, 0 skipped of 2/);
    // The second pump found the run ended and told no one again.
    assert.equal(receiver.received.length, 1);
  });
});
