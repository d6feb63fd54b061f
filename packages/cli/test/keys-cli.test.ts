import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { run } from "../src/commands/keys.js";

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-keys-cli-"));
const saved = process.env.KILN_DATA_DIR;
before(() => {
  process.env.KILN_DATA_DIR = dataDir;
});
after(() => {
  if (saved === undefined) delete process.env.KILN_DATA_DIR;
  else process.env.KILN_DATA_DIR = saved;
  fs.rmSync(dataDir, { recursive: true, force: true });
});

/** Runs `kiln keys …` in this process (the command reads the environment like the binary does), capturing its output. */
async function kiln(args: string[]): Promise<{ stdout: string; stderr: string; error?: Error }> {
  const out: string[] = [];
  const err: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = (...a: unknown[]) => void out.push(a.join(" "));
  console.error = (...a: unknown[]) => void err.push(a.join(" "));
  try {
    await run(args);
    return { stdout: out.join("\n"), stderr: err.join("\n") };
  } catch (e) {
    return { stdout: out.join("\n"), stderr: err.join("\n"), error: e as Error };
  } finally {
    console.log = log;
    console.error = error;
  }
}

describe("kiln keys: limits and webhook secrets", () => {
  it("creates a key with limits, prints its webhook secret on stderr, and reads it back by id", async () => {
    const created = await kiln([
      "create",
      "--name",
      "metered",
      "--rps",
      "2.5",
      "--burst",
      "5",
      "--concurrent-jobs",
      "2",
      "--images-per-day",
      "100",
    ]);
    assert.equal(created.error, undefined);
    assert.match(
      created.stdout.trim().split("\n").pop()!,
      /^kiln_[a-z0-9]{10}_[A-Za-z0-9_-]{43}$/,
      "the key alone on the last stdout line",
    );
    const secret = /Webhook signing secret \(also: kiln keys webhook-secret (key_[0-9a-f]+)\): (whsec_\S+)/.exec(
      created.stderr,
    );
    assert.ok(secret, created.stderr);

    const listed = JSON.parse((await kiln(["list", "--json"])).stdout) as {
      id: string;
      limits?: unknown;
      webhookSecret?: string;
      hash?: string;
    }[];
    const key = listed.find((k) => k.id === secret[1])!;
    assert.deepEqual(key.limits, { requestsPerSecond: 2.5, burst: 5, concurrentJobs: 2, imagesPerDay: 100 });
    assert.equal(key.webhookSecret, undefined, "listings do not print secrets");
    assert.equal(key.hash, undefined);
    assert.match((await kiln(["list"])).stdout, /requestsPerSecond=2\.5,burst=5,concurrentJobs=2,imagesPerDay=100/);

    assert.equal((await kiln(["webhook-secret", secret[1]!])).stdout, secret[2]);
  });

  it("rejects limits that are not numbers or out of range, and unknown keys", async () => {
    assert.match(
      (await kiln(["create", "--name", "x", "--rps", "fast"])).error?.message ?? "",
      /--rps must be a number/,
    );
    assert.match(
      (await kiln(["create", "--name", "x", "--burst", "0"])).error?.message ?? "",
      /burst must be a whole number from 1/,
    );
    assert.match((await kiln(["webhook-secret", "key_missing"])).error?.message ?? "", /no key key_missing/);
    assert.match(
      (await kiln(["frobnicate"])).error?.message ?? "",
      /unknown action "frobnicate"; use create, list, revoke or webhook-secret/,
    );
  });
});
