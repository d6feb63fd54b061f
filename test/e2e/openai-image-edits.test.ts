import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import OpenAI, { toFile } from "openai";
import sharp from "sharp";

import { download, type LocalStack, startLocalStack } from "../support/local-stack.js";

/** The official openai SDK's images.edit and images.createVariation against a running Kiln (local family). */

const W = 96;
const H = 64;
const rgb = new Uint8Array(W * H * 3).map((_, i) => (i * 13 + (i >> 5) * 3) & 255);

describe("OpenAI image edits and variations through the openai SDK", () => {
  let stack: LocalStack;
  let client: OpenAI;
  let png: Buffer;
  let maskPng: Buffer;

  before(async () => {
    stack = await startLocalStack({});
    client = new OpenAI({ baseURL: `${stack.url}/v1`, apiKey: stack.key, maxRetries: 0 });
    png = await sharp(rgb, { raw: { width: W, height: H, channels: 3 } })
      .png()
      .toBuffer();
    // OpenAI's mask: fully transparent where the picture is to be edited (here the bottom half), opaque elsewhere.
    const rgba = new Uint8Array(W * H * 4).map((_, i) =>
      i % 4 === 3 ? (Math.floor(i / 4 / W) >= H / 2 ? 0 : 255) : 0,
    );
    maskPng = await sharp(rgba, { raw: { width: W, height: H, channels: 4 } })
      .png()
      .toBuffer();
  });
  after(() => stack.stop());

  it("images.edit with a transparent-area mask repaints only that area", async () => {
    const res = await client.images.edit({
      image: await toFile(png, "picture.png", { type: "image/png" }),
      mask: await toFile(maskPng, "mask.png", { type: "image/png" }),
      prompt: "a red fox",
      response_format: "b64_json",
    });
    assert.equal(res.data?.length, 1);
    const { data, info } = await sharp(Buffer.from(res.data![0]!.b64_json!, "base64"))
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    assert.deepEqual([info.width, info.height], [W, H]);
    let changed = 0;
    for (let p = 0; p < W * H; p++)
      for (let c = 0; c < 3; c++) {
        if (Math.floor(p / W) < H / 2) assert.equal(data[p * 3 + c], rgb[p * 3 + c], `kept pixel ${p}`);
        else if (data[p * 3 + c] !== rgb[p * 3 + c]) changed++;
      }
    assert.ok(changed > 500, `${changed} edited values changed`);
  });

  it("images.createVariation answers n pictures of the input's size as URLs", async () => {
    const res = await client.images.createVariation({
      image: await toFile(png, "picture.png", { type: "image/png" }),
      n: 2,
      response_format: "url",
    });
    assert.equal(res.data?.length, 2);
    const first = await download(res.data![0]!.url!);
    const meta = await sharp(first).metadata();
    assert.deepEqual([meta.width, meta.height], [W, H]);
    assert.notDeepEqual(first, await download(res.data![1]!.url!));
  });

  it("bad inputs are OpenAI-shaped errors naming the parameter", async () => {
    await assert.rejects(
      client.images.edit({
        image: await toFile(Buffer.from("not a picture"), "picture.png", { type: "image/png" }),
        prompt: "x",
      }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.APIError);
        assert.equal(e.status, 415);
        assert.equal((e.error as { param?: string }).param, "image");
        return true;
      },
    );
    const small = await sharp(maskPng).resize(32, 32).png().toBuffer();
    await assert.rejects(
      client.images.edit({
        image: await toFile(png, "picture.png", { type: "image/png" }),
        mask: await toFile(small, "mask.png", { type: "image/png" }),
        prompt: "x",
      }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && (e.error as { param?: string }).param === "mask",
    );
  });
});
