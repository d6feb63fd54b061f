/**
 * What the API learns about an uploaded picture without decoding it (Web-standard, no sharp): its format, its
 * upright size, whether it has alpha or animation, and whether the container is complete. The worker decodes it.
 */

export type ImageFormat = "png" | "jpeg" | "webp";

export interface ImageHeader {
  format: ImageFormat;
  contentType: string;
  /** Upright size: JPEG EXIF orientations 5–8 swap width and height. */
  width: number;
  height: number;
  hasAlpha: boolean;
  animated: boolean;
}

/** Why a picture is refused: 400 malformed, 415 not a supported format. */
export class ImageHeaderError extends Error {
  constructor(
    readonly status: 400 | 415,
    message: string,
  ) {
    super(message);
  }
}

const be32 = (b: Uint8Array, o: number) => ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
const be16 = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!;
const le16 = (b: Uint8Array, o: number) => b[o]! | (b[o + 1]! << 8);
const le24 = (b: Uint8Array, o: number) => b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16);
const le32 = (b: Uint8Array, o: number) => (le24(b, o) | (b[o + 3]! << 24)) >>> 0;
const ascii = (b: Uint8Array, o: number, n: number) => String.fromCharCode(...b.subarray(o, o + n));

const truncated = (format: string) =>
  new ImageHeaderError(400, `the ${format} file is truncated or corrupt (its structure does not reach its end marker)`);

export function readImageHeader(bytes: Uint8Array): ImageHeader {
  if (bytes.length >= 8 && be32(bytes, 0) === 0x89504e47 && be32(bytes, 4) === 0x0d0a1a0a) return png(bytes);
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return jpeg(bytes);
  if (bytes.length >= 12 && ascii(bytes, 0, 4) === "RIFF" && ascii(bytes, 8, 4) === "WEBP") return webp(bytes);
  const what =
    bytes.length >= 6 && ascii(bytes, 0, 3) === "GIF"
      ? "a GIF"
      : bytes.length === 0
        ? "empty"
        : "not an image Kiln reads";
  throw new ImageHeaderError(415, `the file is ${what}; send a PNG, JPEG or WebP`);
}

/** Chunks from IHDR to IEND, each length inside the file: a cut-off upload fails here. */
function png(b: Uint8Array): ImageHeader {
  let o = 8;
  let width = 0;
  let height = 0;
  let colorType = 0;
  let hasAlpha = false;
  let animated = false;
  let ended = false;
  while (o + 12 <= b.length) {
    const length = be32(b, o);
    const type = ascii(b, o + 4, 4);
    if (o + 12 + length > b.length) throw truncated("PNG");
    if (o === 8) {
      if (type !== "IHDR" || length < 13) throw new ImageHeaderError(400, "the PNG has no IHDR header; it is corrupt");
      width = be32(b, o + 8);
      height = be32(b, o + 12);
      colorType = b[o + 17]!;
      hasAlpha = colorType === 4 || colorType === 6;
    }
    if (type === "tRNS") hasAlpha = true;
    if (type === "acTL") animated = true;
    o += 12 + length;
    if (type === "IEND") {
      ended = true;
      break;
    }
  }
  if (!ended) throw truncated("PNG");
  return { format: "png", contentType: "image/png", width, height, hasAlpha, animated };
}

/** Segments up to the first SOF (size), an APP1 Exif orientation on the way, and the EOI marker at the end. */
function jpeg(b: Uint8Array): ImageHeader {
  let o = 2;
  let width = -1;
  let height = -1;
  let orientation = 1;
  while (o + 4 <= b.length) {
    if (b[o] !== 0xff) throw new ImageHeaderError(400, "the JPEG's segments are corrupt");
    const marker = b[o + 1]!;
    if (marker === 0xff) {
      o++;
      continue;
    }
    const length = be16(b, o + 2);
    if (o + 2 + length > b.length) throw truncated("JPEG");
    if (marker === 0xe1 && ascii(b, o + 4, 4) === "Exif") orientation = exifOrientation(b, o + 10, o + 2 + length);
    const sof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (sof) {
      height = be16(b, o + 5);
      width = be16(b, o + 7);
      break;
    }
    if (marker === 0xda) break;
    o += 2 + length;
  }
  if (width < 0) throw truncated("JPEG");
  // Entropy-coded data follows; a complete file ends with EOI (some encoders pad after it).
  let end = b.length;
  while (end > 2 && b[end - 1] === 0) end--;
  if (!(b[end - 2] === 0xff && b[end - 1] === 0xd9)) throw truncated("JPEG");
  const swap = orientation >= 5 && orientation <= 8;
  return {
    format: "jpeg",
    contentType: "image/jpeg",
    width: swap ? height : width,
    height: swap ? width : height,
    hasAlpha: false,
    animated: false,
  };
}

/** The Orientation tag (0x0112) of IFD0 in a TIFF block at [start, end). */
function exifOrientation(b: Uint8Array, start: number, end: number): number {
  if (start + 8 > end) return 1;
  const little = ascii(b, start, 2) === "II";
  const u16 = (o: number) => (little ? le16(b, o) : be16(b, o));
  const u32 = (o: number) => (little ? le32(b, o) : be32(b, o));
  const ifd = start + u32(start + 4);
  if (ifd + 2 > end) return 1;
  const count = u16(ifd);
  for (let i = 0; i < count; i++) {
    const entry = ifd + 2 + i * 12;
    if (entry + 12 > end) break;
    if (u16(entry) === 0x0112) return u16(entry + 8);
  }
  return 1;
}

/** RIFF size must match the file; size from VP8X (canvas), VP8 (key frame) or VP8L. */
function webp(b: Uint8Array): ImageHeader {
  const riffSize = le32(b, 4);
  if (riffSize + 8 > b.length || riffSize < 4) throw truncated("WebP");
  let o = 12;
  let width = 0;
  let height = 0;
  let hasAlpha = false;
  let animated = false;
  let found = false;
  while (o + 8 <= riffSize + 8) {
    const type = ascii(b, o, 4);
    const size = le32(b, o + 4);
    const data = o + 8;
    if (data + size > b.length) throw truncated("WebP");
    if (type === "VP8X" && size >= 10) {
      const flags = b[data]!;
      animated = (flags & 0x02) !== 0;
      hasAlpha = (flags & 0x10) !== 0;
      width = le24(b, data + 4) + 1;
      height = le24(b, data + 7) + 1;
      found = true;
    } else if (type === "ANIM" || type === "ANMF") animated = true;
    else if (type === "VP8 " && !found && size >= 10) {
      width = le16(b, data + 6) & 0x3fff;
      height = le16(b, data + 8) & 0x3fff;
      found = true;
    } else if (type === "VP8L" && !found && size >= 5) {
      const bits = le32(b, data + 1);
      width = (bits & 0x3fff) + 1;
      height = ((bits >>> 14) & 0x3fff) + 1;
      hasAlpha = ((bits >>> 28) & 1) === 1;
      found = true;
    }
    o = data + size + (size & 1);
  }
  if (!found) throw new ImageHeaderError(400, "the WebP has no image chunk; it is corrupt");
  return { format: "webp", contentType: "image/webp", width, height, hasAlpha, animated };
}
