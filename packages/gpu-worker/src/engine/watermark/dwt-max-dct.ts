/**
 * The `dwtDct` method of the `invisible-watermark` package (`imwatermark/maxDct.py`, class `EmbedMaxDct`, the
 * one `WatermarkEncoder.encode(image, "dwtDct")` runs), ported step by step:
 * 1. `cv2.cvtColor(bgr, COLOR_BGR2YUV)`;
 * 2. for channel in `range(2)` with `scales = [0, 36, 36]`: channel 0 (Y) has scale 0 and is skipped, so only
 *    channel 1 (U) carries the mark;
 * 3. `pywt.dwt2` (Haar, level 1) of the channel's top-left `row//4*4 × col//4*4` pixels;
 * 4. the approximation `cA` cut into 4×4 blocks, row-major; block k carries bit `k mod 48`: of the block's 16
 *    values, the one with the largest magnitude after the first (`argmax(abs(block.flatten()[1:])) + 1`, the
 *    first on ties) is quantised to `(⌊|v|/36⌋ + 0.25 + 0.5·bit)·36`, sign kept. Despite the method's name no DCT
 *    is taken: the quantised value is a DWT coefficient.
 * 5. `pywt.idwt2((cA, (cV, cH, cD)))`: the package passes the two detail bands swapped, which transposes every
 *    2×2 pixel block of U (top-right ↔ bottom-left); kept, as every SDXL image carries it.
 * 6. `cv2.cvtColor(yuv, COLOR_YUV2BGR)`.
 * The decoder reads the same coefficient of every block, votes `(|v| mod 36) > 18` per bit and takes a bit as 1
 * when its mean score × 255 exceeds 127.
 */

const f32 = Math.fround;

export const WATERMARK_SCALE = 36;
const BLOCK = 4;

// cv2's float YUV coefficients (B2Y, G2Y, R2Y, B→U, R→V; U→B, U→G, V→G, V→R) and its float chroma offset.
const B2Y = f32(0.114);
const G2Y = f32(0.587);
const R2Y = f32(0.299);
const B2U = f32(0.492);
const R2V = f32(0.877);
const U2B = f32(2.032);
const U2G = f32(-0.395);
const V2G = f32(-0.581);
const V2R = f32(1.14);
/** `ColorChannel<float>::half()`: a float image's chroma is centred on 0.5, not 128. */
const FLOAT_DELTA = 0.5;
/** pywt's Haar filter tap, as float32 (pywt keeps float32 input in float32) and as float64. */
const HAAR32 = f32(Math.SQRT1_2);
const HAAR64 = Math.SQRT1_2;

/** An image as three float planes (H×W each), in cv2's BGR order. */
export interface BgrPlanes {
  width: number;
  height: number;
  b: Float32Array;
  g: Float32Array;
  r: Float32Array;
}

/**
 * Haar level-1 `dwt2` of the top-left `h × w` (even) pixels of a float32 plane (row stride `stride`), in float32 as
 * pywt keeps float32 input. pywt transforms axis −2 (rows) first, then axis −1; cH = 'da' (detail down,
 * approximation across), cV = 'ad'.
 */
function dwt2F32(
  plane: Float32Array,
  stride: number,
  h: number,
  w: number,
): { a: Float64Array; hd: Float64Array; vd: Float64Array; dd: Float64Array } {
  const s = HAAR32;
  const W = w / 2;
  const n = (h / 2) * W;
  const a = new Float64Array(n);
  const hd = new Float64Array(n);
  const vd = new Float64Array(n);
  const dd = new Float64Array(n);
  for (let i = 0, k = 0; i < h / 2; i++) {
    for (let j = 0; j < W; j++, k++) {
      const p = 2 * i * stride + 2 * j;
      const x00 = f32(s * plane[p]!);
      const x01 = f32(s * plane[p + 1]!);
      const x10 = f32(s * plane[p + stride]!);
      const x11 = f32(s * plane[p + stride + 1]!);
      const lo0 = f32(x10 + x00);
      const lo1 = f32(x11 + x01);
      const hi0 = f32(x00 - x10);
      const hi1 = f32(x01 - x11);
      a[k] = f32(f32(s * lo1) + f32(s * lo0));
      vd[k] = f32(f32(s * lo0) - f32(s * lo1));
      hd[k] = f32(f32(s * hi1) + f32(s * hi0));
      dd[k] = f32(f32(s * hi0) - f32(s * hi1));
    }
  }
  return { a, hd, vd, dd };
}

/** The approximation band of `dwt2` in float64 (pywt turns 8-bit input into float64); the decoder needs no other. */
function approximationF64(plane: ArrayLike<number>, stride: number, h: number, w: number): Float64Array {
  const s = HAAR64;
  const W = w / 2;
  const a = new Float64Array((h / 2) * W);
  for (let i = 0, k = 0; i < h / 2; i++) {
    for (let j = 0; j < W; j++, k++) {
      const p = 2 * i * stride + 2 * j;
      const lo0 = s * plane[p + stride]! + s * plane[p]!;
      const lo1 = s * plane[p + stride + 1]! + s * plane[p + 1]!;
      a[k] = s * lo1 + s * lo0;
    }
  }
  return a;
}

/**
 * `pywt.idwt2((a, (h, v, d)))` into the top-left of `plane`, in float32. pywt inverts the last axis first:
 * across (a with v → lo, h with d → hi), then down (lo with hi).
 */
function idwt2Into(
  plane: Float32Array,
  stride: number,
  h: number,
  w: number,
  a: Float64Array,
  hd: Float64Array,
  vd: Float64Array,
  dd: Float64Array,
): void {
  const s = HAAR32;
  const W = w / 2;
  for (let i = 0; i < h / 2; i++) {
    for (let j = 0; j < W; j++) {
      const k = i * W + j;
      const lo0 = f32(f32(s * a[k]!) + f32(s * vd[k]!));
      const lo1 = f32(f32(s * a[k]!) - f32(s * vd[k]!));
      const hi0 = f32(f32(s * hd[k]!) + f32(s * dd[k]!));
      const hi1 = f32(f32(s * hd[k]!) - f32(s * dd[k]!));
      const p = 2 * i * stride + 2 * j;
      plane[p] = f32(f32(s * lo0) + f32(s * hi0));
      plane[p + 1] = f32(f32(s * lo1) + f32(s * hi1));
      plane[p + stride] = f32(f32(s * lo0) - f32(s * hi0));
      plane[p + stride + 1] = f32(f32(s * lo1) - f32(s * hi1));
    }
  }
}

/** Index (1..15) of the block value `diffuse_dct_matrix` / `infer_dct_matrix` pick: the first largest |v| after the first. */
function pickedIndex(a: Float64Array, W: number, bi: number, bj: number): number {
  let best = -1;
  let bestAbs = -Infinity;
  for (let q = 1; q < BLOCK * BLOCK; q++) {
    const v = Math.abs(a[(bi * BLOCK + ((q / BLOCK) | 0)) * W + bj * BLOCK + (q % BLOCK)]!);
    if (v > bestAbs) {
      bestAbs = v;
      best = q;
    }
  }
  return (bi * BLOCK + ((best / BLOCK) | 0)) * W + bj * BLOCK + (best % BLOCK);
}

/** `diffuse_dct_matrix`'s quantiser: `(⌊|v|/scale⌋ + 0.25 + 0.5·bit)·scale`, with the sign of v. */
export function quantise(v: number, bit: number, scale = WATERMARK_SCALE): number {
  const q = (Math.floor(Math.abs(v) / scale) + 0.25 + 0.5 * bit) * scale;
  return v >= 0 ? q : -q;
}

/** `EmbedMaxDct.encode` on float planes (0..255 scale), in place. `bits`: the message, MSB first. */
export function encodeDwtMaxDct(image: BgrPlanes, bits: readonly number[]): void {
  const { width: col, height: row, b, g, r } = image;
  const plane = row * col;
  const y = new Float32Array(plane);
  const u = new Float32Array(plane);
  const v = new Float32Array(plane);
  for (let p = 0; p < plane; p++) {
    const Y = f32(f32(f32(b[p]! * B2Y) + f32(g[p]! * G2Y)) + f32(r[p]! * R2Y));
    y[p] = Y;
    u[p] = f32(f32(f32(b[p]! - Y) * B2U) + FLOAT_DELTA);
    v[p] = f32(f32(f32(r[p]! - Y) * R2V) + FLOAT_DELTA);
  }
  const h = Math.floor(row / 4) * 4;
  const w = Math.floor(col / 4) * 4;
  const { a, hd, vd, dd } = dwt2F32(u, col, h, w);
  const W = w / 2;
  const blocksDown = Math.floor(h / 2 / BLOCK);
  const blocksAcross = Math.floor(W / BLOCK);
  let num = 0;
  for (let bi = 0; bi < blocksDown; bi++) {
    for (let bj = 0; bj < blocksAcross; bj++) {
      const k = pickedIndex(a, W, bi, bj);
      a[k] = f32(quantise(a[k]!, bits[num % bits.length]!));
      num++;
    }
  }
  // The package's `idwt2((ca1, (v1, h1, d1)))`: horizontal and vertical details swapped.
  idwt2Into(u, col, h, w, a, vd, hd, dd);
  for (let p = 0; p < plane; p++) {
    const Y = y[p]!;
    const du = f32(u[p]! - FLOAT_DELTA);
    const dv = f32(v[p]! - FLOAT_DELTA);
    b[p] = f32(Y + f32(du * U2B));
    g[p] = f32(f32(Y + f32(du * U2G)) + f32(dv * V2G));
    r[p] = f32(Y + f32(dv * V2R));
  }
}

// cv2's 8-bit BGR→YUV is fixed point with 14-bit coefficients, rounding at each descale.
const SHIFT = 14;
const fix = (c: number) => Math.round(c * (1 << SHIFT));
const IB2Y = fix(0.114);
const IG2Y = fix(0.587);
const IR2Y = fix(0.299);
const IB2U = fix(0.492);
const descale = (x: number) => (x + (1 << (SHIFT - 1))) >> SHIFT;
const sat8 = (x: number) => (x < 0 ? 0 : x > 255 ? 255 : x);

/** The U plane cv2 computes from 8-bit RGB (HWC) bytes. */
export function uPlane8(rgb: Uint8Array, width: number, height: number): Uint8Array {
  const u = new Uint8Array(width * height);
  for (let p = 0; p < u.length; p++) {
    const R = rgb[p * 3]!;
    const G = rgb[p * 3 + 1]!;
    const B = rgb[p * 3 + 2]!;
    const Y = descale(B * IB2Y + G * IG2Y + R * IR2Y);
    u[p] = sat8(descale((B - Y) * IB2U + (128 << SHIFT)));
  }
  return u;
}

/**
 * How the decoder centres chroma. `package`: as `WatermarkDecoder` reads an 8-bit file (cv2's U centred on 128).
 * `float`: as diffusers' encoder saw it (float input, U centred on 0.5): the 8-bit U minus 127.5.
 */
export type ChromaCentre = "package" | "float";

/**
 * `EmbedMaxDct.decode` of an 8-bit RGB image: the message bits read back (pywt works in float64 on 8-bit input).
 * With `centre: "float"` the U plane is first moved back to the float centre the SDXL encoder used, so the decoder
 * picks the coefficient the encoder quantised even where U is negative.
 */
export function decodeDwtMaxDct(
  rgb: Uint8Array,
  width: number,
  height: number,
  length: number,
  centre: ChromaCentre = "package",
): number[] {
  const u8 = uPlane8(rgb, width, height);
  const u = centre === "package" ? u8 : Float64Array.from(u8, (v) => v - 127.5);
  const h = Math.floor(height / 4) * 4;
  const w = Math.floor(width / 4) * 4;
  const a = approximationF64(u, width, h, w);
  const W = w / 2;
  const sums = new Array<number>(length).fill(0);
  const counts = new Array<number>(length).fill(0);
  let num = 0;
  for (let bi = 0; bi < Math.floor(h / 2 / BLOCK); bi++) {
    for (let bj = 0; bj < Math.floor(W / BLOCK); bj++) {
      const val = Math.abs(a[pickedIndex(a, W, bi, bj)]!);
      sums[num % length]! += val % WATERMARK_SCALE > 0.5 * WATERMARK_SCALE ? 1 : 0;
      counts[num % length]!++;
      num++;
    }
  }
  return sums.map((s, i) => ((s / counts[i]!) * 255 > 127 ? 1 : 0));
}
