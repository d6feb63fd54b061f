import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import type { JobRecord, Ports } from "@kiln/shared";
import { openLocalPorts } from "@kiln/shared/local";
import sharp from "sharp";

import { startDiscordStandIn } from "../../../../test/support/chat-platforms.js";
import { CHAT_QUEUE, chatEventSink, enqueueChatDelivery } from "../../src/channels/core/deliveries.js";
import { chatDispatcher } from "../../src/channels/core/dispatcher.js";
import { DiscordClient } from "../../src/channels/discord/client.js";
import { DiscordPresenter } from "../../src/channels/discord/presenter.js";
import type { OutboundLogger } from "../../src/outbound/dispatcher.js";
import { jobRecord } from "../fixtures.js";

const APP = "555666777888999000";

async function until(check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("chat dispatcher", () => {
  let dir: string;
  let ports: Ports;
  let discord: Awaited<ReturnType<typeof startDiscordStandIn>>;
  const logs: { level: string; msg: string }[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-chat-"));
    ports = openLocalPorts({
      dataDir: dir,
      publicBaseUrl: "http://127.0.0.1:1",
      urlSecret: "s".repeat(16),
      maxReceives: 5,
    });
    discord = await startDiscordStandIn({ applicationId: APP, botToken: "bot" });
  });
  after(async () => {
    await discord.close();
    await ports.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function dispatcher(): ReturnType<typeof chatDispatcher> {
    // A short in-place wait, so Discord's 1.5 s retry_after goes back to the queue as a delayed message.
    const client = new DiscordClient({ apiUrl: discord.url, applicationId: APP, maxInlineWaitMs: 100 });
    const log = (level: string, _obj: object, msg: string) => void logs.push({ level, msg });
    const presenter = new DiscordPresenter(client, { blobs: ports.blobs, publicUrl: "http://kiln.test", log });
    const logger: OutboundLogger = {
      info: (obj, msg) => log("info", obj, msg),
      warn: (obj, msg) => log("warn", obj, msg),
      error: (obj, msg) => log("error", obj, msg),
      child: () => logger,
    };
    return chatDispatcher({
      ports,
      presenters: { discord: presenter },
      downloadUrlSeconds: 600,
      logger,
      pollWaitSeconds: 1,
    });
  }

  async function succeededJob(id: string, token: string): Promise<JobRecord> {
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: "#c04020" } })
      .png()
      .toBuffer();
    const key = `jobs/${id}/image-0.png`;
    await ports.blobs.put(key, png);
    const job = jobRecord(
      { width: 64, height: 64 },
      {
        id,
        status: "succeeded",
        images: [{ index: 0, key, width: 64, height: 64, seed: 7, format: "png", bytes: png.length }],
        chat: { platform: "discord", kind: "command", token, userId: "1", channelId: "2", receivedAt: Date.now() },
      },
    );
    assert.equal(await ports.jobs.create(job), true);
    return job;
  }

  async function drained(): Promise<boolean> {
    const depth = await ports.queue.depth(CHAT_QUEUE);
    return depth.visible + depth.inFlight + depth.delayed === 0;
  }

  it("a long 429 becomes a delayed queue message that survives a restart; repeats and stale progress send nothing", async () => {
    const job = await succeededJob("job_chatrestart01", "tokR");
    discord.failNext(/^PATCH \/webhooks\/\d+\/tokR\//, {
      status: 429,
      body: { message: "You are being rate limited.", retry_after: 1.5, global: false },
    });
    await enqueueChatDelivery(ports.queue, { kind: "ended", jobId: job.id });
    const first = dispatcher();
    first.start();
    await discord.waitFor((c) => c.path.includes("/tokR/") && c.status === 429);
    await until(async () => (await ports.queue.depth(CHAT_QUEUE)).delayed === 1);
    await first.stop();
    assert.ok(
      !discord.calls.some((c) => c.path.includes("/tokR/") && c.status === 200),
      "nothing delivered before the restart",
    );

    const second = dispatcher();
    second.start();
    const delivered = await discord.waitFor((c) => c.path.includes("/tokR/") && c.status === 200);
    assert.equal(delivered.files.length, 1);
    const { info } = await sharp(delivered.files[0]!.bytes).raw().toBuffer({ resolveWithObject: true });
    assert.equal(info.width, 64);
    assert.ok(logs.some((l) => l.msg === "chat platform asked to retry later"));

    // The worker reports an end at least once, and progress may arrive after the end.
    await enqueueChatDelivery(ports.queue, { kind: "ended", jobId: job.id });
    await enqueueChatDelivery(ports.queue, { kind: "progress", jobId: job.id });
    await until(drained);
    await second.stop();
    assert.equal(discord.calls.filter((c) => c.path.includes("/tokR/") && c.status === 200).length, 1);
  });

  it("a 5xx that outlasts the quick retries is re-sent through the queue with backoff", async () => {
    const job = await succeededJob("job_chatfivexx01", "tokS");
    discord.failNext(/^PATCH \/webhooks\/\d+\/tokS\//, { status: 503, body: { message: "upstream" } }, 3);
    await enqueueChatDelivery(ports.queue, { kind: "ended", jobId: job.id });
    const d = dispatcher();
    d.start();
    const delivered = await discord.waitFor((c) => c.path.includes("/tokS/") && c.status === 200);
    await d.stop();
    assert.equal(discord.calls.filter((c) => c.path.includes("/tokS/") && c.status === 503).length, 3);
    assert.equal(delivered.files.length, 1);
  });

  it("the event sink queues at most one progress follow-up per interval, and every end", async () => {
    let now = 1_000_000;
    const sent: unknown[] = [];
    const queue = { send: async (_q: string, body: unknown) => void sent.push(body) } as unknown as Ports["queue"];
    const sink = chatEventSink({ queue, progressEveryMs: 2000, now: () => now });
    const running = jobRecord(
      {},
      {
        id: "job_sink",
        status: "running",
        chat: {
          platform: "slack",
          kind: "command",
          teamId: "T",
          userId: "U",
          channelId: "C",
          responseUrl: "https://hooks.slack.com/x",
          receivedAt: 0,
        },
      },
    );
    const at = new Date().toISOString();
    await sink({ type: "started", job: running, at });
    await sink({ type: "progress", job: running, at });
    now += 2500;
    await sink({ type: "progress", job: running, at });
    await sink({ type: "succeeded", job: { ...running, status: "succeeded" }, at });
    await sink({ type: "progress", job: jobRecord({}, { id: "job_plain", status: "running" }), at });
    assert.deepEqual(
      sent.map((d) => (d as { kind: string }).kind),
      ["progress", "progress", "ended"],
    );
  });
});
