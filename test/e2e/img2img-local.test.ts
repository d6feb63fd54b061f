import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, it } from "node:test";
import { crc32 } from "node:zlib";

import sharp from "sharp";

import { api, download, type LocalStack, startLocalStack, waitForJob } from "../support/local-stack.js";

/**
 * img2img, inpaint and outpaint over real HTTP on the local family (SQLite, blob files, one worker on the tiny
 * models): JSON base64, data URLs, multipart and URLs fetched under the address policy; and every bad input
 * refused with a 4xx that names the field, with nothing stored and no quota spent.
 */

const W = 96;
const H = 64;
const pictureRgb = new Uint8Array(W * H * 3).map((_, i) => (i * 29 + (i >> 6) * 7) & 255);
let png: Buffer;
let maskPng: Buffer;

function assertProblem(res: { status: number; headers: Headers; json: any }, status: number, field: string) {
  assert.equal(res.status, status, JSON.stringify(res.json));
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  const named = (res.json.errors ?? []).map((e: { field: string }) => e.field);
  assert.ok(named.includes(field), `${field} named in ${JSON.stringify(res.json)}`);
}

async function rgbOf(bytes: Buffer) {
  const { data, info } = await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

/** A loopback site: the picture, a redirect to 127.0.0.1, and a body that never finishes. */
function startSite(): Promise<{ port: number; close(): void }> {
  const server = http.createServer((req, res) => {
    const port = (server.address() as { port: number }).port;
    if (req.url === "/picture.png") {
      res.writeHead(200, { "content-type": "image/png" }).end(png);
    } else if (req.url === "/redirect") {
      res.writeHead(302, { location: `http://127.0.0.1:${port}/picture.png` }).end();
    } else if (req.url === "/never") {
      res.writeHead(200, { "content-type": "image/png" });
      res.write(png.subarray(0, 100));
    } else res.writeHead(404).end();
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: (server.address() as { port: number }).port,
        close: () => server.close() && server.closeAllConnections(),
      }),
    ),
  );
}

describe("image inputs over HTTP (local family)", () => {
  let stack: LocalStack;
  let site: { port: number; close(): void };
  const body = (extra: Record<string, unknown>) => ({ prompt: "a fox", steps: 4, seed: 11, ...extra });

  before(async () => {
    png = await sharp(pictureRgb, { raw: { width: W, height: H, channels: 3 } })
      .png()
      .toBuffer();
    const mask = new Uint8Array(W * H).map((_, p) => (p % W >= W / 2 ? 255 : 0));
    maskPng = await sharp(mask, { raw: { width: W, height: H, channels: 1 } })
      .png()
      .toBuffer();
    site = await startSite();
    stack = await startLocalStack({
      env: { KILN_WEBHOOK_ALLOWED_HOSTS: "localhost", KILN_IMAGE_FETCH_SECONDS: "1", KILN_IMAGES_PER_DAY: "100" },
    });
  });
  after(async () => {
    site.close();
    await stack.stop();
  });

  async function finished(res: { status: number; json: any; text: string }) {
    assert.ok(res.status === 201 || res.status === 202, res.text);
    const job = await waitForJob(stack, res.json.id);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    return job;
  }

  it("img2img from base64 JSON: the picture's size, strength × steps, stored once under the job", async () => {
    const job = await finished(
      await api(stack, "POST", "/v1/renders", body({ mode: "img2img", image: png.toString("base64"), strength: 0.5 })),
    );
    const out = await rgbOf(await download(job.images[0].url));
    assert.deepEqual([out.width, out.height], [W, H]);
    assert.deepEqual(await stack.ports.blobs.list(`jobs/${job.id}/inputs/`), [`jobs/${job.id}/inputs/image.png`]);
    assert.deepEqual(Buffer.from((await stack.ports.blobs.get(`jobs/${job.id}/inputs/image.png`))!), png);
  });

  it("the same request twice gives byte-identical images", async () => {
    const request = body({ mode: "img2img", image: `data:image/png;base64,${png.toString("base64")}`, strength: 0.6 });
    const a = await finished(await api(stack, "POST", "/v1/renders", request));
    const b = await finished(await api(stack, "POST", "/v1/renders", request));
    assert.deepEqual(await download(a.images[0].url), await download(b.images[0].url));
  });

  it("inpaint over multipart: pixels outside the mask come back byte-identical", async () => {
    const form = new FormData();
    form.set("prompt", "a fox");
    form.set("mode", "inpaint");
    form.set("steps", "4");
    form.set("seed", "5");
    form.set("image", new Blob([new Uint8Array(png)], { type: "image/png" }), "picture.png");
    form.set("mask", new Blob([new Uint8Array(maskPng)], { type: "image/png" }), "mask.png");
    const res = await fetch(`${stack.url}/v1/renders`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.key}` },
      body: form,
    });
    const job = await finished({ status: res.status, json: await res.json(), text: "" });
    const out = await rgbOf(await download(job.images[0].url));
    let changed = 0;
    for (let p = 0; p < W * H; p++)
      for (let c = 0; c < 3; c++) {
        if (p % W < W / 2) assert.equal(out.data[p * 3 + c], pictureRgb[p * 3 + c], `pixel ${p}`);
        else if (out.data[p * 3 + c] !== pictureRgb[p * 3 + c]) changed++;
      }
    assert.ok(changed > 500, `${changed} masked values changed`);
  });

  it("outpaint from a URL under the address policy grows the canvas around the picture", async () => {
    const job = await finished(
      await api(
        stack,
        "POST",
        "/v1/renders",
        body({ mode: "outpaint", image: `http://localhost:${site.port}/picture.png`, expand: { right: 16, top: 8 } }),
      ),
    );
    const out = await rgbOf(await download(job.images[0].url));
    assert.deepEqual([out.width, out.height], [W + 16, H + 8]);
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++)
        assert.equal(out.data[((y + 8) * (W + 16) + x) * 3], pictureRgb[(y * W + x) * 3], `pixel ${x},${y}`);
  });

  it("refuses bad inputs with a 4xx naming the field; nothing stored, no quota spent", async () => {
    const jobsBefore = (await api(stack, "GET", "/v1/renders?limit=100")).json.data.length;
    const keyId = (await stack.ports.keys.getByPrefix(stack.key.split("_")[1]!))!.id;
    const counter = `images:${keyId}:${new Date().toISOString().slice(0, 10)}`;
    const usedBefore = await stack.ports.keys.incrementCounter(counter, 0);
    const inputs = async () => (await stack.ports.blobs.list("jobs/")).filter((k) => k.includes("/inputs/"));
    const inputsBefore = await inputs();
    // An APNG: the picture with an animation-control chunk (2 frames, loop forever) after IHDR.
    const actl = Buffer.alloc(20);
    actl.writeUInt32BE(8, 0);
    actl.write("acTL", 4, "latin1");
    actl.writeUInt32BE(2, 8);
    actl.writeUInt32BE(crc32(actl.subarray(4, 16)) >>> 0, 16);
    const animated = Buffer.concat([png.subarray(0, 33), actl, png.subarray(33)]);
    const zeroSized = Buffer.from(png);
    zeroSized.writeUInt32BE(0, 16); // IHDR width
    const cases: [Record<string, unknown>, number, string][] = [
      [body({ mode: "img2img", image: png.subarray(0, png.length - 20).toString("base64") }), 400, "image"],
      [body({ mode: "img2img", image: Buffer.from("GIF89a not really").toString("base64") }), 415, "image"],
      [body({ mode: "img2img", image: "%%% not base64 %%%" }), 400, "image"],
      [body({ mode: "img2img", image: animated.toString("base64") }), 400, "image"],
      [body({ mode: "img2img", image: zeroSized.toString("base64") }), 400, "image"],
      [
        body({
          mode: "inpaint",
          image: png.toString("base64"),
          mask: (await sharp(maskPng).resize(32, 32).png().toBuffer()).toString("base64"),
        }),
        400,
        "mask",
      ],
      [body({ mode: "img2img", image: `http://localhost:${site.port}/redirect` }), 400, "image"],
      [body({ mode: "img2img", image: `http://localhost:${site.port}/never` }), 400, "image"],
      [body({ mode: "img2img", image: `http://127.0.0.1:${site.port}/picture.png` }), 400, "image"],
      [body({ mode: "inpaint", image: png.toString("base64") }), 400, "mask"],
      [body({ mode: "base", image: png.toString("base64") }), 400, "image"],
    ];
    for (const [i, [request, status, field]] of cases.entries()) {
      const res = await api(stack, "POST", "/v1/renders", request);
      assertProblem({ ...res, json: { ...res.json, case: i } }, status, field);
    }
    const huge = await api(stack, "POST", "/v1/renders", {
      ...body({ mode: "img2img" }),
      image: Buffer.alloc(11 * 1024 * 1024).toString("base64"),
    });
    assert.equal(huge.status, 413, huge.text);
    assert.equal((await api(stack, "GET", "/v1/renders?limit=100")).json.data.length, jobsBefore);
    assert.equal(await stack.ports.keys.incrementCounter(counter, 0), usedBefore);
    assert.deepEqual(await inputs(), inputsBefore);
  });
});
