/**
 * A run's end is told once: a signed `batch.ended` webhook through the real webhook queue and
 * dispatcher to a loopback receiver, and chat posts through ChatBatchNotifier — Slack's
 * `chat.postMessage` by `@slack/web-api`, Discord's channel message by Kiln's DiscordClient — to
 * the loopback Slack and Discord stand-ins. No worker: jobs are ended through the job store.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import type { Ports } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";

import { getRun, pumpKey, startRun } from "../../packages/api/src/batches/batch-service.js";
import { ChatBatchNotifier } from "../../packages/api/src/batches/chat-notifier.js";
import { DiscordClient } from "../../packages/api/src/channels/discord/client.js";
import { sharpContactSheet } from "../../packages/api/src/entry/contact-sheet.js";
import { slackWebApi } from "../../packages/api/src/entry/slack-web-api.js";
import { WebhookDispatcher } from "../../packages/api/src/entry/webhook-dispatcher.js";
import { batchKey, batchTestDeps, openLocalBatchPorts, tinyManifest } from "../support/batch-fixture.js";
import { startDiscordStandIn, startSlackStandIn } from "../support/chat-platforms.js";
import { startWebhookReceiver, verifyStandardWebhook, type WebhookReceiver } from "../support/webhook-receiver.js";

const PNG_1PX = Uint8Array.from(
  Buffer.from(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
    "base64",
  ),
);

describe("batch run notifications", () => {
  let local: ReturnType<typeof openLocalBatchPorts>;
  let ports: Ports;
  let receiver: WebhookReceiver;
  let dispatcher: WebhookDispatcher;
  let discord: Awaited<ReturnType<typeof startDiscordStandIn>>;
  let slack: Awaited<ReturnType<typeof startSlackStandIn>>;
  let chat: ChatBatchNotifier;

  before(async () => {
    local = openLocalBatchPorts("batch-notify");
    ports = local.ports;
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
    discord = await startDiscordStandIn({ applicationId: "1234567", botToken: "discord-bot" });
    slack = await startSlackStandIn({ botToken: "xoxb-slack-bot" });
    chat = new ChatBatchNotifier({
      slack: slackWebApi({ token: "xoxb-slack-bot", apiUrl: slack.apiUrl }),
      discord: new DiscordClient({
        apiUrl: discord.url,
        applicationId: "1234567",
        botToken: "discord-bot",
        backoffMs: 10,
      }),
    });
  });
  after(async () => {
    await dispatcher.stop();
    await Promise.all([receiver.close(), discord.close(), slack.close()]);
    await local.close();
  });

  /** Ends a run of two renders: the first succeeds (with a 1-px image), the second fails. */
  async function endedRun(id: string, notify: Record<string, unknown>) {
    const deps = batchTestDeps(ports, { chat, contactSheet: sharpContactSheet });
    const keyId = await batchKey(ports, id);
    const manifest = tinyManifest({ id, prompts: ["a lamp"], seeds: [1, 2], notify });
    const { run } = await startRun(deps, { ownerKeyId: keyId, manifest, trigger: "manual" });
    const [a, b] = (await getRun(deps, keyId, run.id))!.renders;
    const imageKey = `jobs/${a!.jobId}/0.png`;
    await ports.blobs.put(imageKey, PNG_1PX, { contentType: "image/png" });
    await ports.jobs.update(
      a!.jobId,
      { status: ["queued"] },
      {
        status: "succeeded",
        images: [{ index: 0, key: imageKey, width: 1, height: 1, seed: 1, format: "png", bytes: PNG_1PX.length }],
      },
    );
    await ports.jobs.update(b!.jobId, { status: ["queued"] }, { status: "failed" });
    await pumpKey(deps, keyId);
    await pumpKey(deps, keyId);
    return { keyId, run: (await getRun(deps, keyId, run.id))! };
  }

  it("tells the webhook (signed), Slack and Discord once, with counts, run id and links", async () => {
    const { keyId, run } = await endedRun("told", {
      webhook: { url: receiver.url },
      slack: { channel: "C0123" },
      discord: { channel_id: "42" },
    });
    assert.equal(run.status, "failed");
    assert.ok(run.contactSheetKey && run.indexKey, "the run has a contact sheet and an index");

    const [hook] = await receiver.waitFor(1, 10_000);
    const key = await ports.keys.get(keyId);
    assert.ok(verifyStandardWebhook(key!.webhookSecret!, hook!.headers, hook!.body), "signed with the key's secret");
    assert.equal(hook!.headers["webhook-id"], `msg_${run.id}_batch_ended`);
    const body = JSON.parse(hook!.body) as {
      type: string;
      data: { status: string; counts: { succeeded: number; failed: number }; index: { url: string } | null };
    };
    assert.equal(body.type, "batch.ended");
    assert.equal(body.data.status, "failed");
    assert.deepEqual([body.data.counts.succeeded, body.data.counts.failed], [1, 1]);
    assert.match(body.data.index!.url, /index\.json/);

    // Slack: chat.postMessage with the bot token, to the manifest's channel.
    const posts = slack.calls.filter((c) => c.path === "/api/chat.postMessage");
    assert.equal(posts.length, 1, "posted once to Slack");
    const slackArgs = posts[0]!.form ?? posts[0]!.json;
    assert.equal(posts[0]!.headers.authorization, "Bearer xoxb-slack-bot");
    assert.equal(slackArgs.channel, "C0123");
    assert.match(slackArgs.text, new RegExp(`told \\(${run.id}\\) failed: 1 succeeded, 1 failed, 0 skipped of 2`));
    const blocks = JSON.stringify(
      typeof slackArgs.blocks === "string" ? JSON.parse(slackArgs.blocks) : slackArgs.blocks,
    );
    assert.match(blocks, new RegExp(run.id));
    assert.match(blocks, /contact-sheet\.png[^|]*\|Contact sheet/);
    assert.match(blocks, /index\.json[^|]*\|index\.json/);

    // Discord: POST /channels/42/messages as the bot.
    const messages = discord.calls.filter((c) => c.method === "POST" && c.path === "/channels/42/messages");
    assert.equal(messages.length, 1, "posted once to Discord");
    assert.equal(messages[0]!.headers.authorization, "Bot discord-bot");
    const embed = messages[0]!.json.embeds[0];
    assert.match(messages[0]!.json.content, new RegExp(run.id));
    assert.match(embed.description, /1 succeeded · 1 failed · 0 skipped/);
    assert.deepEqual(
      embed.fields.map((f: { name: string }) => f.name),
      ["Contact sheet", "Gallery", "index.json"],
    );
    assert.match(embed.fields[0].value, /contact-sheet\.png/);
    assert.deepEqual(messages[0]!.json.allowed_mentions, { parse: [] });
    // The second pump found the run ended and told no one again.
    assert.equal(receiver.received.length, 1);
  });

  it("a Discord 429 is waited out by the client's retry, and the message is posted once", async () => {
    discord.failNext(/^POST \/channels\/77\/messages$/, {
      status: 429,
      body: { message: "You are being rate limited.", retry_after: 0.05, global: false },
    });
    const { run } = await endedRun("limited", { discord: { channel_id: "77" } });
    const calls = discord.calls.filter((c) => c.path === "/channels/77/messages");
    assert.deepEqual(
      calls.map((c) => c.status),
      [429, 200],
    );
    assert.match(calls[1]!.json.content, new RegExp(run.id));
  });
});
