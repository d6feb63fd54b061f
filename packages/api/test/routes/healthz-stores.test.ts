import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, it } from "node:test";

import type { KilnApp } from "../../src/app.js";
import { type AppFixture, openAppFixture } from "../app-fixture.js";

/** /healthz on the local family: unhealthy once the database can no longer be reopened or written. */
describe("GET /healthz checks the local stores", () => {
  let fixture: AppFixture;
  // The database was broken under the process on purpose: closing it may fail; the files go regardless.
  afterEach(() => fixture.close().catch(() => undefined));

  function open(): { app: KilnApp; db: string } {
    fixture = openAppFixture();
    return { app: fixture.app, db: path.join(fixture.dataDir, "kiln.db") };
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
