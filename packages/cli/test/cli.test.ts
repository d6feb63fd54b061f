import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";

const bin = path.resolve(import.meta.dirname, "../bin/kiln.js");

function kiln(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [bin, ...args], {
    encoding: "utf8",
    env: { ...process.env, KILN_LOG_LEVEL: "silent", ...env },
    timeout: 60_000,
  });
}

describe("kiln CLI", () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-cli-"));

  it("keys create prints the new key alone on the last line of stdout, and list/revoke manage it", () => {
    const created = kiln(["keys", "create", "--name", "ci"], { KILN_DATA_DIR: dataDir });
    assert.equal(created.status, 0, created.stderr);
    const lines = created.stdout.trim().split("\n");
    assert.match(lines[lines.length - 1]!, /^kiln_[a-z0-9]{10}_[A-Za-z0-9_-]{43}$/);
    const listed = kiln(["keys", "list", "--json"], { KILN_DATA_DIR: dataDir });
    const keys = JSON.parse(listed.stdout) as { id: string; name: string; hash?: string }[];
    assert.equal(keys.length, 1);
    assert.equal(keys[0]!.name, "ci");
    assert.equal(keys[0]!.hash, undefined, "hashes are not printed");
    assert.equal(kiln(["keys", "revoke", keys[0]!.id], { KILN_DATA_DIR: dataDir }).status, 0);
    assert.notEqual(kiln(["keys", "revoke", keys[0]!.id], { KILN_DATA_DIR: dataDir }).status, 0);
  });

  it("keys create without --name and unknown scopes fail with a clear message", () => {
    const r = kiln(["keys", "create"], { KILN_DATA_DIR: dataDir });
    assert.equal(r.status, 2, "a missing required flag is a usage error");
    assert.match(r.stderr, /--name/);
    assert.match(
      kiln(["keys", "create", "--name", "x", "--scopes", "root"], { KILN_DATA_DIR: dataDir }).stderr,
      /unknown scope/,
    );
  });

  it("a bad configuration names the variable and exits 1", () => {
    const r = kiln(["keys", "list"], { KILN_DATA_DIR: dataDir, KILN_BACKEND: "azure" });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /KILN_BACKEND/);
  });

  it("unknown commands exit 2 with usage", () => {
    const r = kiln(["frobnicate"]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /Usage: kiln/);
  });

  it("models tiny writes byte-identical folders for the same seed", () => {
    const a = path.join(dataDir, "a");
    const b = path.join(dataDir, "b");
    assert.equal(kiln(["models", "tiny", "--out", a]).status, 0);
    assert.equal(kiln(["models", "tiny", "--out", b]).status, 0);
    const file = path.join("base", "unet", "model.onnx");
    assert.ok(fs.readFileSync(path.join(a, file)).equals(fs.readFileSync(path.join(b, file))));
  });
});
