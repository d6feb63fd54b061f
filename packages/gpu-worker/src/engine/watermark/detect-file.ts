import sharp from "sharp";

import { detectSdxlWatermark, type WatermarkDetection } from "./sdxl-watermark.js";

/**
 * Reads an image file (PNG, JPEG, WebP, …) as `cv2.imread` gives it to the decoder: 8-bit colour, alpha dropped,
 * EXIF orientation not applied; then looks for the SDXL message. Throws on a file sharp cannot decode.
 */
export async function detectSdxlWatermarkInFile(
  bytes: Uint8Array,
): Promise<WatermarkDetection & { width: number; height: number }> {
  const { data, info } = await sharp(bytes, { failOn: "error", animated: false })
    .removeAlpha()
    .toColourspace("srgb")
    .raw({ depth: "uchar" })
    .toBuffer({ resolveWithObject: true });
  const rgb = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { ...detectSdxlWatermark(rgb, info.width, info.height), width: info.width, height: info.height };
}
