/**
 * The reference models' picture set, drawn by Kiln's own code: every picture is one shape (circle,
 * square, triangle, star) in one colour on a plain background of another colour, at one of six
 * placements (left, centre or right; small or large), or two small shapes side by side (left and right)
 * on one background. A picture's latents are a fixed linear map of its RGB, so each is
 * `background ⊗ 1 + Σ mask ⊗ (shape − background)` with per-placement masks: that structure is what lets
 * the UNet graph compute the exact posterior over all 7,616 pictures with a handful of small matrix
 * products (see reference-models.ts).
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

/** The second shape of a two-shape picture: small, at the right. */
export interface SecondShape {
  shape: ShapeName;
  colour: ColourName;
  /** Index into PLACEMENTS. */
  placement: number;
}

export interface Picture extends Placement {
  colour: ColourName;
  background: ColourName;
  /** Index into PLACEMENTS. */
  placement: number;
  /** Two-shape pictures: the right-hand shape (the fields above are then the small left-hand one). */
  second?: SecondShape;
}

const placementIndex = (shape: ShapeName, position: PositionName, size: SizeName): number =>
  PLACEMENTS.findIndex((p) => p.shape === shape && p.position === position && p.size === size);

/**
 * The shape pairs of two-shape pictures: a small shape at the left and a small one at the right, which
 * never overlap (their extents end at x = 0.47 and start at 0.53), in every order: 4 × 4 = 16.
 */
export const SHAPE_PAIRS: { left: number; right: number }[] = SHAPES.flatMap((a) =>
  SHAPES.map((b) => ({ left: placementIndex(a, "left", "small"), right: placementIndex(b, "right", "small") })),
);

/** One-shape pictures: 8 shape colours × 7 other background colours × 24 placements = 1,344. */
const SINGLE_PICTURES: Picture[] = COLOUR_NAMES.flatMap((colour) =>
  COLOUR_NAMES.filter((b) => b !== colour).flatMap((background) =>
    PLACEMENTS.map((p, placement) => ({ ...p, colour, background, placement })),
  ),
);

/** Two-shape pictures: 8 backgrounds × 7 × 7 shape colours (other than the background) × 16 pairs = 6,272. */
const PAIR_PICTURES: Picture[] = COLOUR_NAMES.flatMap((background) => {
  const others = COLOUR_NAMES.filter((c) => c !== background);
  return others.flatMap((colour) =>
    others.flatMap((colour2) =>
      SHAPE_PAIRS.map(({ left, right }) => ({
        ...PLACEMENTS[left]!,
        colour,
        background,
        placement: left,
        second: { shape: PLACEMENTS[right]!.shape, colour: colour2, placement: right },
      })),
    ),
  );
});

/** Every picture: the 1,344 one-shape pictures first (their order is the UNet's), then the 6,272 pairs. */
export const PICTURES: Picture[] = [...SINGLE_PICTURES, ...PAIR_PICTURES];

/** The shapes of a picture as (placement, colour) layers over its background. */
export function pictureLayers(pic: Picture): { placement: number; colour: ColourName }[] {
  const layers = [{ placement: pic.placement, colour: pic.colour }];
  if (pic.second) layers.push({ placement: pic.second.placement, colour: pic.second.colour });
  return layers;
}

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
  const bg = COLOURS[pic.background];
  const layers = pictureLayers(pic).map((l) => ({
    mask: drawMask(PLACEMENTS[l.placement]!, height, width, detail),
    fg: COLOURS[l.colour],
  }));
  const rgb = new Uint8Array(height * width * 3);
  for (let p = 0; p < height * width; p++) {
    for (let c = 0; c < 3; c++) {
      let v = bg[c]!;
      for (const { mask, fg } of layers) v += mask[p]! * (fg[c]! - bg[c]!);
      rgb[p * 3 + c] = Math.round(v);
    }
  }
  return rgb;
}

// ---------------------------------------------------------------------------------------------
// The prompt code: which words the text encoders know and which slot of the code each one sets.

export type CodeGroup = "colour" | "shape" | "background" | "position" | "size" | "first" | "second" | "count";

/** "colour shape" bindings: a colour word directly before a shape word. */
export const BINDINGS = COLOUR_NAMES.flatMap((c) => SHAPES.map((s) => `${c} ${s}`));
export const COUNTS = ["one", "two"] as const;

/**
 * Code layout: shape colour (8), shape (4), background colour (8), position (3), size (2), then the
 * composition slots: the first-named and the second-named "colour shape" binding (32 each) and how many
 * shape words the prompt has (one, two or more).
 */
export const CODE_GROUPS: { group: CodeGroup; names: readonly string[] }[] = [
  { group: "colour", names: COLOUR_NAMES },
  { group: "shape", names: SHAPES },
  { group: "background", names: COLOUR_NAMES },
  { group: "position", names: POSITION_NAMES },
  { group: "size", names: SIZE_NAMES },
  { group: "first", names: BINDINGS },
  { group: "second", names: BINDINGS },
  { group: "count", names: COUNTS },
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

/** Each code slot's group and name, in slot order. */
export const CODE_SLOTS: { group: CodeGroup; name: string }[] = CODE_GROUPS.flatMap((g) =>
  g.names.map((name) => ({ group: g.group, name })),
);

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

/** Lower-case words, with each punctuation mark a token of its own (as CLIP's tokenizer splits them). */
const tokens = (prompt: string): string[] => prompt.toLowerCase().match(/\p{L}+|[^\s\p{L}]/gu) ?? [];

/** The prompt words the reference models ignore (neither a keyword nor a filler word). */
export function ignoredWords(prompt: string): string[] {
  const words = prompt.toLowerCase().match(/[\p{L}]+/gu) ?? [];
  return [...new Set(words.filter((w) => !(w in KEYWORDS) && !FILLER.has(w)))];
}

/**
 * The prompt's code as the text encoders compute it (the pooled output's first CODE_WIDTH entries): keyword
 * slots; a colour directly before "background" is the background's; a colour directly before a shape is also
 * a binding, the first-named one if no shape word came before it, else the second; the count slot says whether
 * the prompt has one shape word or several.
 */
export function promptCode(prompt: string): Float32Array {
  const code = new Float32Array(CODE_WIDTH);
  const words = tokens(prompt);
  let shapesSoFar = 0;
  words.forEach((w, i) => {
    const k = KEYWORDS[w];
    if (!k) return;
    const next = KEYWORDS[words[i + 1] ?? ""];
    if (k.group === "colour" && words[i + 1] === BACKGROUND_WORD) code[codeSlot("background", k.name)] = 1;
    else code[codeSlot(k.group, k.name)] = 1;
    if (k.group === "colour" && next?.group === "shape")
      code[codeSlot(shapesSoFar === 0 ? "first" : "second", `${k.name} ${next.name}`)] = 1;
    if (k.group === "shape") shapesSoFar++;
  });
  if (shapesSoFar === 1) code[codeSlot("count", "one")] = 1;
  if (shapesSoFar >= 2) code[codeSlot("count", "two")] = 1;
  return code;
}

/**
 * Whether slot `f`, when the prompt sets it, allows picture `k` under the "any of the group" rule: a picture
 * passes a mentioned group when one of the group's set slots allows it. Two-shape pictures pass the colour,
 * shape, position and size groups here (they are checked by `slotMisses` instead, or not at all).
 */
export function slotAllows(f: number, pic: Picture): boolean {
  const { group, name } = CODE_SLOTS[f]!;
  const pair = pic.second !== undefined;
  switch (group) {
    case "colour":
      return pair || pic.colour === name;
    case "shape":
      return pair || pic.shape === name;
    case "position":
      return pair || pic.position === name;
    case "size":
      return pair || pic.size === name;
    case "background":
      return pic.background === name;
    case "first":
      return `${pic.colour} ${pic.shape}` === name;
    case "second":
      return pic.second !== undefined && `${pic.second.colour} ${pic.second.shape}` === name;
    case "count":
      return name === (pair ? "two" : "one");
  }
}

/**
 * Whether slot `f`, when the prompt sets it, rules out two-shape picture `k` on its own: every colour and
 * shape the prompt names must be one of the picture's two.
 */
export function slotMisses(f: number, pic: Picture): boolean {
  if (!pic.second) return false;
  const { group, name } = CODE_SLOTS[f]!;
  if (group === "colour") return pic.colour !== name && pic.second.colour !== name;
  if (group === "shape") return pic.shape !== name && pic.second.shape !== name;
  return false;
}

/**
 * The pictures a prompt matches, by the same rule as the UNet graph: every mentioned group allows the
 * picture (an unmentioned group allows anything) and no set slot misses it.
 */
export function matchingPictures(prompt: string): Picture[] {
  const code = promptCode(prompt);
  const set = [...code.keys()].filter((f) => code[f]! > 0);
  const groups = new Set(set.map((f) => CODE_SLOTS[f]!.group));
  return PICTURES.filter(
    (p) =>
      [...groups].every((g) => set.some((f) => CODE_SLOTS[f]!.group === g && slotAllows(f, p))) &&
      !set.some((f) => slotMisses(f, p)),
  );
}
