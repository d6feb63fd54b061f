/**
 * The AWS family of ports against real-protocol stand-ins on loopback (fauxqs for SQS and S3,
 * dynalite for DynamoDB): the shared contract, then what only the AWS family has to prove.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { GetItemCommand } from "@aws-sdk/client-dynamodb";
import { HeadObjectCommand } from "@aws-sdk/client-s3";
import { GetQueueAttributesCommand, GetQueueUrlCommand, ReceiveMessageCommand } from "@aws-sdk/client-sqs";

import { type AwsClients, createAwsClients, openAwsPorts } from "../src/adapters/aws/index.js";
import { KilnError } from "../src/errors.js";
import type { Ports } from "../src/ports/index.js";
import type { JobRecord } from "../src/schemas/job.js";
import { CONTRACT_MAX_RECEIVES, CONTRACT_QUEUES, describePortsContract } from "./contract/ports-contract.js";
import { type AwsStandins, openStandinPorts, startAwsStandins } from "./support/aws-standins.js";

/** Stand-ins not yet stopped: a safety net so a failing case cannot leave servers keeping this process alive. */
const running = new Set<AwsStandins>();
after(() => Promise.all([...running].map((standins) => standins.stop())));

describePortsContract(
  "aws (fauxqs + dynalite)",
  async () => {
    const standins = await startAwsStandins();
    running.add(standins);
    const cleanup = async () => {
      running.delete(standins);
      await standins.stop();
    };
    try {
      const { ports } = await openStandinPorts(standins, {
        queues: CONTRACT_QUEUES,
        maxReceives: CONTRACT_MAX_RECEIVES,
      });
      return { ports, cleanup };
    } catch (e) {
      await cleanup();
      throw e;
    }
  },
  { conditionalPut: false },
);

describe("aws family only", () => {
  const MAX_RECEIVES = 2;
  let standins: AwsStandins;
  let ports: Ports;
  let clients: AwsClients;

  before(async () => {
    standins = await startAwsStandins();
    const opened = await openStandinPorts(standins, {
      queues: ["kiln-base"],
      maxReceives: MAX_RECEIVES,
      queuePrefix: "only-",
    });
    ports = opened.ports;
    clients = createAwsClients(opened.options);
  });
  after(async () => {
    await ports.close();
    clients.sqs.destroy();
    clients.s3.destroy();
    clients.dynamo.destroy();
    await standins.stop();
  });

  it("dead-letters through SQS's own redrive policy when visibility lapses, not through the adapter", async () => {
    const { QueueUrl: sourceUrl } = await clients.sqs.send(new GetQueueUrlCommand({ QueueName: "only-kiln-base" }));
    const { Attributes } = await clients.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: sourceUrl, AttributeNames: ["RedrivePolicy"] }),
    );
    assert.equal(JSON.parse(Attributes?.RedrivePolicy ?? "{}").maxReceiveCount, MAX_RECEIVES);

    const id = await ports.queue.send("kiln-base", { poison: "visibility" });
    for (let n = 1; n <= MAX_RECEIVES; n++) {
      const [message] = await ports.queue.receive("kiln-base", { visibilitySeconds: 1, waitSeconds: 2 });
      assert.equal(message?.receiveCount, n);
      // Neither ack nor release: the visibility timeout runs out, as when a worker dies.
      await sleep(1_100);
    }
    assert.deepEqual(await ports.queue.receive("kiln-base", { visibilitySeconds: 1, waitSeconds: 1 }), []);

    const { QueueUrl: dlqUrl } = await clients.sqs.send(new GetQueueUrlCommand({ QueueName: "only-kiln-base-dlq" }));
    const { Messages = [] } = await clients.sqs.send(
      new ReceiveMessageCommand({ QueueUrl: dlqUrl, VisibilityTimeout: 0 }),
    );
    assert.equal(Messages.length, 1, "SQS moved the message into the DLQ");
    assert.equal(Messages[0]?.MessageId, id);
    assert.deepEqual(JSON.parse(Messages[0]?.Body ?? "null"), { poison: "visibility" });

    assert.equal(await ports.queue.redrive("kiln-base"), 1);
    const [back] = await ports.queue.receive("kiln-base", { visibilitySeconds: 30, waitSeconds: 1 });
    assert.equal(back?.id, id, "a redriven message keeps its id");
    assert.equal(back?.receiveCount, 1);
    await ports.queue.ack("kiln-base", back!.receipt);
  });

  it("redrives at most `max` dead letters", async () => {
    for (let i = 0; i < 3; i++) await ports.queue.send("kiln-base", { i });
    for (let round = 1; round <= MAX_RECEIVES; round++) {
      const batch = await ports.queue.receive("kiln-base", { max: 10, visibilitySeconds: 30, waitSeconds: 1 });
      assert.equal(batch.length, 3, `round ${round} delivers all three`);
      for (const m of batch) await ports.queue.release("kiln-base", m.receipt, 0);
    }
    assert.deepEqual(await ports.queue.receive("kiln-base", { max: 10, visibilitySeconds: 30, waitSeconds: 1 }), []);
    assert.equal((await ports.queue.depth("kiln-base-dlq")).visible, 3);

    assert.equal(await ports.queue.redrive("kiln-base", { max: 2 }), 2);
    assert.equal((await ports.queue.peekDeadLetters("kiln-base")).length, 1);
    assert.equal(await ports.queue.redrive("kiln-base"), 1);
    const back = await ports.queue.receive("kiln-base", { max: 10, visibilitySeconds: 30, waitSeconds: 1 });
    assert.deepEqual(back.map((m) => (m.body as { i: number }).i).sort(), [0, 1, 2]);
    for (const m of back) await ports.queue.ack("kiln-base", m.receipt);
  });

  it("resolves queue URLs from config before asking SQS, and names a missing queue", async () => {
    const { QueueUrl } = await clients.sqs.send(new GetQueueUrlCommand({ QueueName: "only-kiln-base" }));
    const direct = openAwsPorts({
      region: standins.region,
      endpoint: standins.sqsEndpoint,
      dynamoEndpoint: standins.dynamoEndpoint,
      credentials: standins.credentials,
      bucket: "kiln-test",
      table: "kiln-test",
      // No prefix: only the explicit URL can find the queue.
      queueUrls: { "kiln-base": QueueUrl! },
      maxReceives: MAX_RECEIVES,
    });
    try {
      await direct.queue.send("kiln-base", { via: "explicit url" });
      const [message] = await ports.queue.receive("kiln-base", { visibilitySeconds: 30, waitSeconds: 1 });
      assert.deepEqual(message?.body, { via: "explicit url" });
      await ports.queue.ack("kiln-base", message!.receipt);
      await assert.rejects(direct.queue.send("kiln-refine", {}), (e: unknown) => {
        assert.ok(e instanceof KilnError);
        assert.equal(e.code, "queue_not_found");
        assert.match(e.message, /"kiln-refine"/);
        return true;
      });
    } finally {
      await direct.close();
    }
  });

  it("treats a receipt whose delivery has ended as a no-op, as the local family does", async () => {
    await ports.queue.send("kiln-base", { stale: true });
    const [first] = await ports.queue.receive("kiln-base", { visibilitySeconds: 30, waitSeconds: 1 });
    assert.ok(first);
    await ports.queue.release("kiln-base", first.receipt, 0);
    await ports.queue.extend("kiln-base", first.receipt, 60);
    await ports.queue.release("kiln-base", first.receipt, 60);
    const [again] = await ports.queue.receive("kiln-base", { visibilitySeconds: 30, waitSeconds: 1 });
    assert.equal(again?.id, first.id, "the stale extend and release did not hide the message");
    await ports.queue.ack("kiln-base", again!.receipt);
  });

  it("writes only if absent on a best-effort basis where the endpoint ignores If-None-Match", async () => {
    assert.equal(ports.blobs.supportsConditionalPut, false);
    assert.deepEqual(await ports.blobs.put("jobs/once/0.latents", Uint8Array.of(1, 2), { ifAbsent: true }), {
      created: true,
    });
    assert.deepEqual(await ports.blobs.put("jobs/once/0.latents", Uint8Array.of(3), { ifAbsent: true }), {
      created: false,
    });
    assert.deepEqual(
      Buffer.from((await ports.blobs.get("jobs/once/0.latents"))!),
      Buffer.from([1, 2]),
      "the first write stands",
    );
  });

  it("serves a presigned download URL that fetch() can read, with the suggested file name", async () => {
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) % 256);
    await ports.blobs.put("jobs/p1/images/0.png", bytes, { contentType: "image/png" });
    const url = await ports.blobs.downloadUrl("jobs/p1/images/0.png", {
      expiresSeconds: 300,
      filename: "lighthouse ü.png",
    });
    const parsed = new URL(url);
    assert.equal(parsed.hostname, "127.0.0.1");
    assert.equal(parsed.searchParams.get("X-Amz-Expires"), "300");
    assert.equal(
      parsed.searchParams.get("response-content-disposition"),
      `attachment; filename="lighthouse _.png"; filename*=UTF-8''lighthouse%20%C3%BC.png`,
    );
    const response = await fetch(url);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "image/png");
    assert.deepEqual(Buffer.from(await response.arrayBuffer()), Buffer.from(bytes));
    await assert.rejects(ports.blobs.downloadUrl("jobs/p1/images/0.png", { expiresSeconds: 8 * 24 * 3600 }), /7 days/);
  });

  it("uploads a 12 MiB blob in 5 MiB parts and reads it back intact", async () => {
    const bytes = new Uint8Array(12 * 1024 * 1024);
    for (let i = 0; i < bytes.length; i += 4096) bytes[i] = (i / 4096) % 251;
    bytes[bytes.length - 1] = 42;
    assert.deepEqual(
      await ports.blobs.put("jobs/big/latents.bin", bytes, { contentType: "application/octet-stream" }),
      { created: true },
    );
    const { ETag } = await clients.s3.send(new HeadObjectCommand({ Bucket: "kiln-test", Key: "jobs/big/latents.bin" }));
    assert.match(ETag ?? "", /-3"?$/, "a multipart ETag names its 3 parts");
    assert.deepEqual(await ports.blobs.head("jobs/big/latents.bin"), {
      size: bytes.length,
      contentType: "application/octet-stream",
    });
    const back = await ports.blobs.get("jobs/big/latents.bin");
    assert.ok(back && Buffer.from(back).equals(Buffer.from(bytes)), "the blob round-trips byte for byte");
  });

  it("lets exactly one of 20 concurrent updates with the same expected version win", async () => {
    const at = new Date().toISOString();
    const job: JobRecord = {
      id: "race-1",
      ownerKeyId: "key-1",
      status: "queued",
      version: 1,
      createdAt: at,
      updatedAt: at,
      plan: {} as JobRecord["plan"],
      images: [],
      stageTimings: [],
    };
    assert.equal(await ports.jobs.create(job), true);
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        ports.jobs.update(
          "race-1",
          { version: 1, status: ["queued"] },
          { status: "running", stageTimings: [{ stage: 0, kind: "base", worker: `w${i}`, startedAt: at }] },
        ),
      ),
    );
    const winners = results.filter((r) => r !== null);
    assert.equal(winners.length, 1);
    const stored = await ports.jobs.get("race-1");
    assert.equal(stored?.version, 2);
    assert.deepEqual(stored?.stageTimings, winners[0]?.stageTimings, "the stored record is the winner's");
  });

  it("keeps a job's queue position in step with its status through the sparse index", async () => {
    const make = (id: string, second: number): JobRecord => {
      const at = new Date(Date.UTC(2024, 0, 1, 0, 0, second)).toISOString();
      return {
        id,
        ownerKeyId: "key-q",
        status: "queued",
        version: 1,
        createdAt: at,
        updatedAt: at,
        plan: {} as JobRecord["plan"],
        images: [],
        stageTimings: [],
      };
    };
    const [a, b, c] = [make("pos-a", 1), make("pos-b", 2), make("pos-c", 3)];
    for (const job of [a, b, c]) await ports.jobs.create(job);
    assert.equal(await ports.jobs.countQueuedBefore(c), 2);
    await ports.jobs.update("pos-a", { version: 1 }, { status: "running" });
    assert.equal(await ports.jobs.countQueuedBefore(c), 1, "a running job leaves the queue");
    await ports.jobs.update("pos-a", { version: 2 }, { status: "queued" });
    assert.equal(await ports.jobs.countQueuedBefore(c), 2, "a requeued job takes its old place");
  });

  it("rejects a page cursor it did not issue", async () => {
    await assert.rejects(ports.jobs.listByOwner("key-1", { limit: 5, cursor: "bm90LWEtY3Vyc29y!" }), (e: unknown) => {
      assert.ok(e instanceof KilnError);
      assert.equal(e.code, "cursor_invalid");
      return true;
    });
  });

  it("keeps key prefixes unique and frees the prefix of a key that could not be stored", async () => {
    const key = {
      id: "k-1",
      prefix: "aaaa1111",
      name: "ci",
      scopes: ["render" as const],
      hash: "cd".repeat(32),
      createdAt: "2024-05-01T12:00:00.000Z",
    };
    await ports.keys.insert(key);
    await assert.rejects(
      ports.keys.insert({ ...key, id: "k-2" }),
      (e: unknown) => e instanceof KilnError && e.code === "key_exists",
    );
    await assert.rejects(
      ports.keys.insert({ ...key, prefix: "bbbb2222" }),
      (e: unknown) => e instanceof KilnError && e.code === "key_exists",
    );
    assert.equal(await ports.keys.getByPrefix("bbbb2222"), null);
    await ports.keys.insert({ ...key, id: "k-3", prefix: "bbbb2222" });
    assert.equal((await ports.keys.getByPrefix("bbbb2222"))?.id, "k-3");
    assert.equal(await ports.keys.get("k-2"), null);
  });

  it("restarts a counter whose expiry has passed though TTL has not deleted it yet", async () => {
    const now = Math.floor(Date.now() / 1000);
    assert.equal(await ports.keys.incrementCounter("window:past", 5, now - 10), 5);
    assert.equal(await ports.keys.incrementCounter("window:past", 1, now + 3600), 1, "the lapsed count is gone");
    assert.equal(await ports.keys.incrementCounter("window:past", 1, now + 7200), 2, "the live counter keeps counting");
    const { Item } = await clients.dynamo.send(
      new GetItemCommand({ TableName: "kiln-test", Key: { pk: { S: "COUNTER#window:past" }, sk: { S: "COUNTER" } } }),
    );
    assert.equal(Item?.expiresAt?.N, String(now + 3600), "and keeps the expiry it restarted with");
  });
});
