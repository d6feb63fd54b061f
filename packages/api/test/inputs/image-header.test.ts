import assert from "node:assert/strict";
import http from "node:http";
import { describe, it } from "node:test";

import sharp from "sharp";

import { ImageHeaderError, readImageHeader } from "../../src/inputs/image-header.js";
import { FetchRefusedError, fetchWithPolicy } from "../../src/outbound/address-policy.js";

/** Header sniffing without a decoder, checked against files sharp writes; and the policy-checked fetch. */

const raw = (w: number, h: number, channels: 3 | 4) =>
  sharp(new Uint8Array(w * h * channels).fill(90), { raw: { width: w, height: h, channels } });

describe("readImageHeader", () => {
  it("reads PNG, JPEG and WebP sizes and alpha as sharp wrote them", async () => {
    assert.deepEqual(readImageHeader(await raw(40, 24, 3).png().toBuffer()), {
      format: "png",
      contentType: "image/png",
      width: 40,
      height: 24,
      hasAlpha: false,
      animated: false,
    });
    assert.equal(readImageHeader(await raw(40, 24, 4).png().toBuffer()).hasAlpha, true);
    const jpeg = readImageHeader(await raw(40, 24, 3).jpeg().toBuffer());
    assert.deepEqual([jpeg.format, jpeg.width, jpeg.height], ["jpeg", 40, 24]);
    for (const options of [{}, { lossless: true }]) {
      const webp = readImageHeader(await raw(40, 24, 3).webp(options).toBuffer());
      assert.deepEqual([webp.format, webp.width, webp.height, webp.animated], ["webp", 40, 24, false]);
    }
    assert.equal(readImageHeader(await raw(40, 24, 4).webp().toBuffer()).hasAlpha, true);
  });

  it("reports the upright size of a JPEG whose EXIF orientation turns it", async () => {
    const turned = await raw(40, 24, 3).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    const h = readImageHeader(turned);
    assert.deepEqual([h.width, h.height], [24, 40]);
    const meta = await sharp(turned).rotate().toBuffer({ resolveWithObject: true });
    assert.deepEqual([meta.info.width, meta.info.height], [24, 40]);
  });

  it("reports the upright size of a PNG (eXIf) or WebP (EXIF) whose orientation turns it, as the worker decodes it", async () => {
    for (const format of ["png", "webp"] as const) {
      for (const [orientation, upright] of [
        [6, [24, 40]],
        [8, [24, 40]],
        [3, [40, 24]],
      ] as const) {
        const turned = await raw(40, 24, 3).withMetadata({ orientation })[format]({ lossless: true }).toBuffer();
        assert.equal((await sharp(turned).metadata()).orientation, orientation, `${format} carries the orientation`);
        const h = readImageHeader(turned);
        assert.deepEqual([h.width, h.height], upright, `${format} orientation ${orientation}`);
        const decoded = await sharp(turned).rotate().toBuffer({ resolveWithObject: true });
        assert.deepEqual([decoded.info.width, decoded.info.height], upright, `the worker's decode of ${format}`);
      }
    }
  });

  it("refuses truncated files (400) and other formats (415)", async () => {
    for (const file of [
      await raw(40, 24, 3).png().toBuffer(),
      await raw(40, 24, 3).jpeg().toBuffer(),
      await raw(40, 24, 3).webp().toBuffer(),
    ]) {
      assert.throws(
        () => readImageHeader(file.subarray(0, file.length - 30)),
        (e: unknown) => e instanceof ImageHeaderError && e.status === 400,
      );
    }
    const gif = await raw(8, 8, 3).gif().toBuffer();
    assert.throws(
      () => readImageHeader(gif),
      (e: unknown) => e instanceof ImageHeaderError && e.status === 415,
    );
    assert.throws(
      () => readImageHeader(new Uint8Array()),
      (e: unknown) => e instanceof ImageHeaderError && e.status === 415,
    );
  });
});

describe("fetchWithPolicy", () => {
  it("follows allowed redirects, refuses a hop to a refused address, and bounds size and time", async () => {
    const body = Buffer.alloc(5000, 7);
    const server = http.createServer((req, res) => {
      const port = (server.address() as { port: number }).port;
      if (req.url === "/ok") res.writeHead(200, { "content-length": body.length }).end(body);
      else if (req.url === "/hop") res.writeHead(301, { location: `http://localhost:${port}/ok` }).end();
      else if (req.url === "/loopback") res.writeHead(302, { location: `http://127.0.0.1:${port}/ok` }).end();
      else if (req.url === "/chunked") {
        res.writeHead(200);
        res.write(body);
        res.end(body);
      } else if (req.url === "/stall") res.writeHead(200).write("x");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    const policy = { allowPrivate: false, allowedHosts: ["localhost"], resolveHost: async () => ["127.0.0.1"] };
    // Generous for the answers that complete (a loaded machine must not fail them); the stall gets its own 1 s.
    const limits = { maxBytes: 8000, timeoutMs: 60_000 };
    try {
      const got = await fetchWithPolicy(`http://localhost:${port}/hop`, policy, limits);
      assert.deepEqual(Buffer.from(got.bytes), body);
      const refused = async (path: string, status: number, pattern: RegExp, timeoutMs = limits.timeoutMs) =>
        assert.rejects(
          fetchWithPolicy(`http://localhost:${port}${path}`, policy, { ...limits, timeoutMs }),
          (e: unknown) => e instanceof FetchRefusedError && e.status === status && pattern.test(e.message),
        );
      await refused("/loopback", 400, /redirects to http:\/\/127\.0\.0\.1.*loopback/);
      await refused("/chunked", 413, /over 8000 bytes/);
      await refused("/stall", 400, /within 1 s/, 1000);
      await assert.rejects(
        fetchWithPolicy(`http://example.com/x.png`, policy, limits),
        (e: unknown) => e instanceof FetchRefusedError && /use an https URL/.test(e.message),
      );
      await assert.rejects(
        fetchWithPolicy(`https://169.254.169.254/latest`, policy, limits),
        (e: unknown) => e instanceof FetchRefusedError && /link-local/.test(e.message),
      );
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
