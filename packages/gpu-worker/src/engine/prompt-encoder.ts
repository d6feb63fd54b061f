import type { Logger } from "@kiln/shared/node";
import * as ort from "onnxruntime-node";

import { SDXL_TOKEN_LENGTH } from "../models/sdxl-spec.js";
import { idsTensor, type LoadedSession, outputAsFloat32 } from "../onnx/tensors.js";
import { type ClipTokenizer, type Truncation, truncationMessage } from "./tokenizer/clip-tokenizer.js";

/**
 * SDXL prompt encoding, as diffusers' `encode_prompt`:
 * per-token embeddings are the penultimate hidden state (`hidden_states[-(clip_skip + 2)]`) of each
 * text encoder, concatenated on the last axis (base: 768 + 1280 = 2048; refiner: 1280 from
 * `text_encoder_2` alone); the pooled embedding is `text_embeds` of `text_encoder_2`.
 */
export interface PromptEmbeddings {
  /** [tokens, width] row-major (tokens = 77 × windows). */
  hidden: Float32Array;
  tokens: number;
  width: number;
  /** [1280] */
  pooled: Float32Array;
}

export interface TextEncoderPair {
  tokenizer?: ClipTokenizer;
  textEncoder?: LoadedSession;
  tokenizer2: ClipTokenizer;
  textEncoder2: LoadedSession;
}

export interface EncodeOptions {
  clipSkip?: number;
  longPrompt: boolean;
  weighting: boolean;
  /** Long mode: encode at least this many 75-token windows (so negative and positive line up). */
  minWindows?: number;
}

export function hiddenStateName(session: LoadedSession, clipSkip = 0): string {
  const count = session.outputs.filter((o) => /^hidden_states\.\d+$/.test(o.name)).length;
  const index = count - 2 - clipSkip;
  if (index < 0) throw new RangeError(`clip_skip ${clipSkip} is more than this text encoder's ${count - 1} layers`);
  return `hidden_states.${index}`;
}

/** Token ids and per-token weights for one prompt on one tokenizer, as windows of 77. */
function tokenize(
  tokenizer: ClipTokenizer,
  text: string,
  options: EncodeOptions,
  logger?: Logger,
): { windows: Int32Array[]; weights?: Float32Array[] } {
  const minWindows = options.minWindows ?? 1;
  if (options.longPrompt) {
    if (!options.weighting) return { windows: tokenizer.encodeLong(text, minWindows) };
    const windows = tokenizer.encodeWeightedLong(text, minWindows);
    return { windows: windows.map((w) => w.ids), weights: windows.map((w) => w.weights) };
  }
  const encoded: { ids: Int32Array; weights?: Float32Array; truncated?: Truncation } = options.weighting
    ? tokenizer.encodeWeighted(text)
    : tokenizer.encode(text);
  if (encoded.truncated) {
    logger?.warn(
      { droppedText: encoded.truncated.droppedText, tokens: encoded.truncated.tokenCount },
      `${truncationMessage(encoded.truncated)} (set long_prompt: true to keep it)`,
    );
  }
  return { windows: [encoded.ids], weights: encoded.weights ? [encoded.weights] : undefined };
}

async function runEncoder(
  session: LoadedSession,
  windows: Int32Array[],
  outputName: string,
  wantPooled: boolean,
): Promise<{ hidden: Float32Array; width: number; pooled?: Float32Array }> {
  const feeds = { input_ids: idsTensor(session, "input_ids", windows) };
  const fetches = wantPooled ? [outputName, "text_embeds"] : [outputName];
  const out = await session.session.run(feeds, fetches);
  const hidden = out[outputName] as ort.Tensor;
  const width = hidden.dims[hidden.dims.length - 1]!;
  const pooledAll = wantPooled ? outputAsFloat32(out.text_embeds as ort.Tensor) : undefined;
  // Long prompts: the pooled embedding comes from the first window, as compel does.
  return { hidden: outputAsFloat32(hidden), width, pooled: pooledAll?.slice(0, pooledAll.length / windows.length) };
}

/** A1111-style weighting: scale each token's embedding, then restore the original mean. */
function applyTokenWeights(hidden: Float32Array, width: number, weights: Float32Array): void {
  let before = 0;
  for (let i = 0; i < hidden.length; i++) before += hidden[i]!;
  for (let t = 0; t < weights.length; t++) {
    const w = weights[t]!;
    if (w === 1) continue;
    for (let j = t * width; j < (t + 1) * width; j++) hidden[j] = hidden[j]! * w;
  }
  let after = 0;
  for (let i = 0; i < hidden.length; i++) after += hidden[i]!;
  if (after !== 0 && before !== 0) {
    const k = before / after;
    for (let i = 0; i < hidden.length; i++) hidden[i] = hidden[i]! * k;
  }
}

/**
 * One prompt through the model's text encoders: `prompt` to `text_encoder` (CLIP-L, base only), `prompt2` to
 * `text_encoder_2` (OpenCLIP bigG), their per-token embeddings concatenated on the last axis. Both encoders
 * must see the same number of windows: long mode passes `minWindows` for that (see `encodePromptPair`).
 */
export async function encodePrompt(
  pair: TextEncoderPair,
  prompt: string,
  prompt2: string,
  options: EncodeOptions,
  logger?: Logger,
): Promise<PromptEmbeddings> {
  const parts: { hidden: Float32Array; width: number }[] = [];
  let pooled: Float32Array | undefined;
  let tokens: number | undefined;
  for (const [tokenizer, session, text, isSecond] of encoderInputs(pair, prompt, prompt2)) {
    const { windows, weights } = tokenize(tokenizer, text, options, logger);
    if (tokens !== undefined && tokens !== windows.length * SDXL_TOKEN_LENGTH) {
      throw new RangeError(
        `the text encoders got ${tokens / SDXL_TOKEN_LENGTH} and ${windows.length} windows; pass minWindows in long mode`,
      );
    }
    tokens = windows.length * SDXL_TOKEN_LENGTH;
    const result = await runEncoder(session, windows, hiddenStateName(session, options.clipSkip), isSecond);
    weights?.forEach((w, i) =>
      applyTokenWeights(
        result.hidden.subarray(i * SDXL_TOKEN_LENGTH * result.width, (i + 1) * SDXL_TOKEN_LENGTH * result.width),
        result.width,
        w,
      ),
    );
    parts.push(result);
    if (isSecond) pooled = result.pooled;
  }
  const width = parts.reduce((a, p) => a + p.width, 0);
  const hidden = new Float32Array(tokens! * width);
  let offset = 0;
  for (const part of parts) {
    for (let t = 0; t < tokens!; t++)
      hidden.set(part.hidden.subarray(t * part.width, (t + 1) * part.width), t * width + offset);
    offset += part.width;
  }
  return { hidden, tokens: tokens!, width, pooled: pooled! };
}

/** (tokenizer, encoder, text, is text_encoder_2) for each text encoder the model has. */
function encoderInputs(
  pair: TextEncoderPair,
  prompt: string,
  prompt2: string,
): [ClipTokenizer, LoadedSession, string, boolean][] {
  const first: [ClipTokenizer, LoadedSession, string, boolean][] =
    pair.tokenizer && pair.textEncoder ? [[pair.tokenizer, pair.textEncoder, prompt, false]] : [];
  return [...first, [pair.tokenizer2, pair.textEncoder2, prompt2, true]];
}

/** Long mode: the windows a text needs on a tokenizer (at least one). */
function windowsNeeded(tokenizer: ClipTokenizer, text: string, weighting: boolean): number {
  return weighting ? tokenizer.encodeWeightedLong(text).length : tokenizer.encodeLong(text).length;
}

export function zeroEmbeddings(like: PromptEmbeddings): PromptEmbeddings {
  return {
    hidden: new Float32Array(like.hidden.length),
    tokens: like.tokens,
    width: like.width,
    pooled: new Float32Array(like.pooled.length),
  };
}

/**
 * Positive and negative embeddings for a render, by diffusers' `encode_prompt` rules:
 * - `prompt_2` defaults to `prompt` and `negative_prompt_2` to `negative_prompt` (empty strings too: Python's `or`);
 * - with `forceZerosForEmptyPrompt` (the base model's `model_index.json`) and no `negative_prompt` at all, the
 *   negative embeddings and pooled embedding are zeros — even when `negative_prompt_2` is set, as in diffusers;
 *   an explicit "" is encoded. The refiner sets it false and encodes "";
 * - the negative prompt is encoded at the penultimate layer whatever `clip_skip` says (diffusers applies
 *   `clip_skip` to the positive prompt only);
 * - long mode (A1111/compel): every text gets as many 75-token windows as the longest one needs, on either
 *   tokenizer, so the two encoders concatenate and the [negative, positive] batch lines up window by window.
 */
export async function encodePromptPair(
  pair: TextEncoderPair,
  prompts: { prompt: string; prompt2?: string; negativePrompt?: string; negativePrompt2?: string },
  options: EncodeOptions & { forceZerosForEmptyPrompt: boolean; guided: boolean },
  logger?: Logger,
): Promise<{ positive: PromptEmbeddings; negative?: PromptEmbeddings }> {
  const prompt2 = prompts.prompt2 || prompts.prompt;
  const zeroNegative = prompts.negativePrompt === undefined && options.forceZerosForEmptyPrompt;
  if (options.guided && zeroNegative && prompts.negativePrompt2) {
    logger?.warn(
      "negative_prompt_2 is ignored without negative_prompt on a model with force_zeros_for_empty_prompt (diffusers does the same)",
    );
  }
  const encodeNegative = options.guided && !zeroNegative;
  const negativePrompt = prompts.negativePrompt ?? "";
  const negativePrompt2 = prompts.negativePrompt2 || negativePrompt;

  let minWindows = options.minWindows ?? 1;
  if (options.longPrompt) {
    const texts: [string, string][] = encodeNegative
      ? [
          [prompts.prompt, prompt2],
          [negativePrompt, negativePrompt2],
        ]
      : [[prompts.prompt, prompt2]];
    for (const [text, text2] of texts) {
      for (const [tokenizer, , t] of encoderInputs(pair, text, text2))
        minWindows = Math.max(minWindows, windowsNeeded(tokenizer, t, options.weighting));
    }
  }
  const positive = await encodePrompt(pair, prompts.prompt, prompt2, { ...options, minWindows }, logger);
  if (!options.guided) return { positive };
  if (zeroNegative) return { positive, negative: zeroEmbeddings(positive) };
  const negative = await encodePrompt(
    pair,
    negativePrompt,
    negativePrompt2,
    { ...options, clipSkip: undefined, minWindows },
    logger,
  );
  return { positive, negative };
}
