/** Small tensor operations on NCHW Float32Arrays used between the model calls. */

// The elementwise kernels of the denoising loop. Each is a function of its loop alone, on purpose: a loop inside a
// larger method (a scheduler's `step`) is optimized by on-stack replacement, and the code after it, never run
// before, deoptimizes it again on every call — so each step ran part of its 65,536-value passes in the
// interpreter, boxing every value on the heap (a third of the worker's allocations, and full collections on the
// event loop that feeds the GPU). A kernel like these is optimized whole once and stays so.

/** out[i] = a·x[i] + b·y[i] (`out` may be `x` or `y`). */
export function combine2(out: Float32Array, a: number, x: Float32Array, b: number, y: Float32Array): void {
  for (let i = 0; i < out.length; i++) out[i] = a * x[i]! + b * y[i]!;
}

/** out[i] = a·x[i] + b·y[i] + c·z[i] (`out` may be one of the inputs). */
export function combine3(
  out: Float32Array,
  a: number,
  x: Float32Array,
  b: number,
  y: Float32Array,
  c: number,
  z: Float32Array,
): void {
  for (let i = 0; i < out.length; i++) out[i] = a * x[i]! + b * y[i]! + c * z[i]!;
}

/** out[i] = x[i] + y[i]·s. */
export function addScaled(out: Float32Array, x: Float32Array, y: Float32Array, s: number): void {
  for (let i = 0; i < out.length; i++) out[i] = x[i]! + y[i]! * s;
}

/** out[i] = x[i] / d for each i of `x` (`out` at least as long). */
export function divideInto(out: Float32Array, x: Float32Array, d: number): void {
  for (let i = 0; i < x.length; i++) out[i] = x[i]! / d;
}

/** out[i] = out[i]·s for i in [start, end). */
export function scaleRange(out: Float32Array, start: number, end: number, s: number): void {
  for (let i = start; i < end; i++) out[i] = out[i]! * s;
}

/** Bilinear resize of [n, c, h, w] latents (align_corners=false, as torch's interpolate). */
export function resizeLatentsBilinear(
  x: Float32Array,
  shape: readonly number[],
  outH: number,
  outW: number,
): Float32Array {
  const [n, c, h, w] = shape as [number, number, number, number];
  const out = new Float32Array(n * c * outH * outW);
  const sy = h / outH;
  const sx = w / outW;
  for (let p = 0; p < n * c; p++) {
    const src = p * h * w;
    const dst = p * outH * outW;
    for (let oy = 0; oy < outH; oy++) {
      const fy = Math.max(0, (oy + 0.5) * sy - 0.5);
      const y0 = Math.min(Math.floor(fy), h - 1);
      const y1 = Math.min(y0 + 1, h - 1);
      const wy = fy - y0;
      for (let ox = 0; ox < outW; ox++) {
        const fx = Math.max(0, (ox + 0.5) * sx - 0.5);
        const x0 = Math.min(Math.floor(fx), w - 1);
        const x1 = Math.min(x0 + 1, w - 1);
        const wx = fx - x0;
        const top = x[src + y0 * w + x0]! * (1 - wx) + x[src + y0 * w + x1]! * wx;
        const bottom = x[src + y1 * w + x0]! * (1 - wx) + x[src + y1 * w + x1]! * wx;
        out[dst + oy * outW + ox] = top * (1 - wy) + bottom * wy;
      }
    }
  }
  return out;
}

/** Index of the first non-finite value, or -1. */
export function firstNonFinite(x: Float32Array): number {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i]!)) return i;
  return -1;
}
