import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";

import { startLocalStack } from "../../../test/support/local-stack.js";
import { progressLine, redraw, type RenderJob } from "../src/render-client.js";

const bin = path.resolve(import.meta.dirname, "../bin/kiln.js");

/**
 * Runs kiln in `cwd` (a fresh empty directory, so any side effect — a .kiln/ folder, a file — shows).
 * Asynchronous: the cases run concurrently, and this process may serve the stack the CLI calls.
 */
function kilnIn(cwd: string, args: string[], env: Record<string, string> = {}) {
  return new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd,
      env: { ...process.env, KILN_LOG_LEVEL: "silent", KILN_DATA_DIR: "", PORT: "", ...env },
      timeout: 60_000,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

const emptyDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "kiln-cli-usage-"));

/** A loopback port nothing listens on (bound, read, released). */
async function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const HELP_CASES = [
  ["start", "--help"],
  ["api", "--help"],
  ["worker", "-h"],
  ["keys", "--help"],
  ["keys", "create", "--help"],
  ["models", "--help"],
  ["models", "tiny", "--help"],
  ["dlq", "--help"],
  ["render", "--help"],
  ["bench", "--help"],
  ["simulate", "--help"],
];

describe("kiln CLI usage and errors", { concurrency: 4 }, () => {
  for (const args of HELP_CASES) {
    it(`kiln ${args.join(" ")} prints usage, exits 0 and touches nothing`, async () => {
      const dir = emptyDir();
      const r = await kilnIn(dir, args, { PORT: "0", KILN_WORKER_PORT: "0" });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^usage: kiln ${args[0]}`, "i"));
      assert.equal(r.stderr, "");
      assert.deepEqual(fs.readdirSync(dir), [], "no files or .kiln/ created");
    });
  }

  for (const args of [
    ["render", "a prompt", "--frob"],
    ["keys", "create", "--name", "x", "--bogus"],
    ["start", "--port", "1"],
    ["worker", "--stages", "base"],
    ["bench", "nope"],
    ["dlq", "list", "--kind", "middle"],
    ["models", "huge"],
  ]) {
    it(`kiln ${args.join(" ")} says what is wrong in one line and exits 2`, async () => {
      const dir = emptyDir();
      const r = await kilnIn(dir, args);
      assert.equal(r.status, 2, r.stderr);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^kiln ${args[0]}: .*see kiln ${args[0]} --help`));
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
      assert.deepEqual(fs.readdirSync(dir), []);
    });
  }

  it("expected failures print a sentence without a stack trace", async () => {
    const dir = emptyDir();
    const r = await kilnIn(dir, ["keys", "revoke", "key_nope"], { KILN_DATA_DIR: path.join(dir, "data") });
    assert.equal(r.status, 1);
    assert.equal(r.stderr.trim(), "kiln keys: no active key key_nope");
  });

  it("kiln render honours KILN_API_URL and says so clearly when nothing listens there", async () => {
    const port = await closedPort();
    const r = await kilnIn(emptyDir(), ["render", "a lighthouse"], {
      KILN_API_URL: `http://127.0.0.1:${port}`,
      KILN_API_KEY: "kiln_x",
    });
    assert.equal(r.status, 1);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`cannot reach Kiln at http://127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`));
    assert.match(r.stderr, /KILN_API_URL or --url/);
    // --url wins over the variable.
    const u = await kilnIn(emptyDir(), ["render", "x", "--url", `http://127.0.0.1:${port}/`], {
      KILN_API_URL: "http://127.0.0.1:1",
      KILN_API_KEY: "kiln_x",
    });
    assert.match(u.stderr, new RegExp(`cannot reach Kiln at http://127\\.0\\.0\\.1:${port} `));
  });

  it("kiln render renders through the Kiln KILN_API_URL names, and shows API errors as worded", async () => {
    const stack = await startLocalStack();
    try {
      const out = path.join(emptyDir(), "out", "a.png");
      const env = { KILN_API_URL: stack.url, KILN_API_KEY: stack.key, PORT: "1" };
      const ok = await kilnIn(
        emptyDir(),
        ["render", "a lighthouse", "--mode", "base", "--width", "64", "--height", "64", "--steps", "2", "--out", out],
        env,
      );
      assert.equal(ok.status, 0, ok.stderr);
      assert.equal(ok.stdout.trim(), out);
      assert.deepEqual([...fs.readFileSync(out).subarray(1, 4)], [...Buffer.from("PNG")]);
      const bad = await kilnIn(emptyDir(), ["render", "x", "--width", "65"], env);
      assert.equal(bad.status, 1);
      assert.match(bad.stderr, /→ 400: .*width/);
      assert.doesNotMatch(bad.stderr, /\n\s+at /);
    } finally {
      await stack.stop();
    }
  });

  it("the progress line is redrawn after erasing the old one", () => {
    const job = (step: number, steps: number): RenderJob => ({
      id: "job_1",
      status: "running",
      seed: 1,
      progress: { stage: 0, stage_kind: "base", step, steps, stages: 1 },
      images: [],
    });
    const frame = redraw(progressLine(job(1, 34)));
    assert.ok(frame.startsWith("\r\x1b[2K"), "carriage return, then erase the whole line");
    assert.ok(frame.endsWith(" 1/34"));
  });
});
