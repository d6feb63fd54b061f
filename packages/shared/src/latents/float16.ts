/**
 * IEEE 754 half precision conversion. Node 20 has no Float16Array; latents travel between stages
 * as fp16 (128 KiB for a 1024² image) and are computed in fp32.
 */
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Rounds to nearest even, saturating to ±Infinity, keeping NaN a NaN. */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let rounded = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && rounded & 1)) rounded++;
    return sign | rounded;
  }
  let bits = sign | (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && bits & 1)) bits++;
  return bits;
}

export function float16BitsToFloat32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Same rounding as float32ToFloat16Bits, reading the float bits in place (this runs on every hand-over). */
export function toFloat16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < words.length; i++) {
    const x = words[i]!;
    const exp = (x >>> 23) & 0xff;
    const e = exp - 112;
    // Normal halves take the fast path; zeros, subnormals, overflow, Inf and NaN the exact one.
    if (e > 0 && e < 0x1f) {
      const mant = x & 0x7fffff;
      let bits = ((x >>> 16) & 0x8000) | (e << 10) | (mant >>> 13);
      const rest = mant & 0x1fff;
      if (rest > 0x1000 || (rest === 0x1000 && bits & 1)) bits++;
      out[i] = bits;
    } else {
      out[i] = float32ToFloat16Bits(values[i]!);
    }
  }
  return out;
}

let halfToFloat: Float32Array | undefined;

/** Every one of the 65,536 halves looked up in a table built once (256 KiB). */
export function fromFloat16(bits: Uint16Array): Float32Array {
  if (!halfToFloat) {
    halfToFloat = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) halfToFloat[h] = float16BitsToFloat32(h);
  }
  const table = halfToFloat;
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]!]!;
  return out;
}
