import sharp from "sharp";

import type { RgbaImage } from "../batches/bitmap-font.js";
import type { ContactSheetMaker } from "../batches/outputs.js";

/**
 * Contact sheets on Node: sharp decodes and scales the renders and encodes the sheet; the grid and
 * the captions are drawn by the batch core in raw pixels (no fonts needed, so no fontconfig).
 */
export const sharpContactSheet: ContactSheetMaker = {
  async thumbnail(bytes, maxSide) {
    const { data, info } = await sharp(bytes)
      .resize(maxSide, maxSide, { fit: "inside" })
      .ensureAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    return {
      width: info.width,
      height: info.height,
      data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    };
  },
  async encodePng(image: RgbaImage) {
    const png = await sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), {
      raw: { width: image.width, height: image.height, channels: 4 },
    })
      .png({ compressionLevel: 6 })
      .toBuffer();
    return new Uint8Array(png);
  },
};
