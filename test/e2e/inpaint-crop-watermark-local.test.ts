import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { detectSdxlWatermarkInFile } from "@kiln/gpu-worker";
import sharp from "sharp";

import { api, download, type LocalStack, startLocalStack, waitForJob } from "../support/local-stack.js";

/**
 * `padding_mask_crop` and the SDXL invisible watermark over real HTTP on the local family (tiny models): the crop
 * is inpainted and pasted back with every unmasked byte as sent; rendered images carry the watermark (PNG and
 * JPEG), `watermark: false` leaves it out where the operator allows it and is refused with a problem naming the
 * field where not.
 */

const W = 256;
const H = 256;
const pictureRgb = new Uint8Array(W * H * 3).map((_, i) => (i * 29 + (i >> 6) * 7) & 255);
// Repaint the box x ∈ [150, 190), y ∈ [40, 70).
const mask = new Uint8Array(W * H).map((_, p) => (p % W >= 150 && p % W < 190 && p >= 40 * W && p < 70 * W ? 255 : 0));
// diffusers' get_crop_region(mask, 256, 256, pad=16): crop_left 150, crop_right 66, crop_top 40, crop_bottom 186 →
// (134, 24, 206, 86), 72 × 62, ratio 1.16 > 256/256 → desired_height = 72, diff = int(72 − 62) = 10 →
// y1 = 24 − 5 = 19, y2 = 86 + 5 = 91. Outside (134, 19)–(206, 91) the crop cannot reach. At 256² the render is
// also watermarked (before the paste-back), so this checks that the mark never reaches unmasked pixels.
const REGION = [134, 19, 206, 91] as const;

function assertProblem(res: { status: number; headers: Headers; json: any; text: string }, field: string) {
  assert.equal(res.status, 400, res.text);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  const named = (res.json.errors ?? []).map((e: { field: string }) => e.field);
  assert.ok(named.includes(field), `${field} named in ${res.text}`);
}

async function rgbOf(bytes: Uint8Array) {
  const { data, info } = await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

describe("padding_mask_crop and the SDXL watermark over HTTP (local family)", () => {
  let stack: LocalStack;
  let strict: LocalStack;
  let png: Buffer;
  let maskPng: Buffer;

  before(async () => {
    png = await sharp(pictureRgb, { raw: { width: W, height: H, channels: 3 } })
      .png()
      .toBuffer();
    maskPng = await sharp(mask, { raw: { width: W, height: H, channels: 1 } })
      .png()
      .toBuffer();
    stack = await startLocalStack({ env: { KILN_ALLOW_UNWATERMARKED: "true" } });
    strict = await startLocalStack({ worker: false });
  });
  after(async () => {
    await stack?.stop();
    await strict?.stop();
  });

  async function rendered(body: Record<string, unknown>) {
    const res = await api(stack, "POST", "/v1/renders", { prompt: "a fox", steps: 3, seed: 9, ...body });
    assert.equal(res.status, 202, res.text);
    const job = await waitForJob(stack, res.json.id);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    return { job, bytes: await download(job.images[0].url) };
  }

  const inpaint = (extra: Record<string, unknown>) => ({
    mode: "inpaint",
    image: png.toString("base64"),
    mask: maskPng.toString("base64"),
    ...extra,
  });

  it("inpaints a crop around the mask and pastes it back: every unmasked byte as sent", async () => {
    const cropped = await rgbOf((await rendered(inpaint({ padding_mask_crop: 16 }))).bytes);
    assert.deepEqual([cropped.width, cropped.height], [W, H]);
    let changed = 0;
    let outsideRegion = 0;
    for (let p = 0; p < W * H; p++) {
      const x = p % W;
      const y = Math.floor(p / W);
      const inRegion = x >= REGION[0] && x < REGION[2] && y >= REGION[1] && y < REGION[3];
      for (let c = 0; c < 3; c++) {
        if (mask[p] === 0) {
          assert.equal(cropped.data[p * 3 + c], pictureRgb[p * 3 + c], `unmasked pixel ${x},${y}`);
          if (!inRegion) outsideRegion++;
        } else if (cropped.data[p * 3 + c] !== pictureRgb[p * 3 + c]) changed++;
      }
    }
    assert.ok(outsideRegion > 0.8 * W * H * 3, `${outsideRegion} values outside the crop`);
    assert.ok(changed > 1000, `${changed} masked values repainted`);
    // The mark was applied (the same render without it differs inside the mask) and stayed inside the mask.
    const unmarked = await rgbOf((await rendered(inpaint({ padding_mask_crop: 16, watermark: false }))).bytes);
    let markDiffers = 0;
    for (let p = 0; p < W * H; p++)
      for (let c = 0; c < 3; c++) {
        if (mask[p] === 0) assert.equal(unmarked.data[p * 3 + c], cropped.data[p * 3 + c]);
        else if (unmarked.data[p * 3 + c] !== cropped.data[p * 3 + c]) markDiffers++;
      }
    assert.ok(markDiffers > 100, `${markDiffers} masked values changed by the watermark`);
    // The crop is rendered at the full 256×256 and scaled down into the 72×72 region: a different picture from the
    // whole-canvas inpaint inside the mask.
    const whole = await rgbOf((await rendered(inpaint({}))).bytes);
    let differs = 0;
    for (let p = 0; p < W * H; p++) if (mask[p] && whole.data[p * 3] !== cropped.data[p * 3]) differs++;
    assert.ok(differs > 200, `${differs} masked pixels differ from the whole-canvas inpaint`);
  });

  it("refuses bad padding_mask_crop values with a problem naming the field", async () => {
    for (const value of [-1, 2.5, "16", null]) {
      const res = await api(stack, "POST", "/v1/renders", {
        prompt: "a fox",
        ...inpaint({ padding_mask_crop: value }),
      });
      assertProblem(res, "padding_mask_crop");
    }
    const img2img = await api(stack, "POST", "/v1/renders", {
      prompt: "a fox",
      mode: "img2img",
      image: png.toString("base64"),
      padding_mask_crop: 8,
    });
    assertProblem(img2img, "padding_mask_crop");
  });

  it("documents padding_mask_crop and watermark in the OpenAPI document (the same zod schema)", async () => {
    const doc = (await api(stack, "GET", "/openapi.json")).text;
    assert.match(doc, /"padding_mask_crop":\{[^}]*"type":"integer"/);
    assert.match(doc, /"watermark":\{[^}]*"type":"boolean"/);
  });

  it("marks rendered images (PNG and JPEG at quality 90); watermark: false leaves the mark out where allowed", async () => {
    const body = { mode: "base", width: 256, height: 256 };
    const marked = await detectSdxlWatermarkInFile((await rendered(body)).bytes);
    assert.equal(marked.found, true, `PNG: ${JSON.stringify(marked.readings)}`);
    const jpeg = await detectSdxlWatermarkInFile(
      (await rendered({ ...body, output_format: "jpeg", output_quality: 90 })).bytes,
    );
    assert.equal(jpeg.found, true, `JPEG: ${JSON.stringify(jpeg.readings)}`);
    const plain = await detectSdxlWatermarkInFile((await rendered({ ...body, watermark: false })).bytes);
    assert.equal(plain.found, false, `unmarked: ${JSON.stringify(plain.readings)}`);
    console.log(
      `# tiny-model render, bits matching (package/float reading): PNG ${marked.readings.package}/${marked.readings.float}, JPEG q90 ${jpeg.readings.package}/${jpeg.readings.float}, watermark:false ${plain.readings.package}/${plain.readings.float}`,
    );
  });

  it("refuses watermark: false unless the operator allows it, naming the field", async () => {
    const res = await api(strict, "POST", "/v1/renders", {
      prompt: "a fox",
      width: 256,
      height: 256,
      watermark: false,
    });
    assertProblem(res, "watermark");
    assert.match(
      res.json.errors.find((e: { field: string }) => e.field === "watermark").message,
      /KILN_ALLOW_UNWATERMARKED/,
    );
    const jobs = (await api(strict, "GET", "/v1/renders?limit=10")).json.data;
    assert.equal(jobs.length, 0);
  });
});
