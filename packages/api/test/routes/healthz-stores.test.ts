import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, it } from "node:test";

import type { Ports } from "@kiln/shared";
import { openLocalPorts } from "@kiln/shared/local";

import { createApp, type KilnApp } from "../../src/app.js";

/** /healthz on the local family: unhealthy once the database can no longer be reopened or written. */
describe("GET /healthz checks the local stores", () => {
  let dir: string;
  let ports: Ports;
  afterEach(async () => {
    await ports.close().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function open(): { app: KilnApp; db: string } {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-healthz-"));
    ports = openLocalPorts({
      dataDir: dir,
      publicBaseUrl: "http://kiln.test",
      urlSecret: "s".repeat(32),
      maxReceives: 3,
    });
    const app = createApp({
      ports,
      publicUrl: "http://kiln.test",
      limits: { minSide: 64, maxSide: 2048, maxPixels: 2048 * 2048, maxPromptChars: 4000 },
      maxBodyBytes: 65536,
      downloadUrlSeconds: 600,
      retentionHours: 1,
    });
    return { app, db: path.join(dir, "kiln.db") };
  }

  async function assertUnhealthy(app: KilnApp, pattern: RegExp) {
    const res = await app.request("/healthz");
    assert.equal(res.status, 503);
    assert.equal(res.headers.get("content-type"), "application/problem+json");
    const body = (await res.json()) as { code: string; detail: string };
    assert.equal(body.code, "store_unusable");
    assert.match(body.detail, pattern);
  }

  it("answers 200 while the database is in place, and keeps writing", async () => {
    const { app } = open();
    for (let i = 0; i < 3; i++) assert.equal((await app.request("/healthz")).status, 200);
  });

  it("answers 503 problem+json once the write-ahead log is deleted under the process", async () => {
    const { app, db } = open();
    assert.equal((await app.request("/healthz")).status, 200);
    fs.rmSync(`${db}-wal`);
    await assertUnhealthy(app, /kiln\.db-wal was deleted/);
  });

  it("answers 503 once the database file is deleted or replaced", async () => {
    const { app, db } = open();
    assert.equal((await app.request("/healthz")).status, 200);
    fs.renameSync(db, `${db}.moved`);
    fs.writeFileSync(db, "");
    await assertUnhealthy(app, /kiln\.db was deleted or replaced/);
  });
});
