import { type ChromaCentre, decodeDwtMaxDct, encodeDwtMaxDct } from "./dwt-max-dct.js";

/**
 * The SDXL watermark message, as diffusers' `pipelines/stable_diffusion_xl/watermark.py` (copied from Stability's
 * generative-models) has it: `0b101100111110110010010000011110111011000110011110`, 48 bits, MSB first.
 */
export const SDXL_WATERMARK_BITS: readonly number[] = [..."101100111110110010010000011110111011000110011110"].map(
  Number,
);

/** `WatermarkEncoder`/`WatermarkDecoder` refuse images under 256×256 pixels (`r·c < 256·256`). */
const MIN_PIXELS = 256 * 256;

/**
 * Whether `StableDiffusionXLWatermarker.apply_watermark` marks an image of this size: diffusers skips images
 * narrower than 256 px; an image at least 256 wide but under 256² pixels would make the package raise, so Kiln
 * leaves it unmarked too.
 */
export const watermarkable = (width: number, height: number): boolean => width >= 256 && width * height >= MIN_PIXELS;

const f32 = Math.fround;

/**
 * diffusers' `apply_watermark` on one decoded image, in place: the VAE's CHW output `x` (unclamped, ≈ [−1, 1]) as
 * `255·(x/2 + 0.5)` float32, RGB → BGR, `encode(image, "dwtDct")`, BGR → RGB, then `clamp(2·(x/255 − 0.5), −1, 1)`;
 * the image processor's `postprocess` rounds it to bytes afterwards. Returns false (unchanged) when the image is
 * too small to carry the mark.
 */
export function watermarkDecoded(x: Float32Array, height: number, width: number): boolean {
  if (!watermarkable(width, height)) return false;
  const plane = width * height;
  const toPixel = (v: number) => f32(255 * f32(v / 2 + 0.5));
  const r = new Float32Array(plane);
  const g = new Float32Array(plane);
  const b = new Float32Array(plane);
  for (let p = 0; p < plane; p++) {
    r[p] = toPixel(x[p]!);
    g[p] = toPixel(x[plane + p]!);
    b[p] = toPixel(x[2 * plane + p]!);
  }
  encodeDwtMaxDct({ width, height, r, g, b }, SDXL_WATERMARK_BITS);
  const back = (v: number) => {
    const y = f32(2 * f32(f32(v / 255) - 0.5));
    return y < -1 ? -1 : y > 1 ? 1 : y;
  };
  for (let p = 0; p < plane; p++) {
    x[p] = back(r[p]!);
    x[plane + p] = back(g[p]!);
    x[2 * plane + p] = back(b[p]!);
  }
  return true;
}

export interface WatermarkDetection {
  /** False when the image is under 256×256 pixels, where the package's decoder refuses to read. */
  readable: boolean;
  /** The 48 bits of the better reading (empty when not readable). */
  bits: number[];
  /** Bits equal to the SDXL message, of 48, in the better reading. */
  matching: number;
  accuracy: number;
  /** Matching bits per reading: as the package's decoder reads the file, and with chroma centred as encoded. */
  readings: Record<ChromaCentre, number>;
  /** `matching ≥ 40`: by chance (random bits) one image in ~600,000 would reach it. */
  found: boolean;
}

/** Matching bits from which the message counts as found (P(≥ 40 of 48 fair coins) ≈ 1.6·10⁻⁶). */
export const WATERMARK_MATCH_THRESHOLD = 40;

/**
 * `WatermarkDecoder("bits", 48).decode(image, "dwtDct")` of an 8-bit RGB (HWC) image, compared with the SDXL
 * message, read twice: as the package reads a file (U centred on 128) and with U centred on 0.5 as diffusers'
 * encoder saw it (it marks float images). The package's own reading misses the mark wherever U is negative
 * (the encoder then quantised a coefficient the 8-bit reading does not pick), so the better reading counts.
 */
export function detectSdxlWatermark(rgb: Uint8Array, width: number, height: number): WatermarkDetection {
  const length = SDXL_WATERMARK_BITS.length;
  if (width * height < MIN_PIXELS)
    return { readable: false, bits: [], matching: 0, accuracy: 0, readings: { package: 0, float: 0 }, found: false };
  const read = (centre: ChromaCentre) => {
    const bits = decodeDwtMaxDct(rgb, width, height, length, centre);
    return { bits, matching: bits.filter((bit, i) => bit === SDXL_WATERMARK_BITS[i]).length };
  };
  const asPackage = read("package");
  const asFloat = read("float");
  const best = asFloat.matching >= asPackage.matching ? asFloat : asPackage;
  return {
    readable: true,
    bits: best.bits,
    matching: best.matching,
    accuracy: best.matching / length,
    readings: { package: asPackage.matching, float: asFloat.matching },
    found: best.matching >= WATERMARK_MATCH_THRESHOLD,
  };
}
