import { readFile } from "node:fs/promises";

import { detectSdxlWatermarkInFile, WATERMARK_MATCH_THRESHOLD } from "@kiln/gpu-worker";

import { parseFlags, UsageError } from "../cli/args.js";

/** Exit codes of `kiln watermark detect`. */
export const DETECT_EXIT = { found: 0, notFound: 1, usage: 2, unreadable: 3 } as const;

/**
 * `kiln watermark detect FILE [--json]`: whether FILE carries the SDXL invisible watermark (invisible-watermark's
 * dwtDct with SDXL's 48-bit message). Exit 0 found, 1 not found, 3 the file cannot be checked (not an image, or
 * under 256×256 pixels); usage errors exit 2.
 */
export async function run(argv: string[]): Promise<void> {
  const [action, ...rest] = argv;
  if (action !== "detect") throw new UsageError(action ? `unknown action "${action}"; use detect` : "say detect FILE");
  const { values, positionals } = parseFlags(rest, { json: { type: "boolean", default: false } }, true);
  const file = positionals[0];
  if (!file || positionals.length > 1) throw new UsageError("give one image file: kiln watermark detect FILE");
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (e) {
    console.error(`kiln watermark: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    process.exitCode = DETECT_EXIT.unreadable;
    return;
  }
  let result;
  try {
    result = await detectSdxlWatermarkInFile(bytes);
  } catch (e) {
    console.error(`kiln watermark: ${file} is not an image Kiln can decode (${e instanceof Error ? e.message : e})`);
    process.exitCode = DETECT_EXIT.unreadable;
    return;
  }
  if (values.json) {
    console.log(JSON.stringify({ file, ...result }));
  } else if (!result.readable) {
    console.log(
      `${file}: ${result.width}×${result.height} is under 256×256 pixels, too small to carry the SDXL watermark (diffusers leaves such images unmarked).`,
    );
  } else {
    const pct = (result.accuracy * 100).toFixed(1);
    console.log(
      `${file}: SDXL watermark ${result.found ? "found" : "not found"}: ${result.matching}/48 bits match (${pct} %; found from ${WATERMARK_MATCH_THRESHOLD}). Readings: as invisible-watermark reads the file ${result.readings.package}/48, chroma centred as encoded ${result.readings.float}/48.`,
    );
  }
  process.exitCode = !result.readable
    ? DETECT_EXIT.unreadable
    : result.found
      ? DETECT_EXIT.found
      : DETECT_EXIT.notFound;
}
