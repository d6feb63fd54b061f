/**
 * A tiny 3×5 pixel font drawn straight into RGBA pixels, so contact-sheet captions render the same
 * on a machine with no system fonts (sharp's SVG text needs fontconfig and a font file). Upper case
 * only: lower-case letters are drawn as capitals; characters without a glyph become '?'.
 * Each glyph is five rows of three cells, '#' inked.
 */
const GLYPHS: Record<string, string> = {
  A: ".#.#.#####.##.#",
  B: "##.#.###.#.###.",
  C: ".###..#..#...##",
  D: "##.#.##.##.###.",
  E: "####..###..####",
  F: "####..###..#...",
  G: ".###..#.##.#.##",
  H: "#.##.####.##.##",
  I: "###.#..#..#.###",
  J: "..#..#..##.#.#.",
  K: "#.##.###.#.##.#",
  L: "#..#..#..#..###",
  M: "#.#####.##.##.#",
  N: "##.#.##.##.##.#",
  O: ".#.#.##.##.#.#.",
  P: "##.#.###.#..#..",
  Q: ".#.#.##.##.#.##",
  R: "##.#.###.#.##.#",
  S: ".###...#...###.",
  T: "###.#..#..#..#.",
  U: "#.##.##.##.####",
  V: "#.##.##.##.#.#.",
  W: "#.##.##.#####.#",
  X: "#.##.#.#.#.##.#",
  Y: "#.##.#.#..#..#.",
  Z: "###..#.#.#..###",
  "0": "####.##.##.####",
  "1": ".#.##..#..#.###",
  "2": "##...#.#.#..###",
  "3": "##...#.#...###.",
  "4": "#.##.####..#..#",
  "5": "####..##...###.",
  "6": ".###..####.####",
  "7": "###..#.#..#..#.",
  "8": "####.#####.####",
  "9": "####.####..###.",
  " ": "...............",
  ".": ".............#.",
  ",": "..........#.#..",
  ":": "....#.....#....",
  "-": "......###......",
  _: "............###",
  "/": "..#..#.#.#..#..",
  "(": ".#.#..#..#...#.",
  ")": ".#...#..#..#.#.",
  "'": ".#..#..........",
  "!": ".#..#..#.....#.",
  "?": "##...#.#.....#.",
  "×": "....#.#.#.#.#..",
  "+": "....#.###.#....",
  "=": "...###...###...",
  "#": "#.####.####.#.#",
  "%": "#.#..#.#.#..#.#",
  "&": ".#.#.#.#.#.#.##",
};

export const GLYPH_WIDTH = 3;
export const GLYPH_HEIGHT = 5;

export interface RgbaImage {
  width: number;
  height: number;
  /** width × height × 4 bytes, row-major. */
  data: Uint8Array;
}

/** Width in pixels of `text` at `scale` (one blank column between glyphs). */
export function textWidth(text: string, scale: number): number {
  return text.length === 0 ? 0 : (text.length * (GLYPH_WIDTH + 1) - 1) * scale;
}

/** Draws `text` with its top-left corner at (x, y); pixels outside the image are clipped. */
export function drawText(
  image: RgbaImage,
  text: string,
  x: number,
  y: number,
  scale: number,
  color: [number, number, number],
): void {
  let penX = x;
  for (const raw of text) {
    const ch = raw.toUpperCase();
    const glyph = GLYPHS[ch] ?? GLYPHS["?"]!;
    for (let row = 0; row < GLYPH_HEIGHT; row++) {
      for (let col = 0; col < GLYPH_WIDTH; col++) {
        if (glyph[row * GLYPH_WIDTH + col] !== "#") continue;
        fillRect(image, penX + col * scale, y + row * scale, scale, scale, color);
      }
    }
    penX += (GLYPH_WIDTH + 1) * scale;
  }
}

export function fillRect(
  image: RgbaImage,
  x: number,
  y: number,
  w: number,
  h: number,
  color: [number, number, number],
): void {
  for (let yy = Math.max(0, y); yy < Math.min(image.height, y + h); yy++) {
    for (let xx = Math.max(0, x); xx < Math.min(image.width, x + w); xx++) {
      const o = (yy * image.width + xx) * 4;
      image.data[o] = color[0];
      image.data[o + 1] = color[1];
      image.data[o + 2] = color[2];
      image.data[o + 3] = 255;
    }
  }
}

/** Cuts `text` to at most `maxChars`, ending with "..." when cut. */
export function excerpt(text: string, maxChars: number): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length <= maxChars ? flat : `${flat.slice(0, Math.max(0, maxChars - 3)).trimEnd()}...`;
}
