/**
 * ATen's AVX2 Box–Muller kernel (`normal_fill_16_AVX2` in aten/src/ATen/native/cpu/DistributionTemplates.h, with
 * `log256_ps` and `sincos256_ps` from aten/src/ATen/native/cpu/avx_mathfun.h), one lane at a time, with the
 * float32 rounding of every vector instruction and the fused multiply-adds of the compiled x86-64 code.
 *
 * Where the compiled code fuses. The source uses separate `_mm256_mul_ps`/`_mm256_add_ps` intrinsics, which GCC
 * lowers to plain vector `*` and `+`; ATen's AVX2 objects are built with `-mavx2 -mfma` and GCC's default
 * `-ffp-contract=fast`, so its FMA pass fuses every multiply whose only use is an add or a subtract. When both
 * operands of an add are products, the multiply that comes first in the code is fused and the later one is
 * rounded on its own (the pass walks the statements in order). That gives, lane by lane:
 * - log: the Horner steps `y·x + p_k` → fma; `y·z + e·q1` → fma(y, z, fl(e·q1)); `y − z·0.5` → fma(−z, 0.5, y)
 *   (exact either way: z·0.5 is exact); `(x + y) + e·q2` → fma(e, q2, x + y); the multiplies `y·x` after the last
 *   coefficient and `x·x` feed multiplies, so they round on their own;
 * - sincos: the Cody–Waite reduction `x + y·DP_k` → three fmas; the cosine's Horner steps → fma, then
 *   `(y·z)·z − z·0.5` → fma(y·z, z, −fl(z·0.5)); the sine's Horner steps → fma, then `(y2·z)·x + x` → fma;
 * - Box–Muller: `−2·log(u1)` feeds a square root and `2π·u2` feeds the reduction's truncation, so neither fuses;
 *   the explicit `_mm256_fmadd_ps(n, std, mean)` with std = 1 and mean = 0 returns n (−0 becomes +0).
 * The same pattern is what independent ports report as matching torch's wheels bit for bit (see docs/engine.md);
 * Kiln's tests check it against values printed by torch itself.
 */

const f32 = Math.fround;

// float32 bits of a value, for the bit tricks (exponent extraction, sign flips) the kernel does on its lanes.
const bitsF = new Float32Array(1);
const bitsU = new Uint32Array(bitsF.buffer);

function toBits(x: number): number {
  bitsF[0] = x;
  return bitsU[0]!;
}

function fromBits(b: number): number {
  bitsU[0] = b >>> 0;
  return bitsF[0]!;
}

/**
 * The float32 fused multiply-add `fl32(a·b + c)` of float32 inputs, rounded once as the FMA instruction does.
 *
 * a·b is exact in float64 (24 + 24 significant bits ≤ 53). s = a·b + c rounded to float64 is not always exact,
 * and rounding s again to float32 can differ from rounding the exact sum once (double rounding). It can only
 * differ when s lies exactly on a float32 midpoint: float32 midpoints are float64 numbers, so if one lay strictly
 * between the exact sum and s it would be a closer float64 than s. s is a midpoint between r = fl32(s) and its
 * neighbour exactly when r + 2(s − r) is a float32 (that neighbour); otherwise r + 2(s − r) falls strictly
 * between r and the neighbour (also across a power of two, where the spacing below halves). At a midpoint the
 * exact sum is s + err with TwoSum's exact error term; err = 0 is a true tie (fl32 already rounded it to even),
 * else the sum rounds to the neighbour on err's side. Overflow and NaN do not arise for the kernel's lanes.
 */
export function fma32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = f32(s);
  if (r === s) return r;
  const d = s - r; // exact (Sterbenz)
  const other = r + 2 * d; // exact: within a factor of 2 of r
  if (f32(other) !== other) return r;
  const bv = s - p;
  const err = p - (s - bv) + (c - bv);
  if (err === 0) return r;
  return err > 0 === d > 0 ? other : r;
}

const ONE = 1;
const MIN_NORM_POS = 2 ** -126;
const SQRTHF = f32(0.707106781186547524);
const LOG_P0 = f32(7.0376836292e-2);
const LOG_P1 = f32(-1.151461031e-1);
const LOG_P2 = f32(1.167699874e-1);
const LOG_P3 = f32(-1.2420140846e-1);
const LOG_P4 = f32(1.4249322787e-1);
const LOG_P5 = f32(-1.6668057665e-1);
const LOG_P6 = f32(2.0000714765e-1);
const LOG_P7 = f32(-2.4999993993e-1);
const LOG_P8 = f32(3.3333331174e-1);
const LOG_Q1 = f32(-2.1219444e-4);
const LOG_Q2 = f32(0.693359375);

/** `log256_ps` on one lane (x > 0 here: the kernel passes 1 − u ∈ (0, 1]). */
export function log256(input: number): number {
  const clamped = input < MIN_NORM_POS ? MIN_NORM_POS : input;
  const bits = toBits(clamped);
  // Mantissa with the exponent of 0.5: x ∈ [0.5, 1); e = the unbiased exponent + 1.
  let x = fromBits((bits & ~0x7f800000) | 0x3f000000);
  let e = (bits >>> 23) - 0x7f + 1;
  const below = x < SQRTHF;
  const tmp = below ? x : 0;
  x = f32(x - ONE);
  if (below) e -= 1;
  x = f32(x + tmp);

  const z = f32(x * x);
  let y = fma32(LOG_P0, x, LOG_P1);
  y = fma32(y, x, LOG_P2);
  y = fma32(y, x, LOG_P3);
  y = fma32(y, x, LOG_P4);
  y = fma32(y, x, LOG_P5);
  y = fma32(y, x, LOG_P6);
  y = fma32(y, x, LOG_P7);
  y = fma32(y, x, LOG_P8);
  y = f32(y * x);
  y = fma32(y, z, f32(e * LOG_Q1));
  y = fma32(-z, 0.5, y);
  x = f32(x + y);
  return fma32(e, LOG_Q2, x);
}

const FOPI = f32(1.27323954473516);
const MINUS_DP1 = f32(-0.78515625);
const MINUS_DP2 = f32(-2.4187564849853515625e-4);
const MINUS_DP3 = f32(-3.77489497744594108e-8);
const SINCOF_P0 = f32(-1.9515295891e-4);
const SINCOF_P1 = f32(8.3321608736e-3);
const SINCOF_P2 = f32(-1.6666654611e-1);
const COSCOF_P0 = f32(2.443315711809948e-5);
const COSCOF_P1 = f32(-1.388731625493765e-3);
const COSCOF_P2 = f32(4.166664568298827e-2);

/**
 * `sincos256_ps` on one lane; writes [sin, cos] into `out`. The kernel's sign-bit XORs are negations here (the
 * same bits, −0 included); its input is 2π·u ≥ +0, so the sign of the input is that of `theta < 0`.
 */
export function sincos256(theta: number, out: Float64Array | number[]): void {
  let x = Math.abs(theta);

  // j = (trunc(|x|·4/π) + 1) & ~1: the octant pair; y = j as a float.
  const j = (Math.trunc(f32(x * FOPI)) + 1) & ~1;
  const y = j;
  const useSinePolyForSine = (j & 2) === 0;
  const negateSin = theta < 0 !== ((j & 4) !== 0);
  const negateCos = (~(j - 2) & 4) !== 0;

  x = fma32(y, MINUS_DP1, x);
  x = fma32(y, MINUS_DP2, x);
  x = fma32(y, MINUS_DP3, x);

  const z = f32(x * x);
  let yc = fma32(COSCOF_P0, z, COSCOF_P1);
  yc = fma32(yc, z, COSCOF_P2);
  yc = f32(yc * z);
  yc = fma32(yc, z, -f32(z * 0.5));
  yc = f32(yc + ONE);

  let ys = fma32(SINCOF_P0, z, SINCOF_P1);
  ys = fma32(ys, z, SINCOF_P2);
  ys = f32(ys * z);
  ys = fma32(ys, x, x);

  const sine = useSinePolyForSine ? ys : yc;
  const cosine = useSinePolyForSine ? yc : ys;
  out[0] = negateSin ? -sine : sine;
  out[1] = negateCos ? -cosine : cosine;
}

/** `_mm256_set1_ps(2.0f * c10::pi<double>)`: 2π computed in double, then rounded to float32. */
const TWO_PI_F32 = f32(2 * Math.PI);
const MINUS_TWO = -2;
const sc = new Float64Array(2);

/** ATen's `normal_fill_16_AVX2` (mean 0, std 1): uniforms in data[o…o+15] become normals in place. */
export function boxMuller16Avx2(data: Float32Array, o: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(ONE - data[o + j]!);
    const u2 = data[o + j + 8]!;
    const radius = f32(Math.sqrt(f32(MINUS_TWO * log256(u1))));
    sincos256(f32(TWO_PI_F32 * u2), sc);
    // fmadd(n, 1, 0) = n + 0: the same value, and −0 turns into +0 as the instruction does.
    data[o + j] = f32(radius * sc[1]!) + 0;
    data[o + j + 8] = f32(radius * sc[0]!) + 0;
  }
}
