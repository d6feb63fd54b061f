import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { sha256Hex } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";

import { type Service, startWebhookService } from "../../packages/cli/src/services.js";
import { api, download, type LocalStack, startLocalStack, waitForJob } from "../support/local-stack.js";
import {
  type ReceivedWebhook,
  startWebhookReceiver,
  verifyStandardWebhook,
  type WebhookReceiver,
} from "../support/webhook-receiver.js";

const small = { prompt: "a hook", width: 64, height: 64, steps: 3, mode: "base" };
const typeOf = (r: ReceivedWebhook) => JSON.parse(r.body).type as string;
const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Webhooks end to end on the local family: a render's events reach a loopback receiver, signed. */
describe("webhooks from renders", () => {
  let stack: LocalStack;
  let receiver: WebhookReceiver;
  let client: LocalStack;
  let secret: string;
  before(async () => {
    stack = await startLocalStack({ env: { KILN_WEBHOOK_ALLOW_PRIVATE: "true", KILN_WEBHOOK_BACKOFF_SECONDS: "1" } });
    const created = await api(stack, "POST", "/v1/keys", { name: "hooks" });
    client = { ...stack, key: created.json.key };
    secret = created.json.webhook_secret;
  });
  after(async () => {
    await receiver?.close();
    await stack.stop();
  });

  it("delivers started and succeeded, signed with the key's secret, retrying a failed attempt under the same webhook-id", async () => {
    receiver = await startWebhookReceiver((n) => (n === 1 ? 500 : 204));
    const submitted = await api(client, "POST", "/v1/renders", { ...small, webhook: { url: receiver.url } });
    assert.equal(submitted.status, 202, submitted.text);
    const job = await waitForJob(client, submitted.json.id);
    assert.equal(job.status, "succeeded");
    const got = await receiver.waitFor(3);
    await settle(300);
    assert.equal(receiver.received.length, 3, "two events, one of them twice");

    for (const r of got)
      assert.ok(verifyStandardWebhook(secret, r.headers, r.body), `signature of ${typeOf(r)} verifies`);
    assert.equal(
      verifyStandardWebhook(secret.replace(/^whsec_./, "whsec_A"), got[0]!.headers, got[0]!.body),
      false,
      "not with another secret",
    );
    const byId = new Map<string, ReceivedWebhook[]>();
    for (const r of got)
      byId.set(r.headers["webhook-id"] as string, [...(byId.get(r.headers["webhook-id"] as string) ?? []), r]);
    assert.equal(byId.size, 2);
    const retried = [...byId.values()].find((rs) => rs.length === 2)!;
    assert.deepEqual(
      retried.map((r) => r.status),
      [500, 204],
      "the failed attempt was retried under its webhook-id",
    );
    assert.equal(retried[0]!.body, retried[1]!.body);
    assert.deepEqual(new Set(got.map(typeOf)), new Set(["render.started", "render.succeeded"]));

    const done = JSON.parse(got.find((r) => typeOf(r) === "render.succeeded")!.body);
    assert.equal(done.data.id, job.id);
    assert.equal(done.data.status, "succeeded");
    assert.match(done.timestamp, /^\d{4}-\d\d-\d\dT/);
    const png = await download(done.data.images[0].url);
    assert.equal(png.subarray(1, 4).toString("latin1"), "PNG", "the payload's image link works");
  });

  it("sends only the events a webhook lists, progress included when asked", async () => {
    await receiver.close();
    receiver = await startWebhookReceiver();
    const only = await api(client, "POST", "/v1/renders", {
      ...small,
      webhook: { url: receiver.url, events: ["succeeded"] },
    });
    await waitForJob(client, only.json.id);
    await receiver.waitFor(1);
    await settle(500);
    assert.deepEqual(receiver.received.map(typeOf), ["render.succeeded"]);

    const withProgress = await api(client, "POST", "/v1/renders", {
      ...small,
      steps: 12,
      webhook: { url: receiver.url, events: ["progress", "failed", "succeeded"] },
    });
    await waitForJob(client, withProgress.json.id);
    await receiver.waitFor(3);
    await settle(500);
    const types = receiver.received.slice(1).map(typeOf);
    assert.equal(types.filter((t) => t === "render.succeeded").length, 1);
    const progress = types.filter((t) => t === "render.progress").length;
    assert.ok(progress >= 1 && progress < 12, `${progress} progress webhooks for 12 steps (throttled)`);
  });
});

describe("webhooks from API-side moves", () => {
  let stack: LocalStack;
  let receiver: WebhookReceiver;
  let dispatcher: Service;
  before(async () => {
    stack = await startLocalStack({ worker: false, env: { KILN_WEBHOOK_ALLOW_PRIVATE: "true" } });
    dispatcher = startWebhookService(stack.config, stack.ports, createLogger({ level: "silent" }));
    receiver = await startWebhookReceiver();
  });
  after(async () => {
    await dispatcher.stop();
    await receiver.close();
    await stack.stop();
  });

  it("delivers canceled and expired (failure events) for jobs no worker touched", async () => {
    const secret = (await stack.ports.keys.list())[0]!.webhookSecret!;
    const hook = { url: receiver.url, events: ["canceled", "expired"] };
    const canceled = await api(stack, "POST", "/v1/renders", { ...small, webhook: hook });
    assert.equal((await api(stack, "DELETE", `/v1/renders/${canceled.json.id}`)).status, 200);
    const expiring = await api(stack, "POST", "/v1/renders", { ...small, deadline_seconds: 1, webhook: hook });
    await settle(1_200);
    assert.equal((await api(stack, "GET", `/v1/renders/${expiring.json.id}`)).json.status, "expired");

    const got = await receiver.waitFor(2);
    const events = Object.fromEntries(got.map((r) => [typeOf(r), JSON.parse(r.body).data]));
    assert.equal(events["render.canceled"]?.id, canceled.json.id);
    assert.equal(events["render.expired"]?.id, expiring.json.id);
    assert.equal(events["render.expired"]?.error.code, "deadline_passed");
    for (const r of got) assert.ok(verifyStandardWebhook(secret, r.headers, r.body));
  });
});

describe("webhook URLs refused at submit", () => {
  let stack: LocalStack;
  before(async () => {
    stack = await startLocalStack({ worker: false });
  });
  after(() => stack.stop());

  it("refuses loopback, private, link-local and metadata targets, literal or by name, naming the field", async () => {
    for (const url of [
      "http://127.0.0.1:8080/hook",
      "http://10.0.0.1/hook",
      "http://192.168.1.20/hook",
      "http://169.254.169.254/latest/meta-data/",
      "http://[::1]/hook",
      "http://[::ffff:127.0.0.1]/hook",
      "http://0x7f.0.0.1/hook",
      "http://localhost:9/hook",
    ]) {
      const res = await api(stack, "POST", "/v1/renders", { ...small, webhook: { url } });
      assert.equal(res.status, 400, `${url}: ${res.text}`);
      assert.equal(res.headers.get("content-type"), "application/problem+json");
      assert.equal(res.json.code, "webhook_url_refused", url);
      assert.equal(res.json.errors[0].field, "webhook.url");
    }
    const bad = await api(stack, "POST", "/v1/renders", { ...small, webhook: { url: "ftp://example.com/x" } });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.errors[0].field, "webhook.url");
    const unknown = await api(stack, "POST", "/v1/renders", {
      ...small,
      webhook: { url: "https://93.184.216.34/h", events: ["done"] },
    });
    assert.equal(unknown.status, 400);
    assert.match(unknown.json.errors[0].field, /^webhook\.events/);
    const accepted = await api(stack, "POST", "/v1/renders", {
      ...small,
      webhook: { url: "https://93.184.216.34/hook", events: ["failed"] },
    });
    assert.equal(accepted.status, 202, "a public address is accepted");
    assert.deepEqual((await stack.ports.jobs.get(accepted.json.id))?.webhook, {
      url: "https://93.184.216.34/hook",
      events: ["failed"],
    });
  });

  it("refuses a webhook for a key that has no signing secret", async () => {
    // A key stored before keys had webhook secrets.
    const legacyKey = `kiln_legacy0000_${"L".repeat(43)}`;
    await stack.ports.keys.insert({
      id: "key_legacy",
      prefix: "legacy0000",
      name: "legacy",
      scopes: ["render"],
      hash: await sha256Hex(legacyKey),
      createdAt: new Date().toISOString(),
    });
    const legacy = { ...stack, key: legacyKey };
    const res = await api(legacy, "POST", "/v1/renders", { ...small, webhook: { url: "https://93.184.216.34/hook" } });
    assert.equal(res.status, 400, res.text);
    assert.equal(res.json.code, "webhook_secret_missing");
    assert.equal(
      (await api(legacy, "POST", "/v1/renders", small)).status,
      202,
      "the key still renders without a webhook",
    );
  });
});
