import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { type LocalStack, startLocalStack } from "../../support/local-stack.js";

const root = path.resolve(import.meta.dirname, "../../..");

/** The README's code blocks marked `<!-- walkthrough … -->`, in order: what a reader pastes into one shell. */
export function walkthroughBlocks(markdown: string): string[] {
  const blocks: string[] = [];
  const re = /<!-- walkthrough[^>]*-->\s*\n```sh\n([\s\S]*?)\n```/g;
  for (let m = re.exec(markdown); m; m = re.exec(markdown)) blocks.push(m[1]!);
  return blocks;
}

/**
 * README.md's walkthrough, run as written: the marked blocks, pasted one after another into one
 * bash, in a checkout-like directory (the repository's package.json, packages and node_modules
 * linked in, its own .kiln/ holding the local key) against a started stack that KILN_API_URL names.
 */
describe("README walkthrough", () => {
  let stack: LocalStack;
  let checkout: string;
  before(async () => {
    stack = await startLocalStack();
    checkout = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-readme-"));
    for (const name of ["package.json", "packages", "node_modules"])
      fs.symlinkSync(path.join(root, name), path.join(checkout, name));
    fs.mkdirSync(path.join(checkout, ".kiln"));
    // What `npm start` leaves there.
    fs.writeFileSync(path.join(checkout, ".kiln", "local-key"), `${stack.key}\n`, { mode: 0o600 });
  });
  after(async () => {
    await stack?.stop();
    if (checkout) fs.rmSync(checkout, { recursive: true, force: true });
  });

  it("runs end to end and leaves its images under .kiln/", async () => {
    const blocks = walkthroughBlocks(fs.readFileSync(path.join(root, "README.md"), "utf8"));
    assert.ok(blocks.length >= 3, `found ${blocks.length} walkthrough blocks`);
    const script = ["set -euo pipefail", ...blocks].join("\n");
    const env: Record<string, string> = { ...(process.env as Record<string, string>), KILN_API_URL: stack.url };
    for (const k of ["KILN_DATA_DIR", "PORT", "KILN_API_KEY", "KILN_PUBLIC_URL"]) delete env[k];
    const run = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn("bash", ["-c", script], { cwd: checkout, env });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.on("close", (code) => resolve({ code, stdout, stderr }));
    });
    assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}`);
    const lines = run.stdout.trim().split("\n");
    const id = lines[0]!;
    assert.match(id, /^job_[0-9a-f]+$/, run.stdout);
    assert.equal(JSON.parse(lines[1]!).status, "succeeded", "the poll ends on a finished render");
    for (const file of ["lighthouse.png", "lighthouse-cli.png"]) {
      const bytes = fs.readFileSync(path.join(checkout, ".kiln", file));
      assert.deepEqual([...bytes.subarray(1, 4)], [...Buffer.from("PNG")], file);
    }
    assert.deepEqual(fs.readdirSync(checkout).sort(), [".kiln", "node_modules", "package.json", "packages"]);
  });
});
