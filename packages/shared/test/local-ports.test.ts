import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

import Database from "better-sqlite3";

import type { LocalPortsOptions } from "../src/adapters/local/index.js";
import { openLocalPorts, openSqliteDatabase, SCHEMA_VERSION } from "../src/adapters/local/index.js";
import { isKilnError } from "../src/errors.js";
import type { Ports } from "../src/ports/index.js";
import { verifyDownloadSignature } from "../src/signed-url.js";
import { CONTRACT_MAX_RECEIVES, describePortsContract } from "./contract/ports-contract.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../..");
const localIndex = path.resolve(here, "../src/adapters/local/index.ts");
const SECRET = "test-url-secret";
const Q = "kiln-base";

const tempDirs: string[] = [];
function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-local-"));
  tempDirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

const open = (dataDir: string, extra: Partial<LocalPortsOptions> = {}): Ports =>
  openLocalPorts({
    dataDir,
    publicBaseUrl: "http://127.0.0.1:8080",
    urlSecret: SECRET,
    maxReceives: CONTRACT_MAX_RECEIVES,
    ...extra,
  });

const rejectsWithCode = (promise: Promise<unknown>, code: string) =>
  assert.rejects(promise, (e: unknown) => isKilnError(e) && e.code === code);

describePortsContract("local", async () => {
  const dir = tempDir();
  return { ports: open(dir), cleanup: async () => fs.rmSync(dir, { recursive: true, force: true }) };
});

describe("local family", () => {
  describe("database", () => {
    it("opens in WAL mode at the latest schema and keeps data across reopening", async () => {
      const dir = tempDir();
      const first = open(dir);
      await first.queue.send(Q, { kept: true });
      await first.close();

      const db = new Database(path.join(dir, "kiln.db"), { readonly: true });
      assert.equal(db.pragma("journal_mode", { simple: true }), "wal");
      assert.equal(db.pragma("user_version", { simple: true }), SCHEMA_VERSION);
      db.close();

      const second = open(dir);
      assert.equal((await second.queue.depth(Q)).visible, 1);
      await second.close();
    });

    it("refuses a database written by a newer Kiln", () => {
      const dir = tempDir();
      openSqliteDatabase(dir).close();
      const db = new Database(path.join(dir, "kiln.db"));
      db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
      db.close();
      assert.throws(
        () => openSqliteDatabase(dir),
        (e: unknown) => isKilnError(e) && e.code === "data_dir_too_new",
      );
    });
  });

  describe("queue", () => {
    let clock = 1_700_000_000_000;
    let ports: Ports;
    before(() => {
      ports = open(tempDir(), { now: () => clock, maxReceives: 5 });
    });
    after(() => ports.close());

    it("ignores ack, extend and release with a stale receipt", async () => {
      const id = await ports.queue.send(Q, { n: 1 });
      const [first] = await ports.queue.receive(Q, { visibilitySeconds: 10 });
      assert.ok(first);
      clock += 11_000;
      const [second] = await ports.queue.receive(Q, { visibilitySeconds: 10 });
      assert.equal(second?.id, id);
      assert.equal(second?.receiveCount, 2);

      await ports.queue.ack(Q, first.receipt);
      await ports.queue.extend(Q, first.receipt, 3600);
      await ports.queue.release(Q, first.receipt, 0);
      assert.deepEqual(
        await ports.queue.depth(Q),
        { visible: 0, inFlight: 1, delayed: 0 },
        "the newer delivery is untouched",
      );

      clock += 11_000;
      const [third] = await ports.queue.receive(Q, { visibilitySeconds: 10 });
      assert.equal(third?.receiveCount, 3, "the stale extend did not prolong the second delivery");
      await ports.queue.ack(Q, second!.receipt);
      await ports.queue.ack(Q, "not-a-receipt");
      assert.equal((await ports.queue.depth(Q)).inFlight, 1);
      await ports.queue.ack(Q, third!.receipt);
      assert.deepEqual(await ports.queue.depth(Q), { visible: 0, inFlight: 0, delayed: 0 });
    });

    it("follows the injected clock for delays and counts a delayed release as delayed", async () => {
      await ports.queue.send(Q, { n: 2 }, { delaySeconds: 30 });
      assert.deepEqual(await ports.queue.depth(Q), { visible: 0, inFlight: 0, delayed: 1 });
      clock += 30_000;
      const [message] = await ports.queue.receive(Q, { visibilitySeconds: 10 });
      assert.ok(message);
      await ports.queue.release(Q, message.receipt, 60);
      assert.deepEqual(await ports.queue.depth(Q), { visible: 0, inFlight: 0, delayed: 1 });
      clock += 60_000;
      const [again] = await ports.queue.receive(Q, { visibilitySeconds: 10 });
      assert.equal(again?.receiveCount, 2);
      await ports.queue.ack(Q, again!.receipt);
    });

    it("redrives at most `max` dead letters, oldest first", async () => {
      const strict = open(tempDir(), { now: () => clock, maxReceives: 1 });
      for (let i = 0; i < 3; i++) await strict.queue.send(Q, { i });
      for (let i = 0; i < 3; i++) {
        const [message] = await strict.queue.receive(Q, { visibilitySeconds: 10 });
        await strict.queue.release(Q, message!.receipt, 0);
      }
      assert.deepEqual(await strict.queue.receive(Q, { visibilitySeconds: 10 }), []);
      assert.equal((await strict.queue.peekDeadLetters(Q)).length, 3);
      assert.equal(await strict.queue.redrive(Q, { max: 2 }), 2);
      assert.deepEqual(
        (await strict.queue.peekDeadLetters(Q)).map((m) => m.body),
        [{ i: 2 }],
      );
      assert.deepEqual(
        (await strict.queue.receive(Q, { max: 10, visibilitySeconds: 10 })).map((m) => m.body),
        [{ i: 0 }, { i: 1 }],
      );
      await strict.close();
    });

    it("ends pending long polls, with no messages, when the ports close", async () => {
      const closing = open(tempDir());
      const started = Date.now();
      const polling = closing.queue.receive(Q, { visibilitySeconds: 10, waitSeconds: 10 });
      await new Promise((resolve) => setTimeout(resolve, 100));
      await closing.close();
      assert.deepEqual(await polling, []);
      assert.ok(Date.now() - started < 2_000);
    });

    it("rejects arguments SQS would reject", async () => {
      await rejectsWithCode(ports.queue.receive(Q, { visibilitySeconds: 10, max: 11 }), "queue_receive_invalid");
      await rejectsWithCode(ports.queue.send(Q, { n: 1 }, { delaySeconds: 901 }), "queue_argument_invalid");
      await rejectsWithCode(ports.queue.send(Q, "x".repeat(256 * 1024)), "queue_message_too_large");
      await rejectsWithCode(ports.queue.send(Q, undefined), "queue_body_invalid");
    });

    it("never delivers one message twice to two instances on one data dir", async () => {
      const dir = tempDir();
      const a = open(dir);
      const b = open(dir);
      for (let i = 0; i < 40; i++) await a.queue.send(Q, { i });
      const drain = async (p: Ports): Promise<string[]> => {
        const ids: string[] = [];
        while (ids.length <= 40) {
          const batch = await p.queue.receive(Q, { max: 3, visibilitySeconds: 60 });
          if (batch.length === 0) break;
          ids.push(...batch.map((m) => m.id));
          await new Promise((resolve) => setImmediate(resolve));
        }
        return ids;
      };
      const [fromA, fromB] = await Promise.all([drain(a), drain(b)]);
      assert.equal(fromA.length + fromB.length, 40);
      assert.equal(new Set([...fromA, ...fromB]).size, 40);
      assert.ok(fromA.length > 0 && fromB.length > 0, "both instances took part");
      await a.close();
      await b.close();
    });

    it("never delivers one message twice to worker processes sharing the data dir", { timeout: 60_000 }, async () => {
      const dir = tempDir();
      const ports = open(dir);
      const total = 300;
      for (let i = 0; i < total; i++) await ports.queue.send(Q, { i });
      await ports.close();

      const results = await runWorkerProcesses(dir, 3);
      const all = results.flat();
      assert.equal(all.length, total, `${all.length} deliveries of ${total} messages`);
      assert.equal(new Set(all).size, total);
      assert.ok(
        results.filter((ids) => ids.length > 0).length >= 2,
        `processes took ${results.map((r) => r.length).join(", ")}`,
      );

      const check = open(dir);
      assert.deepEqual(await check.queue.depth(Q), { visible: 0, inFlight: 0, delayed: 0 });
      await check.close();
    });
  });

  describe("blobs", () => {
    let ports: Ports;
    let dir: string;
    before(() => {
      dir = tempDir();
      ports = open(dir, { now: () => 1_700_000_000_000 });
    });
    after(() => ports.close());

    it("rejects unsafe keys and prefixes", async () => {
      const bad = [
        "",
        "/etc/passwd",
        "../escape",
        "a/../../b",
        "a/./b",
        "a//b",
        "a/",
        ".hidden",
        "a/.meta",
        "a..b",
        "a\\b",
        "a b",
        "é",
        "x".repeat(1025),
      ];
      for (const key of bad) {
        await rejectsWithCode(ports.blobs.put(key, Uint8Array.of(1)), "blob_key_invalid");
        await rejectsWithCode(ports.blobs.get(key), "blob_key_invalid");
        await rejectsWithCode(ports.blobs.downloadUrl(key, { expiresSeconds: 60 }), "blob_key_invalid");
      }
      await rejectsWithCode(ports.blobs.list("../"), "blob_key_invalid");
      await rejectsWithCode(ports.blobs.list("/abs"), "blob_key_invalid");
      assert.deepEqual(await ports.blobs.put("jobs/0f8a-b_c/images/0.png", Uint8Array.of(1)), { created: true });
    });

    it("leaves only the blob files behind: no temp files, sidecars outside listings, emptied dirs removed", async () => {
      await ports.blobs.put("jobs/j9/images/0.png", Uint8Array.of(1, 2, 3), { contentType: "image/png" });
      assert.deepEqual(
        fs.readFileSync(path.join(dir, "blobs", "jobs", "j9", "images", "0.png")),
        Buffer.from([1, 2, 3]),
      );
      assert.deepEqual(fs.readdirSync(path.join(dir, "blobs", ".tmp")), []);
      assert.deepEqual(await ports.blobs.list("jobs/j9/"), ["jobs/j9/images/0.png"]);
      await ports.blobs.put("jobs/j9/images/0.png", Uint8Array.of(4));
      assert.deepEqual(
        await ports.blobs.head("jobs/j9/images/0.png"),
        { size: 1 },
        "a put without a content type drops the old one",
      );
      await ports.blobs.delete("jobs/j9/images/0.png");
      assert.equal(fs.existsSync(path.join(dir, "blobs", "jobs", "j9")), false);
    });

    it("signs download URLs the API can verify, and only until they expire", async () => {
      const now = 1_700_000_000_000;
      const url = new URL(
        await ports.blobs.downloadUrl("jobs/j1/images/0.png", { expiresSeconds: 300, filename: "lighthouse.png" }),
      );
      assert.equal(url.origin, "http://127.0.0.1:8080");
      assert.equal(url.pathname, "/v1/files/jobs/j1/images/0.png");
      const expires = url.searchParams.get("expires")!;
      const sig = url.searchParams.get("sig")!;
      assert.equal(expires, String(now / 1000 + 300));
      assert.match(sig, /^[0-9a-f]{64}$/);
      assert.equal(url.searchParams.get("filename"), "lighthouse.png");

      const key = "jobs/j1/images/0.png";
      assert.equal(await verifyDownloadSignature(key, expires, sig, SECRET, now + 299_000), true, "good");
      assert.equal(await verifyDownloadSignature(key, expires, sig, SECRET, now + 300_000), false, "expired");
      const flipped = (sig[0] === "a" ? "b" : "a") + sig.slice(1);
      assert.equal(await verifyDownloadSignature(key, expires, flipped, SECRET, now), false, "tampered signature");
      assert.equal(
        await verifyDownloadSignature("jobs/j1/images/1.png", expires, sig, SECRET, now),
        false,
        "other key",
      );
      assert.equal(
        await verifyDownloadSignature(key, String(Number(expires) + 3600), sig, SECRET, now),
        false,
        "extended expiry",
      );
      assert.equal(await verifyDownloadSignature(key, expires, sig, "other-secret", now), false, "other secret");
      assert.equal(await verifyDownloadSignature(key, "soon", sig, SECRET, now), false, "malformed expiry");
      assert.equal(await verifyDownloadSignature(key, expires, "zz", SECRET, now), false, "malformed signature");
    });
  });

  describe("jobs and keys", () => {
    let clock = 1_700_000_000_000;
    let ports: Ports;
    before(() => {
      ports = open(tempDir(), { now: () => clock });
    });
    after(() => ports.close());

    it("rejects a cursor it did not issue", async () => {
      await rejectsWithCode(ports.jobs.listByOwner("key-1", { limit: 10, cursor: "bogus" }), "cursor_invalid");
      await rejectsWithCode(ports.jobs.listByOwner("key-1", { limit: 0 }), "list_limit_invalid");
    });

    it("refuses a second key with the same prefix", async () => {
      const key = {
        id: "k1",
        prefix: "pfx1",
        name: "a",
        scopes: ["render" as const],
        hash: "00".repeat(32),
        createdAt: "2024-01-01T00:00:00.000Z",
      };
      await ports.keys.insert(key);
      await rejectsWithCode(ports.keys.insert({ ...key, id: "k2" }), "key_exists");
    });

    it("restarts a counter once its expiry has passed", async () => {
      const expiresAt = clock / 1000 + 60;
      assert.equal(await ports.keys.incrementCounter("rate:k1", 1, expiresAt), 1);
      assert.equal(await ports.keys.incrementCounter("rate:k1", 1, expiresAt), 2);
      clock += 60_000;
      assert.equal(await ports.keys.incrementCounter("rate:k1", 1, expiresAt + 60), 1);
      assert.equal(await ports.keys.incrementCounter("rate:k1", 1, expiresAt + 60), 2);
    });
  });
});

/**
 * Starts `count` Node processes that each open the data dir, wait until all are ready, then
 * drain the queue (a millisecond of "work" per message, so they interleave) and print the ids.
 */
/** More than any correct run delivers; a queue that redelivers stops here instead of hanging. */
const MAX_WORKER_DELIVERIES = 1000;

async function runWorkerProcesses(dataDir: string, count: number): Promise<string[][]> {
  const script = `
    const { openLocalPorts } = await import(${JSON.stringify(pathToFileURL(localIndex).href)});
    const ports = openLocalPorts({ dataDir: ${JSON.stringify(dataDir)}, publicBaseUrl: "http://127.0.0.1", urlSecret: "s", maxReceives: 5 });
    process.stdout.write("ready\\n");
    await new Promise((resolve) => process.stdin.once("data", resolve));
    const ids = [];
    while (ids.length <= ${MAX_WORKER_DELIVERIES}) {
      const batch = await ports.queue.receive(${JSON.stringify(Q)}, { max: 2, visibilitySeconds: 60 });
      if (batch.length === 0) break;
      for (const m of batch) {
        ids.push(m.id);
        await new Promise((resolve) => setTimeout(resolve, 1));
        await ports.queue.ack(${JSON.stringify(Q)}, m.receipt);
      }
    }
    await ports.close();
    process.stdout.write(JSON.stringify(ids) + "\\n");
    process.stdin.destroy();
  `;
  const children = Array.from({ length: count }, () =>
    spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      cwd: repoRoot,
      stdio: ["pipe", "pipe", "pipe"],
    }),
  );
  const outputs = children.map((child) => {
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d));
    child.stderr.on("data", (d: Buffer) => (err += d));
    const ready = new Promise<void>((resolve, reject) => {
      child.stdout.on("data", () => out.startsWith("ready\n") && resolve());
      child.once("exit", () => reject(new Error(`worker exited before ready: ${err}`)));
    });
    const done = new Promise<string[]>((resolve, reject) => {
      child.once("exit", (code) => {
        if (code !== 0) return reject(new Error(`worker exited with ${code}: ${err}`));
        resolve(JSON.parse(out.slice("ready\n".length)) as string[]);
      });
    });
    // Whichever of these is not awaited (a worker failing early) must not become an unhandled rejection.
    ready.catch(() => undefined);
    done.catch(() => undefined);
    return { child, ready, done };
  });
  try {
    await Promise.all(outputs.map((o) => o.ready));
    for (const { child } of outputs) child.stdin.write("go\n");
    return await Promise.all(outputs.map((o) => o.done));
  } finally {
    for (const { child } of outputs) if (child.exitCode === null) child.kill();
  }
}
