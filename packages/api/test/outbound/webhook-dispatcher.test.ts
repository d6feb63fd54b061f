import assert from "node:assert/strict";
import dns from "node:dns";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, afterEach, beforeEach, describe, it } from "node:test";

import { createApiKey, type JobEvent, type JobRecord, type Ports, WEBHOOK_QUEUE } from "@kiln/shared";
import { openLocalPorts } from "@kiln/shared/local";
import { createLogger } from "@kiln/shared/node";

import {
  startWebhookReceiver,
  verifyStandardWebhook,
  type WebhookReceiver,
} from "../../../../test/support/webhook-receiver.js";
import { WebhookDispatcher, type WebhookDispatcherOptions } from "../../src/entry/webhook-dispatcher.js";
import { type WebhookDelivery, webhookEventSink } from "../../src/outbound/webhooks/events.js";
import { jobRecord } from "../fixtures.js";

const tempDirs: string[] = [];
after(() => {
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

function openPorts(dir: string, now?: () => number): Ports {
  return openLocalPorts({
    dataDir: dir,
    publicBaseUrl: "http://127.0.0.1:1",
    urlSecret: "s".repeat(16),
    maxReceives: 5,
    now,
  });
}

const realLookup = dns.lookup;
const logger = createLogger({ level: process.env.KILN_TEST_LOG ?? "silent" });
const allowAll = { allowPrivate: true, allowedHosts: [] as string[] };

async function until(check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("webhook dispatcher", () => {
  let dir: string;
  let ports: Ports;
  let secret: string;
  let keyId: string;
  let receiver: WebhookReceiver | undefined;
  const dispatchers: WebhookDispatcher[] = [];

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-webhooks-"));
    tempDirs.push(dir);
    ports = openPorts(dir);
    const { record } = await createApiKey(ports.keys, { name: "hooks", scopes: ["render"] });
    secret = record.webhookSecret!;
    keyId = record.id;
  });
  afterEach(async () => {
    for (const d of dispatchers.splice(0)) await d.stop();
    await receiver?.close();
    receiver = undefined;
    await ports.close();
  });

  function dispatcher(options: Partial<WebhookDispatcherOptions> = {}, on: Ports = ports): WebhookDispatcher {
    const d = new WebhookDispatcher({
      ports: on,
      logger,
      policy: allowAll,
      retryWindowMs: 24 * 3_600_000,
      backoffBaseSeconds: 1,
      timeoutMs: 5_000,
      pollWaitSeconds: 1,
      ...options,
    });
    d.start();
    dispatchers.push(d);
    return d;
  }

  const job = (url: string, patch: Partial<JobRecord> = {}) =>
    jobRecord(
      { width: 64, height: 64 },
      { id: "job_hook1", ownerKeyId: keyId, status: "succeeded", webhook: { url }, ...patch },
    );

  async function emit(
    url: string,
    type: JobEvent["type"] = "succeeded",
    patch: Partial<JobRecord> = {},
  ): Promise<void> {
    const sink = webhookEventSink({
      queue: ports.queue,
      blobs: ports.blobs,
      publicUrl: "http://kiln.test",
      downloadUrlSeconds: 60,
    });
    await sink({ type, job: job(url, patch), at: "2030-01-01T00:00:05.000Z" });
  }

  const queueEmpty = async (on: Ports = ports) => {
    const d = await on.queue.depth(WEBHOOK_QUEUE);
    return d.visible + d.inFlight + d.delayed === 0;
  };

  it("retries a failing receiver with growing waits, same webhook-id, a fresh valid signature each time", async () => {
    receiver = await startWebhookReceiver((n) => (n <= 2 ? 500 : 200));
    await emit(receiver.url);
    dispatcher();
    const attempts = await receiver.waitFor(3);
    const ids = new Set(attempts.map((a) => a.headers["webhook-id"]));
    assert.equal(ids.size, 1, "one webhook-id across retries");
    assert.match(
      [...ids][0] as string,
      /^msg_\w+_succeeded$/,
      "derived from the job and the event, so a repeated event keeps its id",
    );
    for (const a of attempts) {
      assert.ok(verifyStandardWebhook(secret, a.headers, a.body), "signature verifies independently");
      assert.equal(a.body, attempts[0]!.body, "the same bytes every time");
      assert.equal(a.headers["content-type"], "application/json");
    }
    assert.equal(
      verifyStandardWebhook(secret, attempts[0]!.headers, attempts[0]!.body.replace("succeeded", "failed")),
      false,
      "the verifier can fail",
    );
    const [g1, g2] = [attempts[1]!.at - attempts[0]!.at, attempts[2]!.at - attempts[1]!.at];
    assert.ok(g1 >= 900, `first wait ${g1} ms ≈ 1 s`);
    assert.ok(g2 >= 1_900, `second wait ${g2} ms ≈ 2 s (doubled)`);
    const payload = JSON.parse(attempts[0]!.body);
    assert.equal(payload.type, "render.succeeded");
    assert.equal(payload.timestamp, "2030-01-01T00:00:05.000Z");
    assert.equal(payload.data.id, "job_hook1");
    assert.equal(payload.data.status, "succeeded");
    assert.equal(payload.data.links.self, "http://kiln.test/v1/renders/job_hook1");
    await until(() => queueEmpty());
  });

  it("survives a restart mid-retry: a new dispatcher on the same data dir delivers with the same webhook-id", async () => {
    receiver = await startWebhookReceiver((n) => (n === 1 ? 503 : 200));
    await emit(receiver.url);
    const first = dispatcher();
    await receiver.waitFor(1);
    await first.stop();
    await ports.close();
    assert.equal(receiver.received.length, 1, "nothing more while no dispatcher runs");

    ports = openPorts(dir);
    assert.deepEqual(
      await ports.queue.depth(WEBHOOK_QUEUE),
      { visible: 0, inFlight: 0, delayed: 1 },
      "the retry waits in the queue",
    );
    dispatcher();
    const [a, b] = await receiver.waitFor(2);
    assert.equal(b!.headers["webhook-id"], a!.headers["webhook-id"]);
    assert.equal(b!.status, 200);
    assert.ok(verifyStandardWebhook(secret, b!.headers, b!.body));
    await until(() => queueEmpty());
  });

  it("refuses private targets at delivery, after resolving names (also a name that rebinds to loopback)", async () => {
    receiver = await startWebhookReceiver(() => 200);
    const port = new URL(receiver.url).port;
    // A resolver that answers loopback for rebind.test (as a rebinding DNS would at delivery time) and asks the system for the rest.
    const rebinding = ((
      host: string,
      options: dns.LookupAllOptions,
      callback: (e: NodeJS.ErrnoException | null, a: dns.LookupAddress[]) => void,
    ) =>
      host === "rebind.test"
        ? callback(null, [{ address: "127.0.0.1", family: 4 }])
        : realLookup(host, options, callback)) as unknown as typeof dns.lookup;
    for (const url of [
      receiver.url,
      `http://10.0.0.1:${port}/hook`,
      `http://169.254.169.254:${port}/latest/meta-data/`,
      `http://[::1]:${port}/hook`,
      `http://localhost:${port}/hook`,
      `http://rebind.test:${port}/hook`,
    ]) {
      await emit(url);
    }
    const strict = dispatcher({ policy: { allowPrivate: false, allowedHosts: [] }, lookup: rebinding });
    await until(() => queueEmpty());
    await strict.stop();
    assert.equal(receiver.received.length, 0, "no request reached the loopback receiver");

    // The same path delivers once the host is allowed: the refusals above were the policy's.
    await emit(`http://localhost:${port}/hook`);
    dispatcher({ policy: { allowPrivate: false, allowedHosts: ["localhost"] } });
    await receiver.waitFor(1);
  });

  it("gives up once the next attempt would fall outside the retry window", async () => {
    receiver = await startWebhookReceiver(() => 500);
    await emit(receiver.url);
    dispatcher({ retryWindowMs: 1_500 });
    await receiver.waitFor(2);
    await until(() => queueEmpty());
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    assert.equal(receiver.received.length, 2, "attempts at 0 s and 1 s; a third at 3 s would pass the 1.5 s window");
  });

  it("carries a wait longer than a queue delay allows in hops of at most 900 s", async () => {
    receiver = await startWebhookReceiver(() => 200);
    const delivery: WebhookDelivery = {
      v: 1,
      id: "msg_later",
      keyId,
      jobId: "job_hook1",
      url: receiver.url,
      event: "failed",
      body: "{}",
      firstAttemptAt: Date.now(),
      attempt: 5,
      notBefore: Date.now() + 2_000_000,
    };
    await ports.queue.send(WEBHOOK_QUEUE, delivery);
    dispatcher();
    await until(async () => (await ports.queue.depth(WEBHOOK_QUEUE)).delayed === 1);
    assert.equal(receiver.received.length, 0);
    const later = openPorts(dir, () => Date.now() + 901_000);
    try {
      const [hop] = await later.queue.receive<WebhookDelivery>(WEBHOOK_QUEUE, { visibilitySeconds: 30 });
      assert.deepEqual(hop?.body, delivery, "visible again within 900 s, unchanged, to hop on");
    } finally {
      await later.close();
    }
  });

  it("drops a delivery whose key has gone, and a message it cannot read", async () => {
    receiver = await startWebhookReceiver(() => 200);
    await emit(receiver.url, "succeeded", { ownerKeyId: "key_gone" });
    await ports.queue.send(WEBHOOK_QUEUE, { not: "a delivery" });
    dispatcher();
    await until(() => queueEmpty());
    assert.equal(receiver.received.length, 0);
  });
});

describe("webhook event sink", () => {
  let dir: string;
  let ports: Ports;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-sink-"));
    tempDirs.push(dir);
    ports = openPorts(dir);
  });
  afterEach(() => ports.close());

  async function queued(): Promise<WebhookDelivery[]> {
    const out: WebhookDelivery[] = [];
    for (;;) {
      const batch = await ports.queue.receive<WebhookDelivery>(WEBHOOK_QUEUE, { max: 10, visibilitySeconds: 60 });
      if (batch.length === 0) return out;
      out.push(...batch.map((m) => m.body));
    }
  }

  it("queues only the events a job's webhook asked for (default: all but progress)", async () => {
    let clock = 1_000_000;
    const sink = webhookEventSink({
      queue: ports.queue,
      blobs: ports.blobs,
      publicUrl: "http://kiln.test/",
      downloadUrlSeconds: 60,
      now: () => clock,
    });
    const at = "2030-01-01T00:00:00.000Z";
    const plain = jobRecord({ width: 64, height: 64 }, { id: "job_a", status: "running" });
    await sink({ type: "started", job: plain, at });
    assert.deepEqual(await queued(), [], "no webhook, nothing queued");

    const hooked = { ...plain, webhook: { url: "https://example.com/h" } };
    for (const type of ["started", "progress", "succeeded"] as const)
      await sink({ type, job: { ...hooked, status: type === "succeeded" ? "succeeded" : "running" }, at });
    assert.deepEqual(
      (await queued()).map((d) => d.event),
      ["started", "succeeded"],
    );

    const picky = {
      ...plain,
      id: "job_b",
      webhook: { url: "https://example.com/h", events: ["failed" as const, "progress" as const] },
    };
    await sink({ type: "succeeded", job: picky, at });
    const atStep = (step: number) => ({
      ...picky,
      progress: { stage: 0, stageKind: "base" as const, step, steps: 10 },
    });
    for (let i = 0; i < 5; i++) {
      await sink({ type: "progress", job: atStep(i + 1), at });
      clock += 300;
    }
    clock += 1_000;
    await sink({ type: "progress", job: atStep(9), at });
    await sink({ type: "failed", job: { ...picky, status: "failed" }, at });
    const deliveries = await queued();
    assert.deepEqual(
      deliveries.map((d) => d.event),
      ["progress", "progress", "failed"],
      "progress at most every 2 s",
    );
    const body = JSON.parse(deliveries[2]!.body);
    assert.equal(body.type, "render.failed");
    assert.equal(body.data.id, "job_b");
    assert.equal(body.data.links.self, "http://kiln.test/v1/renders/job_b");
    assert.equal(deliveries[2]!.keyId, "key_test");
    assert.equal(deliveries[2]!.attempt, 1);
    assert.equal(new Set(deliveries.map((d) => d.id)).size, 3, "each event has its own webhook-id");
    await sink({ type: "failed", job: { ...picky, status: "failed" }, at });
    const repeated = await queued();
    assert.equal(
      repeated.at(-1)!.id,
      deliveries[2]!.id,
      "a repeated event (at-least-once transitions) keeps its webhook-id",
    );
  });
});
