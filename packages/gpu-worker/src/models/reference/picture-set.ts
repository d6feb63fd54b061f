/**
 * The reference models' picture set, drawn by Kiln's own code: every picture is one shape (circle,
 * square, triangle, star) in one colour on a plain background of another colour, at one of six
 * placements (left, centre or right; small or large). A picture's latents are a fixed linear map of
 * its RGB, so each is `background ⊗ 1 + mask ⊗ (shape − background)` with a per-placement mask: that
 * structure is what lets the UNet graph compute the exact posterior over all 1,344 pictures with a
 * handful of small matrix products (see reference-models.ts).
 */

export const COLOURS = {
  red: [220, 40, 40],
  green: [40, 170, 60],
  blue: [40, 80, 220],
  yellow: [240, 210, 40],
  white: [245, 245, 245],
  black: [15, 15, 15],
  orange: [245, 140, 20],
  purple: [140, 50, 180],
} as const satisfies Record<string, readonly [number, number, number]>;
export type ColourName = keyof typeof COLOURS;
export const COLOUR_NAMES = Object.keys(COLOURS) as ColourName[];

export const SHAPES = ["circle", "square", "triangle", "star"] as const;
export type ShapeName = (typeof SHAPES)[number];

export const POSITIONS = { left: 0.3, centre: 0.5, right: 0.7 } as const;
export type PositionName = keyof typeof POSITIONS;
export const POSITION_NAMES = Object.keys(POSITIONS) as PositionName[];

export const SIZES = { small: 0.15, large: 0.26 } as const;
export type SizeName = keyof typeof SIZES;
export const SIZE_NAMES = Object.keys(SIZES) as SizeName[];

/** The mask grid the UNet stores; it resizes the masks (bilinear) to the latent grid of each render. */
export const MASK_GRID = 128;

/** Placement of a shape: S = 4 shapes × 3 positions × 2 sizes = 24 masks. */
export interface Placement {
  shape: ShapeName;
  position: PositionName;
  size: SizeName;
}

export const PLACEMENTS: Placement[] = SHAPES.flatMap((shape) =>
  POSITION_NAMES.flatMap((position) => SIZE_NAMES.map((size) => ({ shape, position, size }))),
);

export interface Picture extends Placement {
  colour: ColourName;
  background: ColourName;
  /** Index into PLACEMENTS. */
  placement: number;
}

/** Every picture: 8 shape colours × 7 other background colours × 24 placements = 1,344. */
export const PICTURES: Picture[] = COLOUR_NAMES.flatMap((colour) =>
  COLOUR_NAMES.filter((b) => b !== colour).flatMap((background) =>
    PLACEMENTS.map((p, placement) => ({ ...p, colour, background, placement })),
  ),
);

// ---------------------------------------------------------------------------------------------
// Latent ↔ RGB: three orthonormal columns of a 4×4 Hadamard matrix, so the decoder is the transpose.
// Latents (after SDXL's scaling factor) of an RGB value in [−1, 1]: z = A·rgb.

export const LATENT_FROM_RGB: readonly (readonly [number, number, number])[] = [
  [0.5, 0.5, 0.5],
  [0.5, -0.5, 0.5],
  [0.5, 0.5, -0.5],
  [0.5, -0.5, -0.5],
];

export function rgbUnit(c: readonly number[]): [number, number, number] {
  return [(2 * c[0]!) / 255 - 1, (2 * c[1]!) / 255 - 1, (2 * c[2]!) / 255 - 1];
}

export function colourLatent(name: ColourName): [number, number, number, number] {
  const rgb = rgbUnit(COLOURS[name]);
  return LATENT_FROM_RGB.map((row) => row[0] * rgb[0] + row[1] * rgb[1] + row[2] * rgb[2]) as [
    number,
    number,
    number,
    number,
  ];
}

// ---------------------------------------------------------------------------------------------
// Shape masks: coverage in [0, 1] on a square grid (4×4 supersampling per cell), x and y in [0, 1].

function insidePolygon(x: number, y: number, pts: [number, number][]): boolean {
  let inside = false;
  for (let i = 0, j = pts.length - 1; i < pts.length; j = i++) {
    const [xi, yi] = pts[i]!;
    const [xj, yj] = pts[j]!;
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function regular(cx: number, cy: number, radii: number[], count: number): [number, number][] {
  const pts: [number, number][] = [];
  for (let k = 0; k < count; k++) {
    const angle = -Math.PI / 2 + (2 * Math.PI * k) / count;
    const r = radii[k % radii.length]!;
    pts.push([cx + r * Math.cos(angle), cy + r * Math.sin(angle)]);
  }
  return pts;
}

function insideTest(p: Placement): (x: number, y: number) => boolean {
  const cx = POSITIONS[p.position];
  const cy = 0.5;
  const r = SIZES[p.size];
  switch (p.shape) {
    case "circle":
      return (x, y) => (x - cx) ** 2 + (y - cy) ** 2 <= r * r;
    case "square":
      return (x, y) => Math.abs(x - cx) <= 0.85 * r && Math.abs(y - cy) <= 0.85 * r;
    case "triangle": {
      const pts = regular(cx, cy + 0.2 * r, [1.25 * r], 3);
      return (x, y) => insidePolygon(x, y, pts);
    }
    case "star": {
      const pts = regular(cx, cy + 0.08 * r, [1.15 * r, 0.48 * r], 10);
      return (x, y) => insidePolygon(x, y, pts);
    }
  }
}

/**
 * The refiner's finer detail: concentric rings inside the shape that blend it a little towards the
 * background, so a refined picture visibly differs from the base's flat one.
 */
export function ringTexture(p: Placement, x: number, y: number): number {
  const d = Math.hypot(x - POSITIONS[p.position], y - 0.5);
  return 1 - 0.45 * (0.5 + 0.5 * Math.cos((2 * Math.PI * d) / 0.07));
}

/** Coverage of a placement on a `height × width` grid (row-major), optionally with the refiner's rings. */
export function drawMask(p: Placement, height: number, width: number, detail = false): Float32Array {
  const inside = insideTest(p);
  const out = new Float32Array(height * width);
  const sub = 4;
  for (let i = 0; i < height; i++) {
    for (let j = 0; j < width; j++) {
      let acc = 0;
      for (let a = 0; a < sub; a++) {
        for (let b = 0; b < sub; b++) {
          const y = (i + (a + 0.5) / sub) / height;
          const x = (j + (b + 0.5) / sub) / width;
          if (inside(x, y)) acc += detail ? ringTexture(p, x, y) : 1;
        }
      }
      out[i * width + j] = acc / (sub * sub);
    }
  }
  return out;
}

/** An RGB (8-bit, HWC) rendering of a picture drawn directly at `height × width`: the oracle for decoded PNGs. */
export function drawPicture(pic: Picture, height: number, width: number, detail = false): Uint8Array {
  const mask = drawMask(pic, height, width, detail);
  const fg = COLOURS[pic.colour];
  const bg = COLOURS[pic.background];
  const rgb = new Uint8Array(height * width * 3);
  for (let p = 0; p < height * width; p++)
    for (let c = 0; c < 3; c++) rgb[p * 3 + c] = Math.round(bg[c]! + mask[p]! * (fg[c]! - bg[c]!));
  return rgb;
}

// ---------------------------------------------------------------------------------------------
// The prompt code: which words the text encoders know and which slot of the code each one sets.

export type CodeGroup = "colour" | "shape" | "background" | "position" | "size";

/** Code layout: shape colour (8), shape (4), background colour (8), position (3), size (2). */
export const CODE_GROUPS: { group: CodeGroup; names: readonly string[] }[] = [
  { group: "colour", names: COLOUR_NAMES },
  { group: "shape", names: SHAPES },
  { group: "background", names: COLOUR_NAMES },
  { group: "position", names: POSITION_NAMES },
  { group: "size", names: SIZE_NAMES },
];
export const CODE_WIDTH = CODE_GROUPS.reduce((a, g) => a + g.names.length, 0);

export function codeSlot(group: CodeGroup, name: string): number {
  let offset = 0;
  for (const g of CODE_GROUPS) {
    if (g.group === group) {
      const i = g.names.indexOf(name);
      if (i < 0) throw new Error(`no ${group} named ${name}`);
      return offset + i;
    }
    offset += g.names.length;
  }
  throw new Error(`no code group ${group}`);
}

/**
 * Words the text encoders know, each to the slot it sets. A colour word sets the shape's colour,
 * or the background's when the next word is "background" (done in the graph).
 */
export const KEYWORDS: Record<string, { group: CodeGroup; name: string }> = {
  ...Object.fromEntries(COLOUR_NAMES.map((c) => [c, { group: "colour" as const, name: c }])),
  ...Object.fromEntries(SHAPES.map((s) => [s, { group: "shape" as const, name: s }])),
  left: { group: "position", name: "left" },
  centre: { group: "position", name: "centre" },
  center: { group: "position", name: "centre" },
  middle: { group: "position", name: "centre" },
  right: { group: "position", name: "right" },
  small: { group: "size", name: "small" },
  little: { group: "size", name: "small" },
  large: { group: "size", name: "large" },
  big: { group: "size", name: "large" },
};
export const BACKGROUND_WORD = "background";

/** Words with no meaning for the picture set (all others are reported as ignored). */
const FILLER = new Set(["a", "an", "the", "on", "at", "in", "of", "with", "and", BACKGROUND_WORD]);

/** The prompt words the reference models ignore (neither a keyword nor a filler word). */
export function ignoredWords(prompt: string): string[] {
  const words = prompt.toLowerCase().match(/[\p{L}]+/gu) ?? [];
  return [...new Set(words.filter((w) => !(w in KEYWORDS) && !FILLER.has(w)))];
}

/** The pictures a prompt matches, by the same rule as the UNet graph (an unmentioned group matches anything). */
export function matchingPictures(prompt: string): Picture[] {
  const words = prompt.toLowerCase().match(/[\p{L}]+/gu) ?? [];
  const wanted: Record<CodeGroup, Set<string>> = {
    colour: new Set(),
    shape: new Set(),
    background: new Set(),
    position: new Set(),
    size: new Set(),
  };
  words.forEach((w, i) => {
    const k = KEYWORDS[w];
    if (!k) return;
    const group = k.group === "colour" && words[i + 1] === BACKGROUND_WORD ? "background" : k.group;
    wanted[group].add(k.name);
  });
  const attr = (p: Picture, g: CodeGroup): string =>
    g === "colour" ? p.colour : g === "background" ? p.background : p[g];
  return PICTURES.filter((p) =>
    (Object.keys(wanted) as CodeGroup[]).every((g) => wanted[g].size === 0 || wanted[g].has(attr(p, g))),
  );
}
