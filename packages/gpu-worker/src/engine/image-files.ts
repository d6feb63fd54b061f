import { crc32 } from "node:zlib";

import type { OutputFormat } from "@kiln/shared";
import sharp from "sharp";

import type { DecodedImage } from "./vae-decoder.js";

export interface EncodedImage {
  bytes: Uint8Array;
  format: OutputFormat;
  contentType: string;
  width: number;
  height: number;
}

const CONTENT_TYPES: Record<OutputFormat, string> = { png: "image/png", webp: "image/webp", jpeg: "image/jpeg" };

/**
 * Encodes one decoded image. The generation parameters go into the file the way A1111 writes them
 * (a PNG `parameters` text chunk; EXIF ImageDescription for WebP/JPEG), so a user can see how an image
 * was made in any tool that reads them.
 */
export async function encodeImageFile(
  image: DecodedImage,
  format: OutputFormat,
  quality: number,
  parameters: string,
): Promise<EncodedImage> {
  const base = sharp(Buffer.from(image.rgb.buffer, image.rgb.byteOffset, image.rgb.byteLength), {
    raw: { width: image.width, height: image.height, channels: 3 },
  });
  let bytes: Uint8Array;
  switch (format) {
    case "png":
      bytes = withPngTextChunk(await base.png({ compressionLevel: 6 }).toBuffer(), "parameters", parameters);
      break;
    case "webp":
      bytes = await base
        .webp({ quality })
        .withExif({ IFD0: { ImageDescription: asciiSafe(parameters) } })
        .toBuffer();
      break;
    case "jpeg":
      // Full-resolution chroma: the SDXL watermark lives in U, and 4:2:0 subsampling erases it (watermark/).
      bytes = await base
        .jpeg({ quality, chromaSubsampling: "4:4:4" })
        .withExif({ IFD0: { ImageDescription: asciiSafe(parameters) } })
        .toBuffer();
      break;
  }
  return { bytes, format, contentType: CONTENT_TYPES[format], width: image.width, height: image.height };
}

/** EXIF ASCII fields are 7-bit; keep the text readable rather than mangled. */
const asciiSafe = (s: string) => s.replace(/[^\x20-\x7e\n]/g, "?");

/** Inserts an iTXt chunk (UTF-8, uncompressed) right after IHDR. */
export function withPngTextChunk(png: Uint8Array, keyword: string, text: string): Uint8Array {
  const ihdrEnd = 8 + 4 + 4 + 13 + 4;
  const data = Buffer.concat([Buffer.from(keyword, "latin1"), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(text, "utf8")]);
  const typeAndData = Buffer.concat([Buffer.from("iTXt", "latin1"), data]);
  const chunk = Buffer.alloc(4 + typeAndData.length + 4);
  chunk.writeUInt32BE(data.length, 0);
  typeAndData.copy(chunk, 4);
  chunk.writeUInt32BE(crc32(typeAndData) >>> 0, 4 + typeAndData.length);
  return Buffer.concat([png.subarray(0, ihdrEnd), chunk, png.subarray(ihdrEnd)]);
}

/** Reads a PNG's text chunks (tEXt and uncompressed iTXt) — used by tests and `kiln inspect`. */
export function readPngText(png: Uint8Array): Record<string, string> {
  const buf = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  const out: Record<string, string> = {};
  for (let o = 8; o + 8 <= buf.length;) {
    const length = buf.readUInt32BE(o);
    const type = buf.toString("latin1", o + 4, o + 8);
    const data = buf.subarray(o + 8, o + 8 + length);
    if (type === "tEXt") {
      const z = data.indexOf(0);
      out[data.toString("latin1", 0, z)] = data.toString("latin1", z + 1);
    } else if (type === "iTXt") {
      const z = data.indexOf(0);
      const compressed = data[z + 1];
      let p = z + 3;
      p = data.indexOf(0, p) + 1; // language tag
      p = data.indexOf(0, p) + 1; // translated keyword
      if (!compressed) out[data.toString("latin1", 0, z)] = data.toString("utf8", p);
    }
    o += 12 + length;
  }
  return out;
}
