import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { createApp } from "@kiln/api";
import { webhookEventSinkFromConfig } from "@kiln/api/config";
import { type ModelSet, sdxlExecutor, type StageExecutor, Worker } from "@kiln/gpu-worker";
import { createApiKey, type JobRecord } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import sharp from "sharp";

import { chatStatus } from "../../packages/api/src/channels/core/chat-deps.js";
import { DiscordClient } from "../../packages/api/src/channels/discord/client.js";
import { DiscordPresenter } from "../../packages/api/src/channels/discord/presenter.js";
import { SlackPresenter } from "../../packages/api/src/channels/slack/presenter.js";
import { type Service, startChatService } from "../../packages/cli/src/services.js";
import { apiDeps } from "../../packages/cli/src/stack.js";
import { type PlatformCall, startDiscordStandIn, startSlackStandIn } from "../support/chat-platforms.js";
import { discordHeaders, ed25519Pair, slackHeaders } from "../support/chat-signing.js";
import { loadTinyModels, type LocalStack, startLocalStack } from "../support/local-stack.js";

const APP = "112233445566778899";
const DISCORD_BOT = "discord-bot-token";
const SLACK_SECRET = "slack-signing-secret-for-tests";
const SLACK_BOT = "xoxb-test-token";
const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Holds every job's second stage until opened: progress at "stage 1 done" is then observable, not raced. */
class Gate {
  private opened: Promise<void> = Promise.resolve();
  private release?: () => void;
  close() {
    this.opened = new Promise((resolve) => (this.release = resolve));
  }
  open() {
    this.release?.();
  }
  wrap(execute: StageExecutor): StageExecutor {
    return async (job, stage, input, hooks) => {
      if (stage.index === 1) await this.opened;
      return execute(job, stage, input, hooks);
    };
  }
}

async function decodePng(bytes: Buffer): Promise<{ width: number; height: number }> {
  assert.deepEqual(bytes.subarray(0, 8), PNG_MAGIC, "a PNG file");
  const { info } = await sharp(bytes).raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height };
}

describe("Discord and Slack bots against loopback platforms and a real local stack", () => {
  let stack: LocalStack;
  let models: ModelSet;
  let worker: Worker;
  let chat: Service;
  let discord: Awaited<ReturnType<typeof startDiscordStandIn>>;
  let slack: Awaited<ReturnType<typeof startSlackStandIn>>;
  let keys: Awaited<ReturnType<typeof ed25519Pair>>;
  const gate = new Gate();
  let interactionId = 0;

  before(async () => {
    keys = await ed25519Pair();
    discord = await startDiscordStandIn({ applicationId: APP, botToken: DISCORD_BOT });
    slack = await startSlackStandIn({ botToken: SLACK_BOT });
    stack = await startLocalStack({
      worker: false,
      env: {
        KILN_DISCORD_APPLICATION_ID: APP,
        KILN_DISCORD_PUBLIC_KEY: keys.publicHex,
        KILN_DISCORD_BOT_TOKEN: DISCORD_BOT,
        KILN_DISCORD_API_URL: discord.url,
        KILN_SLACK_SIGNING_SECRET: SLACK_SECRET,
        KILN_SLACK_BOT_TOKEN: SLACK_BOT,
        KILN_SLACK_API_URL: slack.apiUrl,
        KILN_WEBHOOK_ALLOW_PRIVATE: "true",
        KILN_CHAT_USER_RENDERS_PER_HOUR: "50",
      },
    });
    // The chat key is made after start-up (its id is random); the running app reads the same config object.
    const { record } = await createApiKey(stack.ports.keys, { name: "chat", scopes: ["render"] });
    stack.config.chat.keyId = record.id;
    models = await loadTinyModels();
    const logger = createLogger({ level: process.env.KILN_TEST_LOG ?? "silent" });
    worker = new Worker({
      ports: stack.ports,
      execute: gate.wrap(sdxlExecutor(models, { blobs: stack.ports.blobs })),
      logger,
      stages: ["base", "refine"],
      concurrency: 1,
      visibilitySeconds: 10,
      maxReceives: 5,
      events: webhookEventSinkFromConfig(stack.config, stack.ports),
    });
    worker.start();
    chat = startChatService(stack.config, stack.ports, logger);
  });

  after(async () => {
    gate.open();
    await worker?.drain(5);
    await chat?.stop();
    await stack?.stop();
    for (const m of Object.values(models ?? {})) await m?.release();
    await discord?.close();
    await slack?.close();
  });

  async function interact(body: object, headers?: Record<string, string>) {
    const text = JSON.stringify(body);
    const res = await fetch(`${stack.url}/integrations/discord`, {
      method: "POST",
      headers: headers ?? (await discordHeaders(keys, text)),
      body: text,
    });
    const out = await res.text();
    return { status: res.status, json: out ? JSON.parse(out) : undefined };
  }

  const base = (token: string, user: string) => ({
    id: String(++interactionId),
    application_id: APP,
    token,
    version: 1,
    guild_id: "400",
    channel_id: "500",
    channel: { id: "500", type: 0, nsfw: false },
    member: { user: { id: user, username: user } },
  });
  const imagine = (token: string, user = "700", extra: object[] = []) => ({
    ...base(token, user),
    type: 2,
    data: {
      id: "1",
      name: "imagine",
      type: 1,
      options: [
        { name: "prompt", type: 3, value: "a red fox in snow" },
        { name: "size", type: 3, value: "64x64" },
        { name: "steps", type: 4, value: 4 },
        ...extra,
      ],
    },
  });
  const press = (token: string, customId: string, user = "700") => ({
    ...base(token, user),
    type: 3,
    message: { id: "1" },
    data: { custom_id: customId, component_type: 2 },
  });
  const onToken = (token: string) => (c: PlatformCall) => c.path.startsWith(`/webhooks/${APP}/${token}`);

  it("answers PING and refuses bad signatures, stale timestamps and replays", async () => {
    assert.deepEqual((await interact({ type: 1, id: "p1", application_id: APP, token: "x", version: 1 })).json, {
      type: 1,
    });
    const body = JSON.stringify({ type: 1, id: "p2", application_id: APP, token: "x", version: 1 });
    const headers = await discordHeaders(keys, body);
    const tampered = await fetch(`${stack.url}/integrations/discord`, {
      method: "POST",
      headers,
      body: body.replace("p2", "p3"),
    });
    assert.equal(tampered.status, 401);
    const first = await fetch(`${stack.url}/integrations/discord`, { method: "POST", headers, body });
    assert.equal(first.status, 200);
    const replay = await fetch(`${stack.url}/integrations/discord`, { method: "POST", headers, body });
    assert.equal(replay.status, 401);
    assert.match(await replay.text(), /replay/);
    const staleTs = String(Math.floor(Date.now() / 1000) - 301);
    const stale = await fetch(`${stack.url}/integrations/discord`, {
      method: "POST",
      headers: await discordHeaders(keys, body, staleTs),
      body,
    });
    assert.equal(stale.status, 401);
    const unsigned = await fetch(`${stack.url}/integrations/discord`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    assert.equal(unsigned.status, 401);
  });

  it("answers option errors at once as ephemeral messages", async () => {
    const command = imagine("tok-bad");
    command.data.options = [
      { name: "prompt", type: 3, value: "x" },
      { name: "size", type: 3, value: "65x64" },
    ];
    const { json } = await interact(command);
    assert.equal(json.type, 4);
    assert.equal(json.data.flags, 64);
    assert.match(json.data.content, /size \(width\).*multiple of 8/);
  });

  let firstJobId = "";
  let firstSeed = "";

  it("/imagine: deferred reply, queued and progress edits through a 429 and a 500, then the PNG as a multipart attachment with buttons", async (t) => {
    gate.close();
    discord.failNext(/^PATCH \/webhooks\/\d+\/tok1\/messages\/@original$/, {
      status: 429,
      body: { message: "You are being rate limited.", retry_after: 0.2, global: false },
    });
    const started = performance.now();
    const ack = await interact(imagine("tok1"));
    // Reported, not asserted (no timing assertions): Discord allows 3 s.
    t.diagnostic(`deferred ack after ${(performance.now() - started).toFixed(1)} ms`);
    assert.deepEqual(ack.json, { type: 5 });
    const queued = await discord.waitFor((c) => onToken("tok1")(c) && c.status === 200);
    assert.match(queued.json.content, /Queued \(position 1\)|Waiting|Rendering/);
    assert.ok(
      discord.calls.some((c) => onToken("tok1")(c) && c.status === 429),
      "the 429 was answered first",
    );
    const progress = await discord.waitFor(
      (c) => onToken("tok1")(c) && c.status === 200 && /Rendering \d+% — stage 1\/2/.test(c.json?.content ?? ""),
    );
    assert.equal(progress.method, "PATCH");
    discord.failNext(/^PATCH \/webhooks\/\d+\/tok1\//, {
      status: 500,
      body: { message: "Internal Server Error", code: 0 },
    });
    gate.open();
    const result = await discord.waitFor((c) => onToken("tok1")(c) && c.status === 200 && c.files.length > 0);
    assert.equal(result.path, `/webhooks/${APP}/tok1/messages/@original`);
    assert.ok(
      discord.calls.some((c) => onToken("tok1")(c) && c.status === 500),
      "the 500 was answered and retried",
    );
    assert.equal(result.files[0]!.field, "files[0]");
    assert.deepEqual(result.json.attachments, [{ id: "0", filename: result.files[0]!.filename }]);
    assert.deepEqual(await decodePng(result.files[0]!.bytes), { width: 64, height: 64 });
    const ids = result.json.components[0].components.map((b: { custom_id: string }) => b.custom_id);
    assert.equal(ids.length, 4);
    firstJobId = /^kiln:reroll:(job_\w+)$/.exec(ids[0])![1]!;
    assert.deepEqual(
      ids,
      ["reroll", "vary", "upscale", "info"].map((a) => `kiln:${a}:${firstJobId}`),
    );
    firstSeed = /seed (\d+)/.exec(result.json.content)![1]!;
    assert.match(result.json.content, /a red fox in snow.*64×64/);
  });

  it("buttons: info answers ephemerally, others' presses are refused, re-roll renders anew in a follow-up", async () => {
    const info = await interact(press("tok-i", `kiln:info:${firstJobId}`));
    assert.equal(info.json.type, 4);
    assert.equal(info.json.data.flags, 64);
    assert.match(info.json.data.content, new RegExp(`${firstJobId}[\\s\\S]*Seed\\*\\* ${firstSeed}`));
    const other = await interact(press("tok-other", `kiln:reroll:${firstJobId}`, "701"));
    assert.match(other.json.data.content, /Only <@700>/);
    const reroll = await interact(press("tok2", `kiln:reroll:${firstJobId}`));
    assert.deepEqual(reroll.json, { type: 6 });
    const result = await discord.waitFor((c) => onToken("tok2")(c) && c.status === 200 && c.files.length > 0);
    const followUp = discord.calls.find((c) => onToken("tok2")(c) && c.method === "POST");
    assert.ok(followUp, "the re-roll's job lives in a follow-up, not in the message with the buttons");
    assert.ok(
      !discord.calls.some((c) => onToken("tok2")(c) && c.path.endsWith("@original")),
      "the original result is left alone",
    );
    assert.deepEqual(await decodePng(result.files[0]!.bytes), { width: 64, height: 64 });
    assert.notEqual(/seed (\d+)/.exec(result.json.content)![1], firstSeed);
  });

  /** The job a button's follow-up delivered, from the buttons under its picture. */
  async function deliveredJob(files: { bytes: Buffer }[], components: { components: { custom_id: string }[] }[]) {
    const id = /^kiln:reroll:(job_\w+)$/.exec(components[0]!.components[0]!.custom_id)![1]!;
    return { job: (await stack.ports.jobs.get(id)) as JobRecord, size: await decodePng(files[0]!.bytes) };
  }

  let variationJobId = "";

  it("variations: img2img from the result's PNG at a small strength, same prompt and size, new seed, in a follow-up", async () => {
    assert.deepEqual((await interact(press("tok-vary", `kiln:vary:${firstJobId}`))).json, { type: 6 });
    const result = await discord.waitFor((c) => onToken("tok-vary")(c) && c.status === 200 && c.files.length > 0);
    assert.ok(
      discord.calls.some((c) => onToken("tok-vary")(c) && c.method === "POST"),
      "a follow-up",
    );
    const { job, size } = await deliveredJob(result.files, result.json.components);
    assert.deepEqual(size, { width: 64, height: 64 });
    assert.equal(job.status, "succeeded");
    assert.equal(job.plan.mode, "img2img");
    assert.equal(job.plan.strength, 0.35);
    assert.equal(job.plan.prompt, "a red fox in snow");
    assert.notEqual(job.plan.seed, Number(firstSeed));
    assert.equal(job.chat?.sourceJobId, firstJobId);
    // The picture went in as a checked input, stored under the new job: the source's first output, byte for byte.
    const source = (await stack.ports.jobs.get(firstJobId)) as JobRecord;
    assert.deepEqual(
      await stack.ports.blobs.get(job.plan.source!.image),
      await stack.ports.blobs.get(source.images[0]!.key),
    );
    variationJobId = job.id;
  });

  it("upscale: img2img from the result at twice the size (within the server's limits), a PNG of that size", async () => {
    assert.deepEqual((await interact(press("tok-up", `kiln:upscale:${firstJobId}`))).json, { type: 6 });
    const result = await discord.waitFor((c) => onToken("tok-up")(c) && c.status === 200 && c.files.length > 0);
    const { job, size } = await deliveredJob(result.files, result.json.components);
    assert.deepEqual(size, { width: 128, height: 128 });
    assert.equal(job.plan.mode, "img2img");
    assert.equal(job.plan.strength, 0.3);
    assert.deepEqual([job.plan.width, job.plan.height], [128, 128]);
    assert.match(result.json.content, /128×128/);
  });

  it("re-roll of a variation starts again from the same picture with a new seed", async () => {
    assert.deepEqual((await interact(press("tok-rv", `kiln:reroll:${variationJobId}`))).json, { type: 6 });
    const result = await discord.waitFor((c) => onToken("tok-rv")(c) && c.status === 200 && c.files.length > 0);
    const { job, size } = await deliveredJob(result.files, result.json.components);
    const variation = (await stack.ports.jobs.get(variationJobId)) as JobRecord;
    assert.deepEqual(size, { width: 64, height: 64 });
    assert.equal(job.plan.mode, "img2img");
    assert.notEqual(job.plan.seed, variation.plan.seed);
    assert.deepEqual(
      await stack.ports.blobs.get(job.plan.source!.image),
      await stack.ports.blobs.get(variation.plan.source!.image),
    );
  });

  it("the content policy and the per-user limit answer ephemerally, before any job is made", async () => {
    const chatConfig = stack.config.chat;
    chatConfig.blockedWords = ["gore"];
    chatConfig.userRendersPerHour = 1;
    try {
      const refused = imagine("tok-policy", "790");
      refused.data.options[0] = { name: "prompt", type: 3, value: "a Gore scene" };
      const policy = await interact(refused);
      assert.equal(policy.json.data.flags, 64);
      assert.match(policy.json.data.content, /not marked NSFW.*"gore"/);
      assert.deepEqual((await interact(imagine("tok-limit1", "790"))).json, { type: 5 });
      const over = await interact(imagine("tok-limit2", "790"));
      assert.equal(over.json.data.flags, 64);
      assert.match(over.json.data.content, /you may start 1 render an hour\. Try again in \d+ min/);
      await discord.waitFor((c) => onToken("tok-limit1")(c) && c.files.length > 0);
      assert.ok(!discord.calls.some((c) => onToken("tok-limit2")(c) || onToken("tok-policy")(c)));
    } finally {
      chatConfig.blockedWords = [];
      chatConfig.userRendersPerHour = 50;
    }
  });

  it("a token that lapses mid-job: the result goes to the channel with the bot token", async (t) => {
    gate.close();
    const started = performance.now();
    assert.deepEqual((await interact(imagine("tok3"))).json, { type: 5 });
    t.diagnostic(`deferred ack (warm) after ${(performance.now() - started).toFixed(1)} ms`);
    await discord.waitFor((c) => onToken("tok3")(c) && c.status === 200);
    discord.expire("tok3");
    gate.open();
    const posted = await discord.waitFor((c) => c.path === "/channels/500/messages" && c.status === 200);
    assert.equal(posted.headers.authorization, `Bot ${DISCORD_BOT}`);
    assert.match(posted.json.content, /^<@700> /);
    assert.deepEqual(await decodePng(posted.files[0]!.bytes), { width: 64, height: 64 });
  });

  it("without a bot token, the edit before the token lapses links to the result page, which serves the image", async () => {
    const job = (await stack.ports.jobs.get(firstJobId)) as JobRecord;
    const receivedAt = job.chat!.receivedAt;
    let now = receivedAt + 13 * 60_000;
    const presenter = new DiscordPresenter(new DiscordClient({ apiUrl: discord.url, applicationId: APP }), {
      blobs: stack.ports.blobs,
      publicUrl: stack.url,
      now: () => now,
      log: () => {},
    });
    const token = (job.chat as { token: string }).token;
    const before = discord.calls.length;
    await presenter.expiring(job);
    const edit = discord.calls.slice(before).find((c) => onToken(token)(c));
    const link = /(http\S+\/integrations\/results\/job_\w+)/.exec(edit?.json.content ?? "")?.[1];
    assert.ok(link, "the edit names the result page");
    const page = await fetch(link!, { redirect: "follow" });
    assert.equal(page.status, 200);
    await decodePng(Buffer.from(await page.arrayBuffer()));
    now = receivedAt + 16 * 60_000;
    const after = discord.calls.length;
    await presenter.ended(job, []);
    assert.equal(discord.calls.length, after, "nothing can be sent after the token lapsed without a bot token");
  });

  async function slackCommand(text: string, responseId: string, user = "U700") {
    const body = new URLSearchParams({
      token: "legacy",
      team_id: "T1",
      channel_id: "C1",
      user_id: user,
      command: "/kiln",
      text,
      response_url: slack.responseUrl(responseId),
      trigger_id: "1.2.3",
    }).toString();
    const res = await fetch(`${stack.url}/integrations/slack/commands`, {
      method: "POST",
      headers: await slackHeaders(SLACK_SECRET, body),
      body,
    });
    return {
      status: res.status,
      json: res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text(),
    };
  }

  async function slackAction(value: string, responseId: string, user = "U700") {
    const payload = {
      type: "block_actions",
      user: { id: user },
      team: { id: "T1" },
      channel: { id: "C1" },
      response_url: slack.responseUrl(responseId),
      actions: [{ action_id: "kiln_x", value }],
    };
    const body = new URLSearchParams({ payload: JSON.stringify(payload) }).toString();
    const res = await fetch(`${stack.url}/integrations/slack/interactions`, {
      method: "POST",
      headers: await slackHeaders(SLACK_SECRET, body),
      body,
    });
    return res.status;
  }

  let slackJobId = "";

  it("Slack: help, option errors and bad signatures", async () => {
    const help = await slackCommand("help", "r-help");
    assert.equal(help.json.response_type, "ephemeral");
    assert.match(help.json.text, /--negative[\s\S]*--size WxH/);
    const bad = await slackCommand("a cat --size big", "r-bad");
    assert.equal(bad.json.response_type, "ephemeral");
    assert.match(bad.json.text, /size must look like 512x768/);
    const body = "text=hi";
    const headers = await slackHeaders(SLACK_SECRET, body);
    const tampered = await fetch(`${stack.url}/integrations/slack/commands`, {
      method: "POST",
      headers,
      body: "text=ho",
    });
    assert.equal(tampered.status, 401);
    const stale = await fetch(`${stack.url}/integrations/slack/commands`, {
      method: "POST",
      headers: await slackHeaders(SLACK_SECRET, body, String(Math.floor(Date.now() / 1000) - 400)),
      body,
    });
    assert.equal(stale.status, 401);
  });

  it("Slack /kiln: ephemeral position, progress through response_url despite a 429, upload through the external-upload endpoints despite a 500", async (t) => {
    gate.close();
    slack.failNext(/^POST \/response\/r1$/, { status: 429, body: "rate limited", headers: { "retry-after": "1" } });
    slack.failNext(/^POST \/api\/chat\.postMessage$/, { status: 500, body: "oops" });
    const started = performance.now();
    const ack = await slackCommand("a blue bird --negative blurry, dark --size 64x64 --steps 4 --seed 9", "r1");
    t.diagnostic(`ephemeral ack after ${(performance.now() - started).toFixed(1)} ms`);
    assert.equal(ack.json.response_type, "ephemeral");
    assert.match(ack.json.text, /Queued, position 1/);
    slackJobId = /\((job_\w+)\)/.exec(ack.json.text)![1]!;
    const progress = await slack.waitFor(
      (c) => c.path === "/response/r1" && c.status === 200 && /Rendering \d+% — stage 1\/2/.test(c.json?.text ?? ""),
    );
    assert.equal(progress.json.replace_original, true);
    assert.ok(slack.calls.some((c) => c.path === "/response/r1" && c.status === 429));
    gate.open();
    const complete = await slack.waitFor((c) => c.path === "/api/files.completeUploadExternal" && c.status === 200);
    assert.equal(complete.form?.channel_id, "C1");
    assert.match(complete.form?.initial_comment ?? "", /<@U700> “a blue bird” \(not: blurry, dark\).*seed 9/);
    const fileId = JSON.parse(complete.form!.files!)[0].id as string;
    assert.deepEqual(await decodePng(slack.uploads.get(fileId)!.bytes!), { width: 64, height: 64 });
    const buttons = await slack.waitFor((c) => c.path === "/api/chat.postMessage" && c.status === 200);
    assert.ok(
      slack.calls.some((c) => c.path === "/api/chat.postMessage" && c.status === 500),
      "the 500 was retried",
    );
    const actions = JSON.parse(buttons.form!.blocks!)[0];
    assert.deepEqual(
      actions.elements.map((e: { value: string }) => e.value),
      ["reroll", "vary", "upscale", "info"].map((a) => `kiln:${a}:${slackJobId}`),
    );
    await slack.waitFor((c) => c.path === "/response/r1" && c.status === 200 && /Done/.test(c.json?.text ?? ""));
  });

  it("Slack buttons: info ephemerally, re-roll uploads a new picture, upscale uploads a larger one", async () => {
    assert.equal(await slackAction(`kiln:info:${slackJobId}`, "r-info"), 200);
    const info = await slack.waitFor((c) => c.path === "/response/r-info");
    assert.equal(info.json.response_type, "ephemeral");
    assert.match(info.json.text, new RegExp(`${slackJobId}[\\s\\S]*\\*Seed\\* 9`));
    assert.equal(await slackAction(`kiln:reroll:${slackJobId}`, "r-other", "U701"), 200);
    assert.match((await slack.waitFor((c) => c.path === "/response/r-other")).json.text, /Only <@U700>/);
    const uploadsBefore = slack.calls.filter((c) => c.path === "/api/files.completeUploadExternal").length;
    assert.equal(await slackAction(`kiln:reroll:${slackJobId}`, "r-reroll"), 200);
    await slack.waitFor((c) => c.path === "/response/r-reroll" && /Queued|Waiting|Rendering/.test(c.json?.text ?? ""));
    await slack.waitFor(
      () =>
        slack.calls.filter((c) => c.path === "/api/files.completeUploadExternal" && c.status === 200).length >
        uploadsBefore,
    );
    const last = slack.calls.filter((c) => c.path === "/api/files.completeUploadExternal").at(-1)!;
    assert.doesNotMatch(last.form!.initial_comment!, /seed 9\b/);
    const before = slack.calls.filter((c) => c.path === "/api/files.completeUploadExternal" && c.status === 200).length;
    assert.equal(await slackAction(`kiln:upscale:${slackJobId}`, "r-up"), 200);
    await slack.waitFor(
      () =>
        slack.calls.filter((c) => c.path === "/api/files.completeUploadExternal" && c.status === 200).length > before,
    );
    const upload = slack.calls
      .filter((c) => c.path === "/api/files.completeUploadExternal" && c.status === 200)
      .at(-1)!;
    assert.match(upload.form!.initial_comment!, /a blue bird.*128×128/);
    const upId = JSON.parse(upload.form!.files!)[0].id as string;
    assert.deepEqual(await decodePng(slack.uploads.get(upId)!.bytes!), { width: 128, height: 128 });
  });

  it("Slack without a bot token: the result is an image block whose signed URL serves the PNG", async () => {
    const job = (await stack.ports.jobs.get(slackJobId)) as JobRecord;
    const fresh = {
      ...job,
      chat: { ...job.chat!, responseUrl: slack.responseUrl("r-nobot"), receivedAt: Date.now() },
    } as JobRecord;
    const presenter = new SlackPresenter({ keys: stack.ports.keys, log: () => {} });
    const image = job.images[0]!;
    const url = await stack.ports.blobs.downloadUrl(image.key, { expiresSeconds: 600 });
    await presenter.ended(fresh, [
      { index: 0, filename: "x.png", contentType: "image/png", width: 64, height: 64, bytes: new Uint8Array(), url },
    ]);
    const posted = await slack.waitFor((c) => c.path === "/response/r-nobot");
    assert.equal(posted.json.response_type, "in_channel");
    const block = posted.json.blocks.find((b: { type: string }) => b.type === "image");
    const res = await fetch(block.image_url);
    assert.equal(res.status, 200);
    assert.deepEqual(await decodePng(Buffer.from(await res.arrayBuffer())), { width: 64, height: 64 });
    assert.ok(posted.json.blocks.some((b: { type: string }) => b.type === "actions"));
  });

  it("bots without secrets answer 404 and say why", async () => {
    const app = createApp({
      ...apiDeps(stack.config, stack.ports, createLogger({ level: "silent" })),
      chat: undefined,
    });
    assert.equal((await app.request("/integrations/discord", { method: "POST", body: "{}" })).status, 404);
    assert.equal((await app.request("/integrations/slack/commands", { method: "POST", body: "a=b" })).status, 404);
    const status = chatStatus({
      ...stack.config.chat,
      keyId: undefined,
      slack: { apiUrl: "x", signingSecret: undefined, botToken: undefined },
    });
    assert.match(status.discord, /disabled.*KILN_CHAT_KEY_ID/);
    assert.match(status.slack, /disabled.*KILN_SLACK_SIGNING_SECRET, KILN_CHAT_KEY_ID/);
  });
});
