import assert from "node:assert/strict";
import { describe, it } from "node:test";

import sharp from "sharp";

import { encodeImageFile } from "../../src/engine/image-files.js";
import { chwToRgb8 } from "../../src/engine/vae-decoder.js";
import { decodeDwtMaxDct, quantise } from "../../src/engine/watermark/dwt-max-dct.js";
import {
  detectSdxlWatermark,
  SDXL_WATERMARK_BITS,
  watermarkDecoded,
} from "../../src/engine/watermark/sdxl-watermark.js";

/** A VAE-output-like CHW image in [−1, 1] whose pixels are `rgbAt(x, y)` bytes. */
function decodedImage(width: number, height: number, rgbAt: (x: number, y: number) => [number, number, number]) {
  const plane = width * height;
  const chw = new Float32Array(3 * plane);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const px = rgbAt(x, y);
      for (let c = 0; c < 3; c++) chw[c * plane + y * width + x] = (2 * px[c]!) / 255 - 1;
    }
  return chw;
}

/**
 * Colour gradients (smooth chroma) with luminance grain. dwtDct only survives where the quantised value stays its
 * block's largest: flat areas (every value ties) and chroma texture (the quantiser's step down hands the maximum to
 * a neighbour) weaken it, the package's documented weakness; docs/engine.md gives the figures.
 */
function pictureLike(width: number, height: number) {
  let s = 12345;
  const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  return decodedImage(width, height, (x, y) => {
    const grain = 6 * rand();
    const rgb = [40 + (180 * x) / width, 60 + (120 * y) / height, 200 - (140 * (x + y)) / (width + height)];
    return rgb.map((v) => Math.max(0, Math.min(255, v + grain))) as [number, number, number];
  });
}

const bitAt = (bi: number, bj: number, blocksAcross: number) => SDXL_WATERMARK_BITS[(bi * blocksAcross + bj) % 48]!;

describe("SDXL invisible watermark (invisible-watermark's dwtDct, as diffusers applies it)", () => {
  it("holds the 48-bit SDXL message, MSB first", () => {
    assert.equal(SDXL_WATERMARK_BITS.length, 48);
    assert.equal(BigInt("0b" + SDXL_WATERMARK_BITS.join("")), 0b101100111110110010010000011110111011000110011110n);
  });

  it("quantises as diffuse_dct_matrix: (⌊|v|/36⌋ + 0.25 + 0.5·bit)·36 with v's sign", () => {
    assert.equal(quantise(1, 0), 9);
    assert.equal(quantise(1, 1), 27);
    assert.equal(quantise(100, 0), 81); // ⌊100/36⌋ = 2 → 2.25·36
    assert.equal(quantise(100, 1), 99); // 2.75·36
    assert.equal(quantise(-100, 1), -99);
    assert.equal(quantise(-0.5, 0), -9);
  });

  it("marks a flat grey image with the constants the Python algorithm gives (derivation in the comments)", () => {
    // A 256×256 image of grey 100. By hand, following maxDct.py with diffusers' float input:
    //  - cv2 BGR2YUV on floats: Y = 0.114·B + 0.587·G + 0.299·R = 100; U = (B − Y)·0.492 + 0.5 = 0.5 (float delta).
    //  - pywt.dwt2 (Haar) of U: cA = 2·mean of each 2×2 = 1.0 everywhere; all details 0.
    //  - cA is 128×128 → 32×32 blocks of 4×4, row-major; block k carries bit k mod 48. All 16 values tie, so
    //    argmax(|block[1:]|) + 1 = 1: the value at block row 0, column 1 → quantise(1.0, bit) = 9 or 27.
    //  - idwt2 spreads ΔcA/2 over its 2×2 pixels (details are 0, so the swapped bands change nothing):
    //    ΔU = 4 (bit 0) or 13 (bit 1) at pixel rows 8·bi..8·bi+1, columns 8·bj+2..8·bj+3.
    //  - YUV2BGR: B = Y + 2.032·ΔU, G = Y − 0.395·ΔU, R = Y + 1.14·(V − 0.5) = 100.
    //    bit 0: B = 108.128 → 108, G = 98.42 → 98; bit 1: B = 126.416 → 126, G = 94.865 → 95.
    //  - Every other pixel stays (100, 100, 100).
    const W = 256;
    const H = 256;
    const x = decodedImage(W, H, () => [100, 100, 100]);
    assert.equal(watermarkDecoded(x, H, W), true);
    const rgb = chwToRgb8(x, H, W);
    const expected = {
      0: [100, 98, 108],
      1: [100, 95, 126],
    } as const;
    let marked = 0;
    for (let y = 0; y < H; y++) {
      for (let xx = 0; xx < W; xx++) {
        const p = (y * W + xx) * 3;
        const got = [rgb[p], rgb[p + 1], rgb[p + 2]];
        const inMark = y % 8 < 2 && xx % 8 >= 2 && xx % 8 < 4;
        if (inMark) {
          marked++;
          assert.deepEqual(got, expected[bitAt(y >> 3, xx >> 3, 32) as 0 | 1], `pixel ${xx},${y}`);
        } else assert.deepEqual(got, [100, 100, 100], `pixel ${xx},${y}`);
      }
    }
    assert.equal(marked, 32 * 32 * 4);
    assert.equal(detectSdxlWatermark(rgb, W, H).matching, 48);
  });

  it("transposes every 2×2 block of U, as the package's swapped idwt2 bands do", () => {
    // Grey 100 with the top-right pixel of every 2×2 block at B = 150. That pixel: Y = 0.114·150 + 0.886·100 = 105.7,
    // U = 44.3·0.492 + 0.5 = 22.2956, V = −5.7·0.877 + 0.5 = −4.4989; the others Y = 100, U = V = 0.5.
    // idwt2((cA, (cV, cH, cD))) gives the top-right pixel the bottom-left's U and vice versa (a' = a, b' = c,
    // c' = b, d' = d), so, in the 2×2 block at cA (0, 0) (not the quantised one at (0, 1)):
    //  top-right: Y = 105.7, U = 0.5, V = −4.4989 → B = 105.7 → 106, G = 105.7 + 0.581·4.9989 = 108.604 → 109,
    //             R = 105.7 − 1.14·4.9989 = 100.001 → 100;
    //  bottom-left: Y = 100, U = 22.2956, V = 0.5 → B = 100 + 2.032·21.7956 = 144.289 → 144,
    //             G = 100 − 0.395·21.7956 = 91.391 → 91, R = 100.
    const W = 256;
    const H = 256;
    const x = decodedImage(W, H, (xx, y) => (xx % 2 === 1 && y % 2 === 0 ? [100, 100, 150] : [100, 100, 100]));
    watermarkDecoded(x, H, W);
    const rgb = chwToRgb8(x, H, W);
    const px = (xx: number, y: number) => [...rgb.subarray((y * W + xx) * 3, (y * W + xx) * 3 + 3)];
    for (const [bx, by] of [
      [0, 0],
      [40, 16],
      [248, 248],
    ] as const) {
      assert.deepEqual(px(bx, by), [100, 100, 100]);
      assert.deepEqual(px(bx + 1, by), [100, 109, 106]);
      assert.deepEqual(px(bx, by + 1), [100, 91, 144]);
      assert.deepEqual(px(bx + 1, by + 1), [100, 100, 100]);
    }
  });

  it("is found again after PNG and after Kiln's JPEG at quality 90, and not in the unmarked picture", async () => {
    const W = 512;
    const H = 384;
    const x = pictureLike(W, H);
    const plain = chwToRgb8(x, H, W);
    assert.equal(watermarkDecoded(x, H, W), true);
    const marked = chwToRgb8(x, H, W);
    const raw = { raw: { width: W, height: H, channels: 3 as const } };

    const unmarked = detectSdxlWatermark(plain, W, H);
    assert.equal(unmarked.found, false, `unmarked: ${unmarked.matching}/48`);

    const png = await sharp(marked, raw).png().toBuffer();
    const fromPng = detectSdxlWatermark(new Uint8Array(await sharp(png).raw().toBuffer()), W, H);
    assert.equal(fromPng.found, true, `PNG: ${fromPng.matching}/48`);

    // Kiln writes JPEG with full-resolution chroma; a 4:2:0 re-encode blurs U past the quantiser's ±9 margin.
    const jpeg = (await encodeImageFile({ width: W, height: H, rgb: marked }, "jpeg", 90, "watermark test")).bytes;
    const fromJpeg = detectSdxlWatermark(new Uint8Array(await sharp(jpeg).removeAlpha().raw().toBuffer()), W, H);
    assert.equal(fromJpeg.found, true, `JPEG q90: ${fromJpeg.matching}/48`);
    const subsampled = await sharp(marked, raw).jpeg({ quality: 90, chromaSubsampling: "4:2:0" }).toBuffer();
    const from420 = detectSdxlWatermark(new Uint8Array(await sharp(subsampled).raw().toBuffer()), W, H);
    // The package's own reading of a file (U centred on 128) misses the blocks where the float encoder saw U < 0.
    assert.ok(fromPng.readings.package < fromPng.readings.float);
    console.log(
      `# watermark bits matching (package reading / float-centred reading): unmarked ${unmarked.readings.package}/${unmarked.readings.float}, PNG ${fromPng.readings.package}/${fromPng.readings.float}, JPEG q90 4:4:4 ${fromJpeg.readings.package}/${fromJpeg.readings.float}, JPEG q90 4:2:0 ${from420.readings.package}/${from420.readings.float}`,
    );
  });

  it("leaves images narrower than 256 px, or under 256² pixels, untouched", () => {
    for (const [W, H] of [
      [128, 512],
      [248, 1024],
      [320, 192],
    ] as const) {
      const x = pictureLike(W, H);
      const before = x.slice();
      assert.equal(watermarkDecoded(x, H, W), false);
      assert.deepEqual(x, before);
      assert.equal(detectSdxlWatermark(chwToRgb8(x, H, W), W, H).found, false);
    }
    // The smallest marked size: 256 wide and 256² pixels.
    const x = pictureLike(256, 256);
    assert.equal(watermarkDecoded(x, 256, 256), true);
    const bits = decodeDwtMaxDct(chwToRgb8(x, 256, 256), 256, 256, 48, "float");
    assert.ok(bits.filter((b, i) => b === SDXL_WATERMARK_BITS[i]).length >= 40, bits.join(""));
  });
});
