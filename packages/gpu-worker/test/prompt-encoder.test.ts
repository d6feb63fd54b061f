import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { createLogger } from "@kiln/shared/node";
import * as ort from "onnxruntime-node";

import {
  encodePrompt,
  encodePromptPair,
  type PromptEmbeddings,
  type TextEncoderPair,
} from "../src/engine/prompt-encoder.js";
import { loadSdxlModel, type SdxlModel } from "../src/engine/sdxl-model.js";
import { writeTinyModel } from "../src/models/tiny-models.js";

/** Embedding assembly as diffusers' `encode_prompt` does it, on the tiny models (real widths: 768 + 1280, pooled 1280). */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-prompts-"));
let base: SdxlModel;
let refiner: SdxlModel;

before(async () => {
  const options = { providers: ["cpu" as const], logger: createLogger({ level: "silent" }) };
  writeTinyModel(path.join(tmp, "base"), { role: "base" });
  writeTinyModel(path.join(tmp, "refiner"), { role: "refiner" });
  base = await loadSdxlModel(path.join(tmp, "base"), "base", options);
  refiner = await loadSdxlModel(path.join(tmp, "refiner"), "refiner", options);
});

after(async () => {
  await base?.release();
  await refiner?.release();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const plain = { longPrompt: false, weighting: false };
const guidedBase = { ...plain, guided: true, forceZerosForEmptyPrompt: true };

/** Runs one text encoder on one 77-token window and returns the named outputs. */
async function encoderOutputs(
  pair: TextEncoderPair,
  second: boolean,
  text: string,
  names: string[],
): Promise<Record<string, Float32Array>> {
  const tokenizer = second ? pair.tokenizer2 : pair.tokenizer!;
  const session = second ? pair.textEncoder2 : pair.textEncoder!;
  const out = await session.session.run(
    { input_ids: new ort.Tensor("int32", tokenizer.encode(text).ids, [1, 77]) },
    names,
  );
  return Object.fromEntries(names.map((n) => [n, (out[n] as ort.Tensor).data as Float32Array]));
}

/** Token t's `width` values starting at column `from` of [tokens, e.width] embeddings. */
const row = (e: PromptEmbeddings, t: number, from: number, width: number) =>
  e.hidden.subarray(t * e.width + from, t * e.width + from + width);

const isZero = (x: Float32Array) => x.every((v) => v === 0);

describe("base model (two encoders, 2048 wide)", () => {
  it("concatenates CLIP-L hidden_states.11 and bigG hidden_states.31 per token; pooled is bigG's text_embeds", async () => {
    const { positive } = await encodePromptPair(
      base.encoders,
      { prompt: "a photo of a cat" },
      { ...plain, guided: false, forceZerosForEmptyPrompt: true },
    );
    assert.equal(positive.width, 2048);
    assert.equal(positive.tokens, 77);
    assert.equal(positive.hidden.length, 77 * 2048);
    assert.equal(positive.pooled.length, 1280);
    const l = await encoderOutputs(base.encoders, false, "a photo of a cat", ["hidden_states.11"]);
    const g = await encoderOutputs(base.encoders, true, "a photo of a cat", ["hidden_states.31", "text_embeds"]);
    for (const t of [0, 3, 76]) {
      assert.deepEqual(
        row(positive, t, 0, 768),
        l["hidden_states.11"]!.subarray(t * 768, (t + 1) * 768),
        `token ${t}, CLIP-L`,
      );
      assert.deepEqual(
        row(positive, t, 768, 1280),
        g["hidden_states.31"]!.subarray(t * 1280, (t + 1) * 1280),
        `token ${t}, bigG`,
      );
    }
    assert.deepEqual(positive.pooled, g.text_embeds);
  });

  it("no negative prompt → zero negative embeddings and pooled (force_zeros_for_empty_prompt); no guidance → no negative at all", async () => {
    const { positive, negative } = await encodePromptPair(base.encoders, { prompt: "a cat" }, guidedBase);
    assert.ok(negative);
    assert.equal(negative.hidden.length, positive.hidden.length);
    assert.equal(negative.pooled.length, 1280);
    assert.ok(isZero(negative.hidden) && isZero(negative.pooled));
    assert.ok(!isZero(positive.hidden));
    assert.equal(
      (await encodePromptPair(base.encoders, { prompt: "a cat" }, { ...guidedBase, guided: false })).negative,
      undefined,
    );
    // diffusers tests `negative_prompt is None`: negative_prompt_2 alone does not switch the zeros off.
    const only2 = await encodePromptPair(base.encoders, { prompt: "a cat", negativePrompt2: "blurry" }, guidedBase);
    assert.ok(isZero(only2.negative!.hidden));
  });

  it('an explicit "" negative prompt is encoded, not zeroed', async () => {
    const { negative } = await encodePromptPair(base.encoders, { prompt: "a cat", negativePrompt: "" }, guidedBase);
    assert.ok(!isZero(negative!.hidden));
    assert.deepEqual(negative, await encodePrompt(base.encoders, "", "", plain));
  });

  it("prompt_2 goes to the second encoder only; an empty prompt_2 or negative_prompt_2 falls back (Python's `or`)", async () => {
    const same = await encodePrompt(base.encoders, "a cat", "a cat", plain);
    const { positive } = await encodePromptPair(
      base.encoders,
      { prompt: "a cat", prompt2: "a dog" },
      { ...guidedBase, guided: false },
    );
    assert.deepEqual(row(positive, 2, 0, 768), row(same, 2, 0, 768), "CLIP-L still sees prompt");
    assert.notDeepEqual(row(positive, 2, 768, 1280), row(same, 2, 768, 1280), "bigG sees prompt_2");
    assert.notDeepEqual(positive.pooled, same.pooled);
    const empty2 = await encodePromptPair(
      base.encoders,
      { prompt: "a cat", prompt2: "", negativePrompt: "blurry", negativePrompt2: "" },
      guidedBase,
    );
    assert.deepEqual(empty2.positive, same);
    assert.deepEqual(empty2.negative, await encodePrompt(base.encoders, "blurry", "blurry", plain));
  });

  it("clip_skip moves the positive prompt one layer up per step; the negative stays at the penultimate layer, as diffusers", async () => {
    const skipped = await encodePromptPair(
      base.encoders,
      { prompt: "a cat", negativePrompt: "blurry" },
      { ...guidedBase, clipSkip: 1 },
    );
    const l = await encoderOutputs(base.encoders, false, "a cat", ["hidden_states.10"]);
    const g = await encoderOutputs(base.encoders, true, "a cat", ["hidden_states.30"]);
    assert.deepEqual(row(skipped.positive, 1, 0, 768), l["hidden_states.10"]!.subarray(768, 1536));
    assert.deepEqual(row(skipped.positive, 1, 768, 1280), g["hidden_states.30"]!.subarray(1280, 2560));
    assert.deepEqual(skipped.negative, await encodePrompt(base.encoders, "blurry", "blurry", plain));
  });

  it("long mode: positive and negative get the same number of 77-token windows, whichever is longer", async () => {
    const long = Array.from({ length: 100 }, (_, i) => `word${i % 7}`).join(" "); // well over 75 tokens
    const veryLong = `${long} ${long}`;
    const options = { ...guidedBase, longPrompt: true };
    const a = await encodePromptPair(base.encoders, { prompt: long, negativePrompt: "blurry" }, options);
    assert.ok(a.positive.tokens > 77 && a.positive.tokens % 77 === 0);
    assert.equal(a.negative!.tokens, a.positive.tokens);
    const b = await encodePromptPair(base.encoders, { prompt: "a cat", negativePrompt: veryLong }, options);
    assert.ok(b.negative!.tokens > a.positive.tokens);
    assert.equal(b.positive.tokens, b.negative!.tokens);
    assert.equal(b.positive.hidden.length, b.positive.tokens * 2048);
    // Zeroed negatives take the positive's window count.
    const c = await encodePromptPair(base.encoders, { prompt: long }, options);
    assert.equal(c.negative!.hidden.length, c.positive.hidden.length);
  });

  it("long mode: a prompt_2 longer than prompt gives both encoders the longer window count", async () => {
    const long = Array.from({ length: 100 }, () => "lighthouse").join(" ");
    const { positive } = await encodePromptPair(
      base.encoders,
      { prompt: "a cat", prompt2: long },
      { ...guidedBase, guided: false, longPrompt: true },
    );
    assert.equal(positive.tokens, 154);
    assert.equal(positive.hidden.length, 154 * 2048);
    // The second window of the CLIP-L half is an empty window (BOS, EOS, padding), not missing.
    const emptyWindow = await encodePrompt(base.encoders, "", "", plain);
    assert.deepEqual(row(positive, 77, 0, 768), row(emptyWindow, 0, 0, 768));
  });

  it("weighting scales the weighted tokens and restores each encoder's mean per window (A1111)", async () => {
    const options = { ...plain, weighting: true };
    const weighted = await encodePrompt(base.encoders, "a (red:1.5) fox", "a (red:1.5) fox", options);
    const unweighted = await encodePrompt(base.encoders, "a red fox", "a red fox", plain);
    assert.notDeepEqual(weighted.hidden, unweighted.hidden);
    for (const [from, width] of [
      [0, 768],
      [768, 1280],
    ] as const) {
      const mean = (e: PromptEmbeddings) => {
        let sum = 0;
        for (let t = 0; t < 77; t++) for (const v of row(e, t, from, width)) sum += v;
        return sum / (77 * width);
      };
      assert.ok(
        Math.abs(mean(weighted) - mean(unweighted)) < 1e-6 * Math.max(1, Math.abs(mean(unweighted))),
        `encoder at ${from}: mean kept`,
      );
    }
    // "red" (token 2) grew relative to "a" (token 1).
    const norm = (x: Float32Array) => Math.hypot(...x);
    const ratio = (e: PromptEmbeddings) => norm(row(e, 2, 0, 768)) / norm(row(e, 1, 0, 768));
    assert.ok(ratio(weighted) > 1.4 * ratio(unweighted));
  });
});

describe("refiner (bigG only, 1280 wide)", () => {
  it('encodes "" for a missing negative prompt (force_zeros_for_empty_prompt is false)', async () => {
    assert.equal(refiner.forceZerosForEmptyPrompt, false);
    const { positive, negative } = await encodePromptPair(
      refiner.encoders,
      { prompt: "a cat" },
      { ...plain, guided: true, forceZerosForEmptyPrompt: refiner.forceZerosForEmptyPrompt },
    );
    assert.equal(positive.width, 1280);
    assert.equal(positive.hidden.length, 77 * 1280);
    assert.equal(positive.pooled.length, 1280);
    assert.ok(!isZero(negative!.hidden) && !isZero(negative!.pooled));
    assert.deepEqual(negative, await encodePrompt(refiner.encoders, "", "", plain));
    const g = await encoderOutputs(refiner.encoders, true, "", ["hidden_states.31", "text_embeds"]);
    assert.deepEqual(negative!.hidden, g["hidden_states.31"]);
    assert.deepEqual(negative!.pooled, g.text_embeds);
  });
});
