import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";

import { Tokenizer } from "@huggingface/tokenizers";
import { KilnError } from "@kiln/shared";

import { CLIP_BOS_TOKEN, CLIP_EOS_TOKEN, CLIP_MAX_LENGTH } from "./clip-vocab.js";

/** The pre-tokenizer split of transformers' `CLIPConverter`; special tokens are cut out as added tokens before it runs. */
const CLIP_SPLIT_REGEX = String.raw`'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`;

/**
 * transformers' slow `CLIPTokenizer` (what diffusers loads) reads at most this many merges from
 * `merges.txt` (`[1 : 49152 - 256 - 2 + 1]`); later lines are ignored there, so here too.
 */
const MAX_MERGES = 49152 - 256 - 2;

export interface Truncation {
  /** The dropped tokens decoded (normalised, lower-case), as diffusers reports them. */
  droppedText: string;
  /** Content tokens the prompt has, BOS/EOS excluded (the window keeps `maxLength - 2` of them). */
  tokenCount: number;
}

export interface EncodedPrompt {
  ids: Int32Array;
  truncated?: Truncation;
}

export interface WeightedWindow {
  ids: Int32Array;
  /** One weight per id; 1 for BOS, EOS and padding. */
  weights: Float32Array;
}

export interface WeightedPrompt extends WeightedWindow {
  truncated?: Truncation;
}

export interface PromptFragment {
  text: string;
  weight: number;
}

/** A one-line warning for logs. */
export function truncationMessage(t: Truncation, maxContentTokens = CLIP_MAX_LENGTH - 2): string {
  return `Prompt has ${t.tokenCount} tokens and CLIP reads ${maxContentTokens}; this part was ignored: "${t.droppedText}"`;
}

interface ClipTokenizerJsonInput {
  vocab: Record<string, number>;
  merges: string[];
  bosToken: string;
  eosToken: string;
  unkToken: string;
}

/**
 * A `tokenizer.json` equivalent to transformers' `CLIPTokenizerFast` conversion: NFC, whitespace
 * runs → one space, lower-case; the CLIP split then byte-level mapping; BPE with `</w>` on the last
 * symbol of each word; BOS … EOS around a sequence.
 */
export function buildClipTokenizerJson(input: ClipTokenizerJsonInput): Record<string, unknown> {
  const { vocab, merges, bosToken, eosToken, unkToken } = input;
  const special = (content: string) => ({
    id: vocab[content],
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    // Matched in the raw text, as the slow tokenizer does: "<|ENDOFTEXT|>" stays ordinary text.
    normalized: false,
    special: true,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(bosToken), special(eosToken)],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "NFC" },
        { type: "Replace", pattern: { Regex: String.raw`\s+` }, content: " " },
        { type: "Lowercase" },
      ],
    },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: CLIP_SPLIT_REGEX }, behavior: "Removed", invert: true },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "RobertaProcessing",
      sep: [eosToken, vocab[eosToken]],
      cls: [bosToken, vocab[bosToken]],
      trim_offsets: false,
      add_prefix_space: false,
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: unkToken,
      continuing_subword_prefix: "",
      end_of_word_suffix: "</w>",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

// A1111 `prompt_parser.re_attention` (the version that allows spaces around the weight).
const ATTENTION_RE = /\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()[\]:]+|:/g;
const ROUND_MULTIPLIER = 1.1;
const SQUARE_MULTIPLIER = 1 / 1.1;

/**
 * A1111's `parse_prompt_attention`: `(x)` ×1.1, `[x]` ÷1.1, `(x:1.3)` ×1.3, nesting multiplies,
 * `\(` `\)` `\[` `\]` `\\` are literals, unclosed brackets apply to the end, adjacent fragments of
 * equal weight merge. Differences: `BREAK` is ordinary text, and a weight that is not a number
 * (`(x:1.2.3)`, where A1111 raises) is kept as text.
 */
export function parsePromptWeights(text: string): PromptFragment[] {
  const res: PromptFragment[] = [];
  const round: number[] = [];
  const square: number[] = [];
  const multiplyFrom = (start: number, multiplier: number) => {
    for (let p = start; p < res.length; p++) res[p].weight *= multiplier;
  };

  for (const m of text.matchAll(ATTENTION_RE)) {
    const token = m[0];
    const weight = m[1] === undefined ? undefined : Number(m[1]);
    if (token.startsWith("\\")) res.push({ text: token.slice(1), weight: 1 });
    else if (token === "(") round.push(res.length);
    else if (token === "[") square.push(res.length);
    else if (weight !== undefined && Number.isFinite(weight) && round.length > 0) multiplyFrom(round.pop()!, weight);
    else if (token === ")" && round.length > 0) multiplyFrom(round.pop()!, ROUND_MULTIPLIER);
    else if (token === "]" && square.length > 0) multiplyFrom(square.pop()!, SQUARE_MULTIPLIER);
    else res.push({ text: token, weight: 1 });
  }
  for (const pos of round) multiplyFrom(pos, ROUND_MULTIPLIER);
  for (const pos of square) multiplyFrom(pos, SQUARE_MULTIPLIER);

  if (res.length === 0) return [{ text: "", weight: 1 }];
  const merged: PromptFragment[] = [res[0]];
  for (let i = 1; i < res.length; i++) {
    const last = merged[merged.length - 1];
    if (last.weight === res[i].weight) last.text += res[i].text;
    else merged.push(res[i]);
  }
  return merged;
}

// ---------------------------------------------------------------------------------------------
// Loading

const CODE = "model_tokenizer_invalid";

function invalid(dir: string, file: string, problem: string, cause?: unknown): KilnError {
  return new KilnError(
    CODE,
    `Tokenizer file ${path.join(dir, file)} ${problem}. A diffusers SDXL model ships vocab.json + merges.txt ` +
      `(or tokenizer.json) in tokenizer/ and tokenizer_2/; re-download or re-export the model.`,
    { details: { file: path.join(dir, file) }, cause },
  );
}

async function readText(dir: string, file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(path.join(dir, file), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw invalid(dir, file, `could not be read (${(e as Error).message})`, e);
  }
}

function parseJsonObject(dir: string, file: string, text: string, expected: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw invalid(dir, file, `is not valid JSON (${(e as Error).message}); expected ${expected}`, e);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw invalid(dir, file, `holds ${Array.isArray(value) ? "an array" : typeof value}; expected ${expected}`);
  }
  return value as Record<string, unknown>;
}

async function readJsonObject(
  dir: string,
  file: string,
  expected: string,
): Promise<Record<string, unknown> | undefined> {
  const text = await readText(dir, file);
  return text === undefined ? undefined : parseJsonObject(dir, file, text, expected);
}

/** Special tokens appear as plain strings or as `{ content }` (AddedToken) objects. */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (value !== null && typeof value === "object" && typeof (value as { content?: unknown }).content === "string") {
    return (value as { content: string }).content;
  }
  return undefined;
}

function checkVocab(dir: string, file: string, value: unknown): Record<string, number> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw invalid(dir, file, "has no vocabulary object; expected a map of token → id");
  }
  const vocab = value as Record<string, unknown>;
  const seen = new Set<number>();
  for (const [token, id] of Object.entries(vocab)) {
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
      throw invalid(
        dir,
        file,
        `maps ${JSON.stringify(token)} to ${JSON.stringify(id)}; expected a non-negative integer id`,
      );
    }
    if (seen.has(id)) throw invalid(dir, file, `uses id ${id} twice; expected one token per id`);
    seen.add(id);
  }
  if (seen.size === 0) throw invalid(dir, file, "is an empty vocabulary; expected CLIP's 49,408 tokens");
  return vocab as Record<string, number>;
}

function parseMerges(dir: string, text: string, vocab: Record<string, number>): string[] {
  const lines = text.split(/\r?\n/);
  const start = lines[0]?.startsWith("#") ? 1 : 0;
  const merges: string[] = [];
  for (let i = start; i < lines.length && merges.length < MAX_MERGES; i++) {
    const line = lines[i];
    if (line === "") continue;
    const parts = line.split(" ");
    if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
      throw invalid(
        dir,
        "merges.txt",
        `line ${i + 1} is ${JSON.stringify(line)}; expected two symbols separated by one space`,
      );
    }
    if (vocab[parts[0]] === undefined || vocab[parts[1]] === undefined || vocab[parts[0] + parts[1]] === undefined) {
      throw invalid(
        dir,
        "merges.txt",
        `line ${i + 1} (${JSON.stringify(line)}) names a token vocab.json lacks; the two files do not belong together`,
      );
    }
    merges.push(line);
  }
  if (merges.length === 0)
    throw invalid(dir, "merges.txt", "has no merges; expected a `#version: 0.2` line then one merge per line");
  return merges;
}

interface SpecialTokenNames {
  bos: string;
  eos: string;
  pad: string;
  unk: string;
}

/** transformers lets `special_tokens_map.json` override `tokenizer_config.json`; CLIPTokenizer's defaults fill the rest. */
function specialTokenNames(
  map: Record<string, unknown> | undefined,
  config: Record<string, unknown> | undefined,
): SpecialTokenNames {
  const pick = (key: string) => tokenContent(map?.[key]) ?? tokenContent(config?.[key]);
  const eos = pick("eos_token") ?? CLIP_EOS_TOKEN;
  return {
    bos: pick("bos_token") ?? CLIP_BOS_TOKEN,
    eos,
    pad: pick("pad_token") ?? eos,
    unk: pick("unk_token") ?? eos,
  };
}

function checkTokenizerJson(dir: string, json: Record<string, unknown>): void {
  const model = json.model as Record<string, unknown> | undefined;
  if (model === null || typeof model !== "object")
    throw invalid(dir, "tokenizer.json", "has no `model`; expected a BPE model");
  if (model.type !== "BPE") {
    throw invalid(dir, "tokenizer.json", `has a ${JSON.stringify(model.type)} model; expected CLIP's BPE model`);
  }
  if (model.end_of_word_suffix !== "</w>") {
    throw invalid(
      dir,
      "tokenizer.json",
      `has end_of_word_suffix ${JSON.stringify(model.end_of_word_suffix)}; expected "</w>" (CLIP's BPE)`,
    );
  }
  checkVocab(dir, "tokenizer.json", model.vocab);
  if (!Array.isArray(model.merges) || model.merges.length === 0) {
    throw invalid(dir, "tokenizer.json", "has no `model.merges`; expected CLIP's merge list");
  }
  if (json.added_tokens !== undefined && !Array.isArray(json.added_tokens)) {
    throw invalid(dir, "tokenizer.json", "has an `added_tokens` that is not a list");
  }
}

// ---------------------------------------------------------------------------------------------

/** CLIP's tokenizer as the SDXL pipeline uses it: 77 ids per window, BOS … EOS, padded with the folder's pad token. */
/** BPE tokenizers built in this process, by the hash of their files; held while a model holds them. */
const loaded = new Map<string, WeakRef<Tokenizer>>();

export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  /** Ids per window, BOS and EOS included. SDXL's text encoders have 77 positions whatever the config says. */
  readonly maxLength: number = CLIP_MAX_LENGTH;

  private constructor(
    private readonly tokenizer: Tokenizer,
    ids: { bos: number; eos: number; pad: number },
  ) {
    this.bosId = ids.bos;
    this.eosId = ids.eos;
    this.padId = ids.pad;
  }

  /** Content tokens per window. */
  get windowContent(): number {
    return this.maxLength - 2;
  }

  /**
   * Loads `tokenizer.json` when the folder has one, else `vocab.json` + `merges.txt`; the pad token
   * comes from `special_tokens_map.json` / `tokenizer_config.json` (EOS when neither names one).
   */
  static async fromFolder(dir: string): Promise<ClipTokenizer> {
    const stat = await fs.stat(dir).catch(() => undefined);
    if (!stat?.isDirectory()) {
      throw new KilnError(
        CODE,
        `Tokenizer folder ${dir} does not exist; expected a diffusers model's tokenizer/ or tokenizer_2/ folder.`,
        {
          details: { file: dir },
        },
      );
    }
    const config = await readJsonObject(dir, "tokenizer_config.json", "a JSON object of tokenizer settings");
    const map = await readJsonObject(dir, "special_tokens_map.json", "a JSON object naming the special tokens");
    const names = specialTokenNames(map, config);

    let json: Record<string, unknown> | undefined;
    let source: string;
    const tokenizerJsonText = await readText(dir, "tokenizer.json");
    // One tokenizer per distinct vocabulary in the process: SDXL's base and refiner folders ship the same CLIP BPE
    // files up to three times, ~20 MB of heap each, which every full garbage collection of the worker's event loop
    // (the thread that feeds the GPU) must walk. Tokenizers are immutable once built.
    const key = createHash("sha256")
      .update(JSON.stringify([names.bos, names.eos, names.unk]))
      .update(
        tokenizerJsonText ??
          `${(await readText(dir, "vocab.json")) ?? ""}\0${(await readText(dir, "merges.txt")) ?? ""}`,
      )
      .digest("hex");
    let tokenizer = loaded.get(key)?.deref();
    if (tokenizer) source = tokenizerJsonText !== undefined ? "tokenizer.json" : "vocab.json";
    else if (tokenizerJsonText !== undefined) {
      source = "tokenizer.json";
      json = parseJsonObject(dir, source, tokenizerJsonText, "a Hugging Face tokenizers file");
      checkTokenizerJson(dir, json);
      json.added_tokens ??= [];
    } else {
      const vocabText = await readText(dir, "vocab.json");
      if (vocabText === undefined) throw invalid(dir, "vocab.json", "is missing (and there is no tokenizer.json)");
      const mergesText = await readText(dir, "merges.txt");
      if (mergesText === undefined) throw invalid(dir, "merges.txt", "is missing (and there is no tokenizer.json)");
      source = "vocab.json";
      const vocab = checkVocab(dir, source, parseJsonObject(dir, source, vocabText, "a map of token → id"));
      for (const [role, token] of [
        ["BOS", names.bos],
        ["EOS", names.eos],
      ] as const) {
        if (vocab[token] === undefined)
          throw invalid(dir, source, `has no ${role} token ${JSON.stringify(token)}; expected a CLIP vocabulary`);
      }
      const merges = parseMerges(dir, mergesText, vocab);
      json = buildClipTokenizerJson({ vocab, merges, bosToken: names.bos, eosToken: names.eos, unkToken: names.unk });
    }
    if (!tokenizer) {
      try {
        tokenizer = new Tokenizer(json!, {});
      } catch (e) {
        throw invalid(dir, source, `could not be loaded as a tokenizer (${(e as Error).message})`, e);
      }
      loaded.set(key, new WeakRef(tokenizer));
    }
    const shared = tokenizer;
    const idOf = (role: string, token: string, file: string) => {
      const id = shared.token_to_id(token);
      if (id === undefined)
        throw invalid(dir, file, `has no ${role} token ${JSON.stringify(token)}; expected a CLIP vocabulary`);
      return id;
    };
    const padFile =
      map?.pad_token !== undefined
        ? "special_tokens_map.json"
        : config?.pad_token !== undefined
          ? "tokenizer_config.json"
          : source;
    return new ClipTokenizer(shared, {
      bos: idOf("BOS", names.bos, source),
      eos: idOf("EOS", names.eos, source),
      pad: idOf("pad", names.pad, padFile),
    });
  }

  /** Content ids of `text`: no BOS/EOS, no padding, no limit. */
  tokenize(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  /** Text of `ids`; BOS is skipped and everything from the first EOS on (padding) is dropped. */
  decode(ids: ArrayLike<number>): string {
    const content: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id === this.eosId) break;
      if (id !== this.bosId) content.push(id);
    }
    if (content.length === 0) return "";
    return this.tokenizer.decode(content, { skip_special_tokens: true }).trim();
  }

  /** The 77 ids of one window: the first 75 content tokens, as diffusers' `truncation=True` does. */
  encode(text: string): EncodedPrompt {
    const content = this.tokenize(text);
    const ids = this.window(content, 0);
    return content.length > this.windowContent ? { ids, truncated: this.truncation(content) } : { ids };
  }

  /** Long-prompt mode (A1111/compel): 75-token windows, each BOS … EOS and padded; at least `minWindows` (empty ones are BOS, EOS, padding). */
  encodeLong(text: string, minWindows = 1): Int32Array[] {
    const content = this.tokenize(text);
    return Array.from({ length: this.windowCount(content.length, minWindows) }, (_, w) =>
      this.window(content, w * this.windowContent),
    );
  }

  /** Both prompts in long mode, with the shorter padded by empty windows so CFG can batch them window by window. */
  encodeLongPair(positive: string, negative: string): { positive: Int32Array[]; negative: Int32Array[] } {
    const pos = this.tokenize(positive);
    const neg = this.tokenize(negative);
    const n = Math.max(this.windowCount(pos.length, 1), this.windowCount(neg.length, 1));
    const windows = (content: number[]) =>
      Array.from({ length: n }, (_, w) => this.window(content, w * this.windowContent));
    return { positive: windows(pos), negative: windows(neg) };
  }

  /** One window with A1111 emphasis weights (see `parsePromptWeights`); truncated like `encode`. */
  encodeWeighted(text: string): WeightedPrompt {
    const { ids, weights } = this.weightedContent(text);
    const window = this.weightedWindow(ids, weights, 0);
    return ids.length > this.windowContent ? { ...window, truncated: this.truncation(ids) } : window;
  }

  /** Long mode with weights. */
  encodeWeightedLong(text: string, minWindows = 1): WeightedWindow[] {
    const { ids, weights } = this.weightedContent(text);
    return Array.from({ length: this.windowCount(ids.length, minWindows) }, (_, w) =>
      this.weightedWindow(ids, weights, w * this.windowContent),
    );
  }

  /** `encodeLongPair` with weights. */
  encodeWeightedLongPair(
    positive: string,
    negative: string,
  ): { positive: WeightedWindow[]; negative: WeightedWindow[] } {
    const pos = this.weightedContent(positive);
    const neg = this.weightedContent(negative);
    const n = Math.max(this.windowCount(pos.ids.length, 1), this.windowCount(neg.ids.length, 1));
    const windows = (c: { ids: number[]; weights: number[] }) =>
      Array.from({ length: n }, (_, w) => this.weightedWindow(c.ids, c.weights, w * this.windowContent));
    return { positive: windows(pos), negative: windows(neg) };
  }

  private windowCount(contentLength: number, minWindows: number): number {
    return Math.max(Math.ceil(contentLength / this.windowContent), 1, minWindows);
  }

  private window(content: number[], start: number): Int32Array {
    const ids = new Int32Array(this.maxLength).fill(this.padId);
    const chunk = content.slice(start, start + this.windowContent);
    ids[0] = this.bosId;
    ids.set(chunk, 1);
    ids[chunk.length + 1] = this.eosId;
    return ids;
  }

  private weightedWindow(content: number[], weights: number[], start: number): WeightedWindow {
    const w = new Float32Array(this.maxLength).fill(1);
    w.set(weights.slice(start, start + this.windowContent), 1);
    return { ids: this.window(content, start), weights: w };
  }

  /** A1111 tokenizes each fragment on its own, so a bracket inside a word splits it the same way here. */
  private weightedContent(text: string): { ids: number[]; weights: number[] } {
    const ids: number[] = [];
    const weights: number[] = [];
    for (const fragment of parsePromptWeights(text)) {
      for (const id of this.tokenize(fragment.text)) {
        ids.push(id);
        weights.push(fragment.weight);
      }
    }
    return { ids, weights };
  }

  private truncation(content: number[]): Truncation {
    return { droppedText: this.decode(content.slice(this.windowContent)), tokenCount: content.length };
  }
}
