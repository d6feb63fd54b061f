import type { BlobStore } from "@kiln/shared";

import { drawText, excerpt, fillRect, GLYPH_HEIGHT, type RgbaImage, textWidth } from "./bitmap-font.js";
import type { BatchRun } from "./run-record.js";

/**
 * Image decoding and PNG encoding for contact sheets: Node hosts pass sharp's (entry/contact-sheet.ts);
 * the grid and its captions are drawn here in plain pixels, so they need no fonts.
 */
export interface ContactSheetMaker {
  /** Decodes an image and scales it to fit a `maxSide` square (keeping its aspect). */
  thumbnail(bytes: Uint8Array, maxSide: number): Promise<RgbaImage>;
  encodePng(image: RgbaImage): Promise<Uint8Array>;
}

export interface SheetTile {
  image: RgbaImage;
  caption: string[];
}

export interface SheetLayout {
  /** Side of the square each thumbnail is centred in. */
  tile: number;
  columns: number;
  /** Pixel size of one font cell. */
  textScale: number;
  /** Left out only to compare against (tests). */
  captions: boolean;
}

const GAP = 8;
const BACKGROUND: [number, number, number] = [24, 24, 27];
const TEXT: [number, number, number] = [235, 235, 235];
/** Tiles on one sheet: beyond this a sheet is too large to look at; index.html lists everything. */
export const MAX_SHEET_TILES = 400;

export const captionLines = (r: { prompt: string; seed: number; width: number; height: number }, chars: number) => [
  excerpt(r.prompt, chars),
  `SEED ${r.seed}  ${r.width}x${r.height}`,
];

/** A grid of thumbnails, each with its caption lines under it, on a dark background. */
export function composeContactSheet(tiles: readonly SheetTile[], layout: SheetLayout): RgbaImage {
  const lineHeight = (GLYPH_HEIGHT + 2) * layout.textScale;
  const captionHeight = layout.captions ? Math.max(...tiles.map((t) => t.caption.length), 0) * lineHeight + GAP / 2 : 0;
  const columns = Math.max(1, Math.min(layout.columns, tiles.length));
  const rows = Math.max(1, Math.ceil(tiles.length / columns));
  const cellW = layout.tile + GAP;
  const cellH = layout.tile + captionHeight + GAP;
  const width = columns * cellW + GAP;
  const height = rows * cellH + GAP;
  const sheet: RgbaImage = { width, height, data: new Uint8Array(width * height * 4) };
  fillRect(sheet, 0, 0, width, height, BACKGROUND);
  tiles.forEach((tile, i) => {
    const x0 = GAP + (i % columns) * cellW;
    const y0 = GAP + Math.floor(i / columns) * cellH;
    const img = tile.image;
    const ox = x0 + Math.floor((layout.tile - img.width) / 2);
    const oy = y0 + Math.floor((layout.tile - img.height) / 2);
    for (let y = 0; y < img.height; y++) {
      const row = img.data.subarray(y * img.width * 4, (y + 1) * img.width * 4);
      sheet.data.set(row, ((oy + y) * width + ox) * 4);
    }
    if (!layout.captions) return;
    tile.caption.forEach((line, k) => {
      const maxChars = Math.floor((layout.tile / layout.textScale + 1) / 4);
      const text = excerpt(line, maxChars);
      const x = x0 + Math.max(0, Math.floor((layout.tile - textWidth(text, layout.textScale)) / 2));
      drawText(sheet, text, x, y0 + layout.tile + GAP / 2 + k * lineHeight, layout.textScale, TEXT);
    });
  });
  return sheet;
}

const encoder = new TextEncoder();

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/** The part of `key` after the run's output prefix: links in index.html are relative to it. */
const relative = (run: BatchRun, key: string) => key.slice(run.outputPrefix.length);

/**
 * Writes the run's index.json (every render, its status and files), a static index.html gallery
 * (relative links, so the folder works wherever it is copied or served) and, with a maker, the
 * contact sheet `<run id>.contact-sheet.png`.
 */
export async function writeRunOutputs(
  blobs: BlobStore,
  run: BatchRun,
  options: {
    contactSheet?: ContactSheetMaker;
    log?: (level: "warn", obj: Record<string, unknown>, msg: string) => void;
  },
): Promise<void> {
  const base = `${run.outputPrefix}${run.id}.`;
  if (options.contactSheet) {
    const made = run.renders.filter((r) => r.outputs && r.outputs.length > 0).slice(0, MAX_SHEET_TILES);
    const tiles: SheetTile[] = [];
    for (const render of made) {
      const bytes = await blobs.get(render.outputs![0]!);
      if (!bytes) continue;
      tiles.push({ image: await options.contactSheet.thumbnail(bytes, 192), caption: captionLines(render, 48) });
    }
    if (tiles.length > 0) {
      const sheet = composeContactSheet(tiles, { tile: 192, columns: 8, textScale: 2, captions: true });
      run.contactSheetKey = `${base}contact-sheet.png`;
      await blobs.put(run.contactSheetKey, await options.contactSheet.encodePng(sheet), { contentType: "image/png" });
    }
  }
  const index = {
    run: run.id,
    manifest: run.manifestId,
    status: run.status,
    counts: run.counts,
    summary: run.summary,
    contact_sheet: run.contactSheetKey ? relative(run, run.contactSheetKey) : undefined,
    renders: run.renders.map((r) => ({
      id: r.jobId,
      prompt: r.prompt,
      seed: r.seed,
      width: r.width,
      height: r.height,
      mode: r.mode,
      status: r.state === "skipped" ? "skipped" : (r.status ?? "queued"),
      files: (r.outputs ?? []).map((k) => relative(run, k)),
      ...(r.error ? { error: r.error } : {}),
    })),
  };
  run.indexKey = `${base}index.json`;
  await blobs.put(run.indexKey, encoder.encode(JSON.stringify(index, null, 2)), { contentType: "application/json" });
  const figures = index.renders
    .filter((r) => r.files.length > 0)
    .map(
      (r) =>
        `<figure><a href="${escapeHtml(r.files[0]!)}"><img loading="lazy" src="${escapeHtml(r.files[0]!)}" alt=""></a>` +
        `<figcaption>${escapeHtml(excerpt(r.prompt, 80))}<br>seed ${r.seed} · ${r.width}×${r.height} · ${r.mode}</figcaption></figure>`,
    )
    .join("\n");
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(run.manifestId)} — ${run.id}</title>
<style>body{font:14px system-ui,sans-serif;background:#18181b;color:#eee;margin:24px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:16px}
figure{margin:0}img{width:100%;height:auto;border-radius:4px}figcaption{font-size:12px;opacity:.8}</style></head>
<body><h1>${escapeHtml(run.manifestId)}</h1><p>${escapeHtml(run.summary ?? "")}</p>
${run.contactSheetKey ? `<p><a href="${escapeHtml(relative(run, run.contactSheetKey))}">Contact sheet</a> · <a href="${escapeHtml(relative(run, run.indexKey))}">index.json</a></p>` : ""}
<main>
${figures}
</main></body></html>
`;
  run.galleryKey = `${base}index.html`;
  await blobs.put(run.galleryKey, encoder.encode(html), { contentType: "text/html; charset=utf-8" });
}
