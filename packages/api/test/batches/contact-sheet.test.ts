import assert from "node:assert/strict";
import { describe, it } from "node:test";

import sharp from "sharp";

import { drawText, type RgbaImage, textWidth } from "../../src/batches/bitmap-font.js";
import { captionLines, composeContactSheet, type SheetTile } from "../../src/batches/outputs.js";
import { sharpContactSheet } from "../../src/entry/contact-sheet.js";

async function tile(seed: number, width: number, height: number): Promise<SheetTile> {
  const png = await sharp({ create: { width, height, channels: 3, background: { r: seed * 40, g: 120, b: 200 } } })
    .png()
    .toBuffer();
  return {
    image: await sharpContactSheet.thumbnail(new Uint8Array(png), 96),
    caption: captionLines({ prompt: `a product shot number ${seed}`, seed, width, height }, 30),
  };
}

describe("contact sheets", () => {
  it("lays out a grid with captions under each tile, drawn without any system font", async () => {
    const tiles = await Promise.all([
      tile(1, 256, 256),
      tile(2, 512, 256),
      tile(3, 256, 512),
      tile(4, 64, 64),
      tile(5, 256, 256),
    ]);
    // A wide render is scaled to fit the tile square, keeping its aspect.
    assert.deepEqual([tiles[1]!.image.width, tiles[1]!.image.height], [96, 48]);
    const layout = { tile: 96, columns: 3, textScale: 1 };
    const withCaptions = composeContactSheet(tiles, { ...layout, captions: true });
    const without = composeContactSheet(tiles, { ...layout, captions: false });
    // 3 columns × (96 + 8 gap) + 8; 2 rows × (96 + captions + 8) + 8, captions = 2 lines × 7 px + 4.
    assert.deepEqual([withCaptions.width, withCaptions.height], [3 * 104 + 8, 2 * (96 + 18 + 8) + 8]);
    assert.deepEqual([without.width, without.height], [3 * 104 + 8, 2 * 104 + 8]);

    // The caption band of the first tile has inked pixels; the same band on a sheet drawn without captions is background.
    const band = (img: RgbaImage, y0: number, y1: number) => {
      let bright = 0;
      for (let y = y0; y < y1; y++)
        for (let x = 8; x < 8 + 96; x++) if (img.data[(y * img.width + x) * 4]! > 200) bright++;
      return bright;
    };
    assert.ok(band(withCaptions, 8 + 96, 8 + 96 + 18) > 40, "caption pixels are drawn");
    const encoded = await sharpContactSheet.encodePng(withCaptions);
    const meta = await sharp(encoded).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ["png", withCaptions.width, withCaptions.height]);
    const decoded = await sharp(encoded).raw().toBuffer();
    assert.equal(decoded.length, withCaptions.width * withCaptions.height * 4);
  });

  it("draws different captions differently", () => {
    const blank = () => ({ width: 80, height: 8, data: new Uint8Array(80 * 8 * 4) });
    const a = blank();
    const b = blank();
    drawText(a, "SEED 1", 0, 0, 1, [255, 255, 255]);
    drawText(b, "SEED 7", 0, 0, 1, [255, 255, 255]);
    assert.notDeepEqual(a.data, b.data);
    assert.equal(textWidth("SEED 1", 1), 23);
    // Lower case is drawn as capitals.
    const c = blank();
    drawText(c, "seed 1", 0, 0, 1, [255, 255, 255]);
    assert.deepEqual(c.data, a.data);
  });
});
