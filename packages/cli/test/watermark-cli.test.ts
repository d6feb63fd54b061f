import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import sharp from "sharp";

import { chwToRgb8 } from "../../gpu-worker/src/engine/vae-decoder.js";
import { watermarkDecoded } from "../../gpu-worker/src/engine/watermark/sdxl-watermark.js";

const bin = path.resolve(import.meta.dirname, "../bin/kiln.js");
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-watermark-cli-"));

function kiln(args: string[]) {
  return new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: dir,
      env: { ...process.env, KILN_LOG_LEVEL: "silent" },
      timeout: 60_000,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

/** A gradient as the VAE would hand it over (CHW in [−1, 1]). */
function gradient(width: number, height: number) {
  const plane = width * height;
  const x = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    const u = (p % width) / width;
    const v = Math.floor(p / width) / height;
    x[p] = (2 * (40 + 180 * u)) / 255 - 1;
    x[plane + p] = (2 * (60 + 120 * v)) / 255 - 1;
    x[2 * plane + p] = (2 * (200 - 70 * (u + v))) / 255 - 1;
  }
  return x;
}

async function writePng(name: string, rgb: Uint8Array, width: number, height: number) {
  await sharp(rgb, { raw: { width, height, channels: 3 } })
    .png()
    .toFile(path.join(dir, name));
}

describe("kiln watermark detect", () => {
  before(async () => {
    const x = gradient(384, 256);
    await writePng("plain.png", chwToRgb8(x, 256, 384), 384, 256);
    assert.equal(watermarkDecoded(x, 256, 384), true);
    await writePng("marked.png", chwToRgb8(x, 256, 384), 384, 256);
    await writePng("small.png", chwToRgb8(gradient(200, 200), 200, 200), 200, 200);
    fs.writeFileSync(path.join(dir, "notes.txt"), "not a picture");
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("finds the SDXL message in a marked image (exit 0) and says how many bits match", async () => {
    const r = await kiln(["watermark", "detect", "marked.png"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /SDXL watermark found: 4\d\/48 bits match \(\d+\.\d %; found from 40\)/);
  });

  it("does not find it in an unmarked image (exit 1); --json gives the bits", async () => {
    const r = await kiln(["watermark", "detect", "plain.png", "--json"]);
    assert.equal(r.status, 1, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.found, false);
    assert.equal(out.bits.length, 48);
    assert.ok(out.matching < 40);
  });

  it("exits 3 for what it cannot check (too small, not an image, missing) and 2 for a usage error", async () => {
    const small = await kiln(["watermark", "detect", "small.png"]);
    assert.equal(small.status, 3);
    assert.match(small.stdout, /under 256×256 pixels/);
    assert.equal((await kiln(["watermark", "detect", "notes.txt"])).status, 3);
    assert.equal((await kiln(["watermark", "detect", "nowhere.png"])).status, 3);
    const usage = await kiln(["watermark", "detect"]);
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /kiln watermark detect FILE/);
  });
});
