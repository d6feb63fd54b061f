import { KilnError } from "@kiln/shared";

import { boxMuller16Avx2 } from "./noise-avx2.js";

/**
 * Seeded Gaussian noise, bit-compatible with PyTorch's CPU generator: `torch.Generator().manual_seed(seed)` then
 * `torch.randn(..., dtype=torch.float32)`, so a seed gives the same noise here as in diffusers run with a CPU
 * generator. What is reproduced, from ATen:
 * - the engine: 32-bit MT19937 seeded with the low 32 bits of the seed (`at::mt19937`);
 * - float uniforms: `(u32 & 0xFFFFFF) · 2⁻²⁴`; double uniforms from `(hi << 32 | lo)` masked to 53 bits · 2⁻⁵³;
 * - tensors of ≥ 16 values (`normal_fill`): fill every slot with a float uniform, then Box–Muller in blocks of 16
 *   (slots j and j+8 pair up); when the size is not a multiple of 16 the last 16 slots are refilled with fresh
 *   uniforms and transformed again;
 * - smaller tensors: `normal_distribution<double>` per value, Box–Muller with `log1p`, the sine half cached in the
 *   generator for the next small draw.
 * The Box–Muller of the ≥ 16 path exists in two kernels, chosen by `kernel`:
 * - `"avx2"` (the default): `normal_fill_16_AVX2`, which every x86-64 build of torch runs on a CPU with AVX2 (the
 *   machines diffusers and ComfyUI users have): ATen's own float32 polynomial log and sincos with the compiled
 *   code's fused multiply-adds, emulated exactly (./noise-avx2.ts);
 * - `"scalar"`: `normal_fill_16`, what torch runs without AVX2 (e.g. on ARM): float32 libm log/cos/sin. About a
 *   third of its values differ from the AVX2 kernel's in the last bits (≤ ~2e-6).
 * The uniforms, the pairing and the tail rule are the same for both; tensors below 16 values never use either.
 */
const N = 624;
const M = 397;
const TWO_POW_M24 = 2 ** -24;
const TWO_POW_M53 = 2 ** -53;
const TWO_PI = 2 * Math.PI;
const f32 = Math.fround;

/** Which of ATen's Box–Muller kernels the ≥ 16-value path reproduces. */
export type NoiseKernel = "avx2" | "scalar";
export const NOISE_KERNELS: readonly NoiseKernel[] = ["avx2", "scalar"];

/** A generator's full state, to continue its stream elsewhere (another thread) with the same values. */
export interface NoiseState {
  seed: number;
  kernel: NoiseKernel;
  state: Uint32Array;
  next: number;
  cachedNormal: number | undefined;
}

export class NoiseSource {
  readonly seed: number;
  readonly kernel: NoiseKernel;
  private readonly boxMuller: (data: Float32Array, o: number) => void;
  private readonly state = new Uint32Array(N);
  private next = N;
  /** torch's `next_double_normal_sample_`: the unused half of the last small-tensor Box–Muller pair. */
  private cachedNormal: number | undefined;

  /** `seed`: a non-negative integer; like torch, only its low 32 bits reach the engine. */
  constructor(seed: number, kernel: NoiseKernel = "avx2") {
    if (!Number.isSafeInteger(seed) || seed < 0)
      throw new KilnError("noise_seed_invalid", `A noise seed must be a non-negative integer below 2^53, got ${seed}.`);
    if (!NOISE_KERNELS.includes(kernel))
      throw new KilnError(
        "noise_kernel_invalid",
        `The noise kernel must be one of ${NOISE_KERNELS.join(", ")}, got ${String(kernel)}.`,
      );
    this.seed = seed;
    this.kernel = kernel;
    this.boxMuller = kernel === "avx2" ? boxMuller16Avx2 : boxMuller16;
    const s = this.state;
    s[0] = seed % 2 ** 32;
    for (let i = 1; i < N; i++) {
      const prev = s[i - 1]!;
      s[i] = Math.imul(1812433253, prev ^ (prev >>> 30)) + i;
    }
  }

  snapshot(): NoiseState {
    return {
      seed: this.seed,
      kernel: this.kernel,
      state: this.state.slice(),
      next: this.next,
      cachedNormal: this.cachedNormal,
    };
  }

  /** A generator that continues from `snapshot()`: it draws what the snapshotted one would have drawn next. */
  static restore(snapshot: NoiseState): NoiseSource {
    const source = new NoiseSource(snapshot.seed, snapshot.kernel);
    source.state.set(snapshot.state);
    source.next = snapshot.next;
    source.cachedNormal = snapshot.cachedNormal;
    return source;
  }

  /** `torch.randn(count)` continuing this generator's stream. */
  randn(count: number): Float32Array {
    return this.randnInto(new Float32Array(count));
  }

  /** `randn(out.length)` written into `out` (no allocation); returns `out`. */
  randnInto(out: Float32Array): Float32Array {
    const size = out.length;
    if (size < 16) {
      for (let i = 0; i < size; i++) out[i] = this.normalDouble();
      return out;
    }
    this.fillUniform(out, 0, size);
    const boxMuller = this.boxMuller;
    for (let i = 0; i + 16 <= size; i += 16) boxMuller(out, i);
    if (size % 16 !== 0) {
      this.fillUniform(out, size - 16, size);
      boxMuller(out, size - 16);
    }
    return out;
  }

  private normalDouble(): number {
    if (this.cachedNormal !== undefined) {
      const cached = this.cachedNormal;
      this.cachedNormal = undefined;
      return cached;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = TWO_PI * u1;
    this.cachedNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  private uniformDouble(): number {
    const hi = this.nextU32();
    const lo = this.nextU32();
    return ((hi & 0x1fffff) * 2 ** 32 + lo) * TWO_POW_M53;
  }

  /** Float uniforms `(u32 & 0xFFFFFF)·2⁻²⁴` into out[from…to), the engine inlined for speed. */
  private fillUniform(out: Float32Array, from: number, to: number): void {
    const s = this.state;
    let next = this.next;
    for (let i = from; i < to; i++) {
      if (next >= N) {
        this.twist();
        next = 0;
      }
      let y = s[next++]!;
      y ^= y >>> 11;
      y ^= (y << 7) & 0x9d2c5680;
      y ^= (y << 15) & 0xefc60000;
      y ^= y >>> 18;
      out[i] = (y & 0xffffff) * TWO_POW_M24;
    }
    this.next = next;
  }

  private nextU32(): number {
    if (this.next >= N) this.twist();
    let y = this.state[this.next++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  private twist(): void {
    const s = this.state;
    let i = 0;
    for (; i < N - M; i++) {
      const y = (s[i]! & 0x80000000) | (s[i + 1]! & 0x7fffffff);
      s[i] = s[i + M]! ^ (y >>> 1) ^ (-(y & 1) & 0x9908b0df);
    }
    for (; i < N - 1; i++) {
      const y = (s[i]! & 0x80000000) | (s[i + 1]! & 0x7fffffff);
      s[i] = s[i + M - N]! ^ (y >>> 1) ^ (-(y & 1) & 0x9908b0df);
    }
    const y = (s[N - 1]! & 0x80000000) | (s[0]! & 0x7fffffff);
    s[N - 1] = s[M - 1]! ^ (y >>> 1) ^ (-(y & 1) & 0x9908b0df);
    this.next = 0;
  }
}

/** ATen's scalar `normal_fill_16` (mean 0, std 1): uniforms in data[o…o+15] become normals in place. */
function boxMuller16(data: Float32Array, o: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - data[o + j]!);
    const u2 = data[o + j + 8]!;
    const radius = f32(Math.sqrt(f32(-2 * f32(Math.log(u1)))));
    const theta = f32(TWO_PI * u2);
    data[o + j] = radius * f32(Math.cos(theta));
    data[o + j + 8] = radius * f32(Math.sin(theta));
  }
}

/**
 * The initial latent noise of image `imageIndex` of a render: image i draws from its own generator seeded with
 * `seed + i`, as A1111 does and as diffusers does when given one generator per image, so image i of a batch
 * equals image 0 of a render with seed + i. `shape` is one image's latent shape (e.g. [4, 128, 128]).
 */
export function initialNoise(
  seed: number,
  imageIndex: number,
  shape: readonly number[],
  kernel: NoiseKernel = "avx2",
): Float32Array {
  return new NoiseSource(seed + imageIndex, kernel).randn(shape.reduce((a, b) => a * b, 1));
}

/**
 * Fills `out` from `sources`: one source fills it all (`torch.randn(shape, generator=g)`), a list fills equal
 * consecutive chunks, one per image (diffusers' `randn_tensor` with a list of generators).
 */
export function drawNoise(sources: NoiseSource | readonly NoiseSource[], out: Float32Array): Float32Array {
  if (sources instanceof NoiseSource) return sources.randnInto(out);
  const k = sources.length;
  if (k === 0 || out.length % k !== 0)
    throw new KilnError("noise_split_invalid", `Cannot split ${out.length} noise values evenly over ${k} generators.`);
  const per = out.length / k;
  for (let i = 0; i < k; i++) sources[i]!.randnInto(out.subarray(i * per, (i + 1) * per));
  return out;
}
