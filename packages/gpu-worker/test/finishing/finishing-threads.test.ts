import assert from "node:assert/strict";
import { after, describe, it } from "node:test";

import { KilnError } from "@kiln/shared";

import { finishImage, type FinishRequest } from "../../src/engine/finishing/finish-image.js";
import { acquireFinishingPool, FinishingPool } from "../../src/engine/finishing/finishing-threads.js";
import { readPngText } from "../../src/engine/image-files.js";
import { drawNoise, NoiseSource } from "../../src/engine/noise.js";
import { drawInitialNoise } from "../../src/engine/noise-helper.js";
import { detectSdxlWatermark } from "../../src/engine/watermark/sdxl-watermark.js";

/** The finishing threads: same bytes as in-line finishing, errors per image, a dead thread fails its image retryably. */

// 256² is the smallest size the SDXL watermark marks.
const W = 256;
const H = 256;

function pixels(seed: number): Float32Array {
  const x = new Float32Array(3 * W * H);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < x.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    // A smooth picture with some noise, in the VAE's [−1, 1] (and a little beyond, as a VAE overshoots).
    const p = i % (W * H);
    x[i] = Math.sin(p / 900 + i / (W * H)) * 0.9 + ((s >>> 0) / 2 ** 32 - 0.5) * 0.3;
  }
  return x;
}

function request(over: Partial<FinishRequest> = {}): FinishRequest {
  return {
    pixels: pixels(1),
    height: H,
    width: W,
    index: 0,
    watermark: true,
    format: "png",
    quality: 90,
    parameters: "a red circle\nSteps: 4, Version: Kiln",
    ...over,
  };
}

const fault = import.meta.resolve("./faulty-finish.ts");
const pools: FinishingPool[] = [];
const pool = (module?: string) => {
  const p = new FinishingPool({ threads: 1, module });
  pools.push(p);
  return p;
};

// One pool for the tests that do not break it: each thread start compiles the finishing modules anew.
let common: FinishingPool | undefined;
const sharedPool = () => (common ??= pool());

after(async () => {
  for (const p of pools) await p.close();
});

describe("finishing threads", () => {
  it("give the bytes of in-line finishing: PNG, JPEG, WebP, watermark off, inpaint composite, crop paste-back", async () => {
    const threads = sharedPool();
    const mask = new Uint8Array(W * H).map((_, i) => (i % W < W / 2 ? 255 : 0));
    const original = new Uint8Array(W * H * 3).map((_, i) => (i * 7) & 255);
    const cases: [string, Partial<FinishRequest>][] = [
      ["png", {}],
      ["jpeg", { format: "jpeg", pixels: pixels(2) }],
      ["webp", { format: "webp", quality: 80, pixels: pixels(3) }],
      ["no watermark", { watermark: false }],
      ["composite", { composite: { width: W, height: H, rgb: original, mask } }],
      [
        "crop paste-back",
        {
          composite: {
            width: W,
            height: H,
            rgb: original,
            mask,
            crop: { region: [0, 0, 128, 128], rgb: original.slice().reverse(), mask },
          },
        },
      ],
    ];
    for (const [name, over] of cases) {
      const sent = request(over);
      const before = sent.pixels.slice();
      const remote = await threads.finish(sent);
      assert.ok(remote, `${name}: a thread ran it`);
      assert.deepEqual(sent.pixels, before, `${name}: the caller's pixels are not marked in place`);
      const here = await finishImage(request(over));
      assert.equal(remote.format, here.format, name);
      assert.equal(remote.contentType, here.contentType, name);
      assert.deepEqual([remote.width, remote.height], [here.width, here.height], name);
      assert.ok(Buffer.from(remote.bytes).equals(Buffer.from(here.bytes)), `${name}: identical bytes`);
    }
    const png = (await threads.finish(request()))!;
    assert.equal(readPngText(png.bytes).parameters, "a red circle\nSteps: 4, Version: Kiln");
  });

  it("take an owned image's buffer itself (transferred, not copied), with the same bytes; a view is copied", async () => {
    const threads = sharedPool();
    const here = await finishImage(request());
    const given = request();
    const remote = await threads.finish(given, { owned: true });
    assert.ok(remote && Buffer.from(remote.bytes).equals(Buffer.from(here.bytes)), "identical bytes");
    assert.equal(given.pixels.buffer.byteLength, 0, "the caller's buffer went to the thread (detached here)");
    // A view into a larger buffer cannot be handed over whole: it is copied, and the caller's memory stays.
    const whole = new Float32Array(3 * W * H + 16);
    whole.set(pixels(1), 16);
    const view = request({ pixels: whole.subarray(16) });
    const copied = await threads.finish(view, { owned: true });
    assert.ok(copied && Buffer.from(copied.bytes).equals(Buffer.from(here.bytes)), "identical bytes from the copy");
    assert.equal(view.pixels.length, 3 * W * H, "the view is left as it was");
  });

  it("marks the image: the watermark reads back from the thread's PNG", async () => {
    const image = (await sharedPool().finish(request()))!;
    const { data, info } = await (
      await import("sharp")
    )
      .default(image.bytes)
      .raw()
      .toBuffer({ resolveWithObject: true });
    assert.equal(info.channels, 3);
    assert.equal(detectSdxlWatermark(new Uint8Array(data), info.width, info.height).matching, 48);
  });

  it("fail one image with its own error and keep serving the next", async () => {
    const threads = sharedPool();
    const bad = request({ index: 1 });
    bad.pixels[5] = Number.NaN;
    const inline = await finishImage({ ...bad, pixels: bad.pixels.slice() }).catch((e: unknown) => e);
    await assert.rejects(threads.finish(bad), (e: unknown) => {
      assert.ok(e instanceof KilnError);
      assert.equal(e.code, "vae_non_finite");
      assert.equal(e.retryable, false);
      assert.equal(e.message, (inline as Error).message);
      return true;
    });
    assert.ok(await threads.finish(request()), "the thread still serves");
  });

  it("fail the image of a thread that dies as retryable, and start another thread for the next", async () => {
    const threads = pool(fault);
    const queued = threads.finish(request({ parameters: "queued behind the crash" }));
    await assert.rejects(threads.finish(request({ parameters: "crash" })), (e: unknown) => {
      assert.ok(e instanceof KilnError);
      assert.equal(e.code, "finishing_thread_failed");
      assert.equal(e.retryable, true);
      return true;
    });
    // The image ahead of the crash on the same thread finished before it; anything held by the thread fails.
    await queued.then(
      (image) => assert.ok(image),
      (e: unknown) => assert.equal((e as KilnError).code, "finishing_thread_failed"),
    );
    const next = await threads.finish(request());
    assert.ok(next, "a new thread runs the next image");
    assert.ok(Buffer.from(next.bytes).equals(Buffer.from((await finishImage(request())).bytes)));
  });

  it("shut down: a held image fails retryably, later ones are left to the caller (in-line)", async () => {
    const threads = pool(fault);
    const held = threads.finish(request({ parameters: "hang" }));
    const behind = threads.finish(request({ parameters: "hang" }));
    // Until the thread holds both (it starts first): one being finished, one queued behind it.
    while (threads.pending < 2) await new Promise((r) => setImmediate(r));
    await threads.close();
    for (const p of [held, behind]) {
      await assert.rejects(
        p,
        (e: unknown) => e instanceof KilnError && e.code === "finishing_thread_failed" && e.retryable,
      );
    }
    assert.equal(await threads.finish(request()), undefined);
  });

  it("are shared by the models of a process and closed with the last one", async () => {
    assert.equal(acquireFinishingPool(0), undefined, "0 threads: in-line");
    const a = acquireFinishingPool(1)!;
    const b = acquireFinishingPool(1)!;
    assert.equal(a.pool, b.pool);
    await a.release();
    await a.release(); // twice is once
    assert.ok(await b.pool.finish(request()), "still open for the other model");
    await b.release();
    assert.equal(await b.pool.finish(request()), undefined, "closed with the last model");
    const c = acquireFinishingPool(1)!;
    assert.notEqual(c.pool, a.pool, "a later model gets a new pool");
    await c.release();
  });
});

describe("initial noise on the noise helper", () => {
  it("draws the in-line values and leaves the generators where an in-line draw leaves them", async () => {
    const length = 2 * 4 * 32 * 32;
    const remote = [new NoiseSource(11), new NoiseSource(12, "scalar")];
    const here = [new NoiseSource(11), new NoiseSource(12, "scalar")];
    const drawn = await drawInitialNoise(remote, length);
    assert.deepEqual(drawn, drawNoise(here, new Float32Array(length)));
    assert.deepEqual(drawNoise(remote, new Float32Array(length)), drawNoise(here, new Float32Array(length)));
  });
});
