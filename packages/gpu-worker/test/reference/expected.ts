import {
  colourLatent,
  COLOURS,
  drawMask,
  LATENT_FROM_RGB,
  MASK_GRID,
  matchingPictures,
  type Picture,
  pictureLayers,
  PLACEMENTS,
} from "../../src/models/reference/picture-set.js";

/**
 * Known answers for the reference models, computed here in float64 from the picture set's definition,
 * not by running any of the generated graphs.
 */

/** ONNX `Resize` (mode linear, half_pixel) of one [inH, inW] plane: what the UNet does to the stored masks. */
export function resizeLinear(src: Float32Array, inH: number, inW: number, outH: number, outW: number): Float64Array {
  const out = new Float64Array(outH * outW);
  const coord = (o: number, inSize: number, outSize: number) => {
    const x = Math.min(Math.max(((o + 0.5) * inSize) / outSize - 0.5, 0), inSize - 1);
    const lo = Math.floor(x);
    const hi = Math.min(lo + 1, inSize - 1);
    return { lo, hi, f: x - lo };
  };
  for (let i = 0; i < outH; i++) {
    const y = coord(i, inH, outH);
    for (let j = 0; j < outW; j++) {
      const x = coord(j, inW, outW);
      const at = (r: number, c: number) => src[r * inW + c]!;
      const top = at(y.lo, x.lo) * (1 - x.f) + at(y.lo, x.hi) * x.f;
      const bottom = at(y.hi, x.lo) * (1 - x.f) + at(y.hi, x.hi) * x.f;
      out[i * outW + j] = top * (1 - y.f) + bottom * y.f;
    }
  }
  return out;
}

const maskCache = new Map<string, Float32Array>();

/** A picture's latents (after the VAE scaling factor) on an h × w latent grid, [4, h, w]. */
export function pictureLatents(pic: Picture, h: number, w: number, detail = false): Float64Array {
  const b = colourLatent(pic.background);
  const out = new Float64Array(4 * h * w);
  for (let c = 0; c < 4; c++) out.fill(b[c]!, c * h * w, (c + 1) * h * w);
  for (const layer of pictureLayers(pic)) {
    const key = `${layer.placement}/${detail}`;
    let grid = maskCache.get(key);
    if (!grid) {
      grid = drawMask(PLACEMENTS[layer.placement]!, MASK_GRID, MASK_GRID, detail);
      maskCache.set(key, grid);
    }
    const mask = resizeLinear(grid, MASK_GRID, MASK_GRID, h, w);
    const f = colourLatent(layer.colour);
    for (let c = 0; c < 4; c++) for (let p = 0; p < h * w; p++) out[c * h * w + p]! += mask[p]! * (f[c]! - b[c]!);
  }
  return out;
}

/** The one picture a prompt matches (throws unless exactly one does). */
export function onlyPicture(prompt: string): Picture {
  const matches = matchingPictures(prompt);
  if (matches.length !== 1) throw new Error(`"${prompt}" matches ${matches.length} pictures, not 1`);
  return matches[0]!;
}

/** RGB bytes (HWC) the reference VAE decoder gives for latents [4, h, w]: Aᵀ·z, ×8 nearest, diffusers' rounding. */
export function decodeExpected(latents: ArrayLike<number>, h: number, w: number): Uint8Array {
  const H = h * 8;
  const W = w * 8;
  const rgb = new Uint8Array(H * W * 3);
  for (let i = 0; i < H; i++) {
    for (let j = 0; j < W; j++) {
      const p = Math.floor(i / 8) * w + Math.floor(j / 8);
      for (let c = 0; c < 3; c++) {
        let v = 0;
        for (let l = 0; l < 4; l++) v += LATENT_FROM_RGB[l]![c]! * latents[l * h * w + p]!;
        const unit = Math.min(Math.max(v / 2 + 0.5, 0), 1);
        rgb[(i * W + j) * 3 + c] = Math.round(unit * 255);
      }
    }
  }
  return rgb;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export function meanAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / a.length;
}

export { COLOURS };
