import fs from "node:fs";
import path from "node:path";

import { trainSchedule } from "../../engine/schedulers/noise-schedule.js";
import { clipVocabulary, writeClipTokenizerFolder } from "../../engine/tokenizer/clip-vocab.js";
import { attr, GraphBuilder, SDXL_SCHEDULER_CONFIG, writeJson, writeOnnx } from "../tiny-models.js";
import {
  BACKGROUND_WORD,
  CODE_GROUPS,
  CODE_SLOTS,
  CODE_WIDTH,
  codeSlot,
  COLOUR_NAMES,
  colourLatent,
  drawMask,
  KEYWORDS,
  LATENT_FROM_RGB,
  MASK_GRID,
  pictureLayers,
  PICTURES,
  PLACEMENTS,
  SHAPE_PAIRS,
  SHAPES,
  slotAllows,
  slotMisses,
} from "./picture-set.js";

/**
 * Kiln's reference SDXL pair: real ONNX graphs in the optimum layout with SDXL's names and widths whose
 * UNet is the *exact* denoiser for a small procedural picture set (picture-set.ts). Given the noisy
 * sample x = a·x₀ + s·ε (a = √ᾱ_t, s = √(1 − ᾱ_t), ᾱ_t from the scheduler config's training table at the
 * `timestep` it is fed), it returns ε̂ = (x − a·E[x₀ | x, code])/s, where the expectation is over the
 * pictures the prompt's code allows (all of them for the empty / zero code of CFG's unconditional
 * branch). So any correct sampler lands on a picture, and a point-mass posterior lands exactly on it.
 */

/** Marker in model_index.json: a Kiln reference model (exact denoiser of a procedural picture set). */
export const REFERENCE_MODEL_MARKER = "_kiln_reference";
/** Bumped whenever the generated graphs change, so cached folders are regenerated. */
export const REFERENCE_MODEL_VERSION = 2;

export interface ReferenceModelOptions {
  role: "base" | "refiner";
  /**
   * The refiner's pictures carry ring textures inside the shape (finer detail than the base's flat
   * shapes). Default true for the refiner; false gives it the base's picture set exactly.
   */
  detail?: boolean;
}

const FLOAT = 1;
const INT32 = 6;
const INT64 = 7;
const SEQUENCE_LENGTH = 77;
const LATENT_CHANNELS = 4;
const VAE_SCALING_FACTOR = 0.13025;
const POOLED_WIDTH = 1280;
const UNMATCHED_LOG_PRIOR = -1e30;

/** Keywords that are a single CLIP token (all of them today), with their token ids. */
function keywordTokens(): { word: string; id: number }[] {
  const vocab = clipVocabulary().vocab;
  return Object.keys(KEYWORDS)
    .map((word) => ({ word, id: vocab[`${word}</w>`] }))
    .filter((k): k is { word: string; id: number } => k.id !== undefined);
}

function backgroundToken(): number {
  const id = clipVocabulary().vocab[`${BACKGROUND_WORD}</w>`];
  if (id === undefined) throw new Error(`"${BACKGROUND_WORD}" is not one CLIP token`);
  return id;
}

/** Identity embedding of the F-wide code into a `width`-wide vector (the code in the first F entries). */
function codeEmbedding(width: number): Float32Array {
  const e = new Float32Array(CODE_WIDTH * width);
  for (let f = 0; f < CODE_WIDTH; f++) e[f * width + f] = 1;
  return e;
}

/**
 * Keyword lookup + pooling. Per token: a one-hot over the known words (Equal against their ids), mapped
 * to code slots; a colour word directly before "background" moves from the shape-colour slots to the
 * background slots; a colour word directly before a shape word also sets that "colour shape" binding,
 * the first-named one when no shape word precedes it (a cumulative sum over the tokens), else the second.
 * Hidden states are the per-token code embedded at the encoder's width; the pooled output is the token
 * sum clipped to 1, plus the count slot (one shape word, or several). `promptCode` in picture-set.ts is
 * the same computation in JavaScript.
 */
function textEncoderGraph(width: number, layers: number, withProjection: boolean): GraphBuilder {
  const g = new GraphBuilder(
    withProjection ? "reference_clip_text_model_with_projection" : "reference_clip_text_model",
  );
  const ids = g.input("input_ids", INT32, ["batch_size", "sequence_length"]);
  const keywords = keywordTokens();
  const W = keywords.length;
  const ids64 = g.op("Cast", [ids], [attr.int("to", INT64)]);

  const hits = g.op(
    "Cast",
    [
      g.op("Equal", [
        g.op("Unsqueeze", [ids64, g.int64s("axis_two", [1], [2])]),
        g.int64s(
          "keyword_ids",
          [W],
          keywords.map((k) => k.id),
        ),
      ]),
    ],
    [attr.int("to", FLOAT)],
  );
  const toCode = new Float32Array(W * CODE_WIDTH);
  const toColour = new Float32Array(W * COLOUR_NAMES.length);
  const toShape = new Float32Array(W * SHAPES.length);
  keywords.forEach((k, i) => {
    const kw = KEYWORDS[k.word]!;
    toCode[i * CODE_WIDTH + codeSlot(kw.group, kw.name)] = 1;
    if (kw.group === "colour") toColour[i * COLOUR_NAMES.length + COLOUR_NAMES.indexOf(kw.name as never)] = 1;
    if (kw.group === "shape") toShape[i * SHAPES.length + SHAPES.indexOf(kw.name as never)] = 1;
  });
  const direct = g.op("MatMul", [hits, g.floats("keyword_to_code", [W, CODE_WIDTH], toCode)]);
  const colours = g.op("MatMul", [hits, g.floats("keyword_to_colour", [W, COLOUR_NAMES.length], toColour)]);

  // 1 where the next token is "background".
  const isBackground = g.op(
    "Cast",
    [g.op("Equal", [ids64, g.int64s("background_id", [], [backgroundToken()])])],
    [attr.int("to", FLOAT)],
  );
  const axisOne = g.int64s("axis_one", [1], [1]);
  const shifted = g.op("Slice", [
    isBackground,
    g.int64s("from_one", [1], [1]),
    g.int64s("to_end", [1], [1 << 30]),
    axisOne,
  ]);
  const lastColumn = g.op("Mul", [
    g.op("Slice", [isBackground, g.int64s("from_zero", [1], [0]), g.int64s("to_one", [1], [1]), axisOne]),
    g.floats("zero", [], [0]),
  ]);
  const beforeBackground = g.op("Concat", [shifted, lastColumn], [attr.int("axis", 1)]);
  const moved = g.op("Mul", [colours, g.op("Unsqueeze", [beforeBackground, g.int64s("axis_two_b", [1], [2])])]);
  const move = new Float32Array(COLOUR_NAMES.length * CODE_WIDTH);
  COLOUR_NAMES.forEach((c, i) => {
    move[i * CODE_WIDTH + codeSlot("colour", c)] = -1;
    move[i * CODE_WIDTH + codeSlot("background", c)] = 1;
  });
  // Bindings: the colour at token i with the shape at token i + 1, as [B, T, 8·4].
  const shapes = g.op("MatMul", [hits, g.floats("keyword_to_shape", [W, SHAPES.length], toShape)]);
  const shapeNext = g.op(
    "Concat",
    [
      g.op("Slice", [shapes, g.int64s("from_one_s", [1], [1]), g.int64s("to_end_s", [1], [1 << 30]), axisOne]),
      g.op("Mul", [
        g.op("Slice", [shapes, g.int64s("from_zero_s", [1], [0]), g.int64s("to_one_s", [1], [1]), axisOne]),
        g.floats("zero_s", [], [0]),
      ]),
    ],
    [attr.int("axis", 1)],
  );
  const pairs = g.op("Reshape", [
    g.op("Mul", [
      g.op("Unsqueeze", [colours, g.int64s("axis_three", [1], [3])]),
      g.op("Unsqueeze", [shapeNext, g.int64s("axis_two_c", [1], [2])]),
    ]),
    g.int64s("pairs_shape", [3], [0, 0, COLOUR_NAMES.length * SHAPES.length]),
  ]);
  // Shape words up to and including each token: 0 before the first shape word.
  const shapeWords = g.op("ReduceSum", [shapes, g.int64s("axis_two_d", [1], [2])], [attr.int("keepdims", 0)]);
  const shapesSoFar = g.op("CumSum", [shapeWords, g.int64s("cumsum_axis", [], [1])]);
  const isFirst = g.op("Cast", [g.op("Less", [shapesSoFar, g.floats("half", [], [0.5])])], [attr.int("to", FLOAT)]);
  const isSecond = g.op("Sub", [g.floats("one_b", [], [1]), isFirst]);
  const axisTwoE = g.int64s("axis_two_e", [1], [2]);
  const bindingTo = (group: "first" | "second") => {
    const table = new Float32Array(COLOUR_NAMES.length * SHAPES.length * CODE_WIDTH);
    COLOUR_NAMES.forEach((c, i) =>
      SHAPES.forEach((sh, j) => (table[(i * SHAPES.length + j) * CODE_WIDTH + codeSlot(group, `${c} ${sh}`)] = 1)),
    );
    return g.floats(`${group}_binding_to_code`, [COLOUR_NAMES.length * SHAPES.length, CODE_WIDTH], table);
  };
  const bindings = g.op("Add", [
    g.op("MatMul", [g.op("Mul", [pairs, g.op("Unsqueeze", [isFirst, axisTwoE])]), bindingTo("first")]),
    g.op("MatMul", [g.op("Mul", [pairs, g.op("Unsqueeze", [isSecond, axisTwoE])]), bindingTo("second")]),
  ]);
  const perToken = g.op("Add", [
    g.op("Add", [
      direct,
      g.op("MatMul", [moved, g.floats("colour_to_background", [COLOUR_NAMES.length, CODE_WIDTH], move)]),
    ]),
    bindings,
  ]);
  // Count: "one" when the prompt has exactly one shape word, "two" when it has several.
  const one = g.floats("one", [], [1]);
  const zero = g.floats("zero_c", [], [0]);
  const clip01 = (x: string) => g.op("Min", [g.op("Max", [x, zero]), one]);
  const nShapes = g.op("ReduceSum", [shapeWords, axisOne], [attr.int("keepdims", 1)]);
  const two = clip01(g.op("Sub", [nShapes, one]));
  const single = g.op("Sub", [clip01(nShapes), two]);
  const countTable = new Float32Array(2 * CODE_WIDTH);
  countTable[codeSlot("count", "one")] = 1;
  countTable[CODE_WIDTH + codeSlot("count", "two")] = 1;
  const count = g.op("MatMul", [
    g.op("Concat", [single, two], [attr.int("axis", 1)]),
    g.floats("count_to_code", [2, CODE_WIDTH], countTable),
  ]);
  const code = g.op("Add", [
    g.op("Min", [g.op("ReduceSum", [perToken, axisOne], [attr.int("keepdims", 0)]), one]),
    count,
  ]);

  const embed = g.floats("code_embedding", [CODE_WIDTH, width], codeEmbedding(width));
  g.op("MatMul", [perToken, embed], [], "hidden_states.0");
  for (let k = 1; k <= layers; k++) g.op("Identity", ["hidden_states.0"], [], `hidden_states.${k}`);
  g.op("Identity", ["hidden_states.0"], [], "last_hidden_state");
  g.op("MatMul", [code, embed], [], withProjection ? "text_embeds" : "pooler_output");

  if (withProjection) g.output("text_embeds", FLOAT, ["batch_size", width]);
  g.output("last_hidden_state", FLOAT, ["batch_size", "sequence_length", width]);
  if (!withProjection) g.output("pooler_output", FLOAT, ["batch_size", width]);
  for (let k = 0; k <= layers; k++) g.output(`hidden_states.${k}`, FLOAT, ["batch_size", "sequence_length", width]);
  return g;
}

/** Constant tables of the posterior computation, from the picture set (see `unetGraph`). */
function posteriorTables() {
  const S = PLACEMENTS.length;
  const P = SHAPE_PAIRS.length;
  const K = PICTURES.length;
  const F = CODE_WIDTH;
  // <x, μ_k> = Σ_c b_c·Σ_p x_cp + Σ_layers Σ_c d_c·Σ_p m_{s,p}·x_cp, with d = f − b: v·Cdot, v = [Σx (4), Σ m_s·x (4·S)].
  const cdot = new Float32Array((4 + 4 * S) * K);
  // ‖μ_k‖² = Σ_c b_c²·N + Σ_layers (2·b_c·d_c·Σm_s + d_c²·Σm_s²) + 2·d1_c·d2_c·Σ m_left·m_right: u·Q,
  // u = [N, Σm (S), Σm² (S), Σ m_left·m_right (P pairs)]. The last term is 0 on every grid (the shapes do not
  // touch), kept so the denoiser stays exact by construction.
  const q = new Float32Array((1 + 2 * S + P) * K);
  // E[x₀] = (w·B) ⊗ 1 + Σ_s (w·D)_s ⊗ m_s.
  const bmat = new Float32Array(K * 4);
  const dmat = new Float32Array(K * 4 * S);
  PICTURES.forEach((pic, k) => {
    const b = colourLatent(pic.background);
    const layers = pictureLayers(pic).map((l) => {
      const f = colourLatent(l.colour);
      return { s: l.placement, d: f.map((v, c) => v - b[c]!) };
    });
    for (let c = 0; c < 4; c++) {
      cdot[c * K + k] = b[c]!;
      bmat[k * 4 + c] = b[c]!;
      q[k] = (q[k] ?? 0) + b[c]! * b[c]!;
      for (const { s, d } of layers) {
        cdot[(4 + c * S + s) * K + k] = d[c]!;
        dmat[k * 4 * S + c * S + s] = d[c]!;
        q[(1 + s) * K + k] = q[(1 + s) * K + k]! + 2 * b[c]! * d[c]!;
        q[(1 + S + s) * K + k] = q[(1 + S + s) * K + k]! + d[c]! * d[c]!;
      }
      if (layers.length === 2) {
        const pair = SHAPE_PAIRS.findIndex((sp) => sp.left === layers[0]!.s && sp.right === layers[1]!.s);
        q[(1 + 2 * S + pair) * K + k] = q[(1 + 2 * S + pair) * K + k]! + 2 * layers[0]!.d[c]! * layers[1]!.d[c]!;
      }
    }
  });
  // Match tables (the rule of `matchingPictures`): which pictures each slot allows, each slot's group, and
  // which pictures a set slot rules out on its own.
  const G = CODE_GROUPS.length;
  const allow = new Float32Array(F * K);
  const misses = new Float32Array(F * K);
  const groupOf = new Float32Array(F * G);
  CODE_SLOTS.forEach((slot, f) => {
    groupOf[f * G + CODE_GROUPS.findIndex((g) => g.group === slot.group)] = 1;
    PICTURES.forEach((pic, k) => {
      if (slotAllows(f, pic)) allow[f * K + k] = 1;
      if (slotMisses(f, pic)) misses[f * K + k] = 1;
    });
  });
  return { S, P, K, G, cdot, q, bmat, dmat, allow, misses, groupOf };
}

/**
 * out_sample = (x − a·x̂₀)/s with x̂₀ the posterior mean. Per call the placement masks are resized to the
 * latent grid and everything else is products of [B, 4+4S] and [B, K] matrices (S = 24 placements,
 * K = 1,344 pictures), so the cost barely grows with the image size.
 */
function unetGraph(embedWidth: number, timeIdsWidth: number, detail: boolean): GraphBuilder {
  const g = new GraphBuilder("reference_unet");
  const sample = g.input("sample", FLOAT, ["batch_size", LATENT_CHANNELS, "height", "width"]);
  const timestep = g.input("timestep", FLOAT, ["steps"]);
  g.input("encoder_hidden_states", FLOAT, ["batch_size", "sequence_length", embedWidth]);
  const textEmbeds = g.input("text_embeds", FLOAT, ["batch_size", POOLED_WIDTH]);
  g.input("time_ids", FLOAT, ["batch_size", timeIdsWidth]);
  const { S, P, K, G, cdot, q, bmat, dmat, allow, misses, groupOf } = posteriorTables();

  // a and s at this timestep: log σ interpolated linearly in t over the training table (the inverse of
  // the schedulers' σ→t), ᾱ = 1/(1 + σ²).
  const train = trainSchedule(
    SDXL_SCHEDULER_CONFIG.beta_schedule as "scaled_linear",
    SDXL_SCHEDULER_CONFIG.beta_start,
    SDXL_SCHEDULER_CONFIG.beta_end,
    SDXL_SCHEDULER_CONFIG.num_train_timesteps,
  );
  const T = train.numTrainTimesteps;
  const logSigmas = g.floats("log_sigmas", [T], train.logSigmas);
  const t = g.op("ReduceMean", [timestep], [attr.int("keepdims", 1)]);
  const t1 = g.op("Reshape", [t, g.int64s("shape_one", [1], [1])]);
  const lo = g.op("Max", [
    g.op("Min", [g.op("Floor", [t1]), g.floats("t_max_lo", [], [T - 2])]),
    g.floats("t_min", [], [0]),
  ]);
  const frac = g.op("Sub", [t1, lo]);
  const loIndex = g.op("Cast", [lo], [attr.int("to", INT64)]);
  const l0 = g.op("Gather", [logSigmas, loIndex]);
  const l1 = g.op("Gather", [logSigmas, g.op("Add", [loIndex, g.int64s("one_i", [], [1])])]);
  const sigma = g.op("Exp", [g.op("Add", [l0, g.op("Mul", [frac, g.op("Sub", [l1, l0])])])]);
  const one = g.floats("one", [], [1]);
  const onePlus = g.op("Add", [one, g.op("Mul", [sigma, sigma])]);
  const a = g.op("Div", [one, g.op("Sqrt", [onePlus])]);
  const s = g.op("Mul", [sigma, a]);
  const invS2 = g.op("Div", [one, g.op("Mul", [s, s])]);
  const coefDot = g.op("Mul", [a, invS2]);
  const coefNorm = g.op("Mul", [g.op("Mul", [g.op("Mul", [a, a]), invS2]), g.floats("half", [], [0.5])]);

  // Masks on this latent grid: [S, N].
  const masks = new Float32Array(S * MASK_GRID * MASK_GRID);
  PLACEMENTS.forEach((p, i) => masks.set(drawMask(p, MASK_GRID, MASK_GRID, detail), i * MASK_GRID * MASK_GRID));
  const shape = g.op("Shape", [sample]);
  const hw = g.op("Slice", [shape, g.int64s("hw_from", [1], [2]), g.int64s("hw_to", [1], [4])]);
  const sizes = g.op("Concat", [g.int64s("mask_lead", [2], [S, 1]), hw], [attr.int("axis", 0)]);
  const resized = g.op(
    "Resize",
    [g.floats("masks", [S, 1, MASK_GRID, MASK_GRID], masks), "", "", sizes],
    [attr.string("mode", "linear")],
  );
  const m = g.op("Reshape", [resized, g.int64s("masks_flat", [2], [S, -1])]);
  const x = g.op("Reshape", [sample, g.int64s("sample_flat", [3], [0, LATENT_CHANNELS, -1])]);

  // <x, μ_k> for every picture.
  const axisOne = g.int64s("axis_one", [1], [1]);
  const axisTwo = g.int64s("axis_two", [1], [2]);
  const xSum = g.op("ReduceSum", [x, axisTwo], [attr.int("keepdims", 0)]);
  const xMask = g.op("Reshape", [
    g.op("MatMul", [x, g.op("Transpose", [m], [attr.ints("perm", [1, 0])])]),
    g.int64s("batch_flat", [2], [0, -1]),
  ]);
  const v = g.op("Concat", [xSum, xMask], [attr.int("axis", 1)]);
  const dot = g.op("MatMul", [v, g.floats("dot_table", [4 + 4 * S, K], cdot)]);

  // ‖μ_k‖² on this grid.
  const pixels = g.op("Cast", [g.op("ReduceProd", [hw], [attr.int("keepdims", 1)])], [attr.int("to", FLOAT)]);
  const m1 = g.op("ReduceSum", [m, axisOne], [attr.int("keepdims", 0)]);
  const m2 = g.op("ReduceSum", [g.op("Mul", [m, m]), axisOne], [attr.int("keepdims", 0)]);
  const left = g.op(
    "Gather",
    [
      m,
      g.int64s(
        "pair_left",
        [P],
        SHAPE_PAIRS.map((p) => p.left),
      ),
    ],
    [attr.int("axis", 0)],
  );
  const right = g.op(
    "Gather",
    [
      m,
      g.int64s(
        "pair_right",
        [P],
        SHAPE_PAIRS.map((p) => p.right),
      ),
    ],
    [attr.int("axis", 0)],
  );
  const overlap = g.op("ReduceSum", [g.op("Mul", [left, right]), axisOne], [attr.int("keepdims", 0)]);
  const u = g.op("Unsqueeze", [
    g.op("Concat", [pixels, m1, m2, overlap], [attr.int("axis", 0)]),
    g.int64s("axis_zero", [1], [0]),
  ]);
  const norm = g.op("MatMul", [u, g.floats("norm_table", [1 + 2 * S + P, K], q)]);

  // Log prior: 0 for pictures every mentioned code group allows and no set slot rules out, −1e30 otherwise.
  const code = g.op("Min", [
    g.op("Max", [
      g.op("Slice", [textEmbeds, g.int64s("code_from", [1], [0]), g.int64s("code_to", [1], [CODE_WIDTH]), axisOne]),
      g.floats("zero", [], [0]),
    ]),
    one,
  ]);
  const mentioned = g.op("MatMul", [code, g.floats("slot_group", [CODE_WIDTH, G], groupOf)]);
  const unmentioned = g.op("Unsqueeze", [
    g.op("Cast", [g.op("Less", [mentioned, g.floats("half_b", [], [0.5])])], [attr.int("to", FLOAT)]),
    axisTwo,
  ]);
  // allowed[b, g, k] = Σ_f code[b, f]·[f in g]·allow[f, k].
  const codeByGroup = g.op(
    "Transpose",
    [g.op("Mul", [g.op("Unsqueeze", [code, axisTwo]), g.floats("slot_group_b", [CODE_WIDTH, G], groupOf)])],
    [attr.ints("perm", [0, 2, 1])],
  );
  const allowed = g.op("MatMul", [codeByGroup, g.floats("slot_allows", [CODE_WIDTH, K], allow)]);
  const ok = g.op("Min", [g.op("Add", [allowed, unmentioned]), one]);
  const groupMisses = g.op("ReduceSum", [g.op("Sub", [one, ok]), axisOne], [attr.int("keepdims", 0)]);
  const slotMissCount = g.op("MatMul", [code, g.floats("slot_misses", [CODE_WIDTH, K], misses)]);
  const logPrior = g.op("Mul", [
    g.op("Add", [groupMisses, slotMissCount]),
    g.floats("unmatched_log_prior", [], [UNMATCHED_LOG_PRIOR]),
  ]);

  const logits = g.op("Add", [g.op("Sub", [g.op("Mul", [dot, coefDot]), g.op("Mul", [norm, coefNorm])]), logPrior]);
  const w = g.op("Softmax", [logits], [attr.int("axis", -1)]);

  const base = g.op("Unsqueeze", [g.op("MatMul", [w, g.floats("background_table", [K, 4], bmat)]), axisTwo]);
  const perMask = g.op("Reshape", [
    g.op("MatMul", [w, g.floats("shape_table", [K, 4 * S], dmat)]),
    g.int64s("per_mask_shape", [3], [0, LATENT_CHANNELS, S]),
  ]);
  const x0 = g.op("Add", [base, g.op("MatMul", [perMask, m])]);
  const eps = g.op("Div", [g.op("Sub", [x, g.op("Mul", [a, x0])]), s]);
  g.op("Reshape", [eps, shape], [], "out_sample");
  g.output("out_sample", FLOAT, ["batch_size", LATENT_CHANNELS, "height", "width"]);
  return g;
}

/** RGB = Aᵀ·z on the scaled latents (the pipeline divides by the scaling factor first), then ×8 nearest. */
function vaeDecoderGraph(): GraphBuilder {
  const g = new GraphBuilder("reference_vae_decoder");
  const latents = g.input("latent_sample", FLOAT, ["batch_size", LATENT_CHANNELS, "latent_height", "latent_width"]);
  const weight = new Float32Array(3 * LATENT_CHANNELS);
  for (let c = 0; c < 3; c++)
    for (let l = 0; l < LATENT_CHANNELS; l++)
      weight[c * LATENT_CHANNELS + l] = LATENT_FROM_RGB[l]![c]! * VAE_SCALING_FACTOR;
  const rgb = g.op("Conv", [latents, g.floats("rgb_from_latent", [3, LATENT_CHANNELS, 1, 1], weight)]);
  g.op(
    "Resize",
    [rgb, "", g.floats("upsample_scales", [4], [1, 1, 8, 8])],
    [
      attr.string("mode", "nearest"),
      attr.string("coordinate_transformation_mode", "asymmetric"),
      attr.string("nearest_mode", "floor"),
    ],
    "sample",
  );
  g.output("sample", FLOAT, ["batch_size", 3, "height", "width"]);
  return g;
}

/** The decoder's inverse: 8×8 mean, z = A·rgb / scaling factor; `latent_parameters` = mean ‖ logvar (−30). */
function vaeEncoderGraph(): GraphBuilder {
  const g = new GraphBuilder("reference_vae_encoder");
  const image = g.input("sample", FLOAT, ["batch_size", 3, "height", "width"]);
  const pooled = g.op("AveragePool", [image], [attr.ints("kernel_shape", [8, 8]), attr.ints("strides", [8, 8])]);
  const weight = new Float32Array(LATENT_CHANNELS * 3);
  for (let l = 0; l < LATENT_CHANNELS; l++)
    for (let c = 0; c < 3; c++) weight[l * 3 + c] = LATENT_FROM_RGB[l]![c]! / VAE_SCALING_FACTOR;
  const mean = g.op("Conv", [pooled, g.floats("latent_from_rgb", [LATENT_CHANNELS, 3, 1, 1], weight)]);
  const logvar = g.op("Add", [g.op("Mul", [mean, g.floats("zero", [], [0])]), g.floats("logvar", [], [-30])]);
  g.op("Concat", [mean, logvar], [attr.int("axis", 1)], "latent_parameters");
  g.output("latent_parameters", FLOAT, ["batch_size", 2 * LATENT_CHANNELS, "latent_height", "latent_width"]);
  return g;
}

function modelIndex(role: "base" | "refiner", detail: boolean): Record<string, unknown> {
  const shared = {
    feature_extractor: [null, null],
    image_encoder: [null, null],
    add_watermarker: null,
    scheduler: ["diffusers", "EulerDiscreteScheduler"],
    text_encoder_2: ["transformers", "CLIPTextModelWithProjection"],
    tokenizer_2: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "UNet2DConditionModel"],
    vae: ["diffusers", "AutoencoderKL"],
  };
  const index =
    role === "base"
      ? {
          _class_name: "StableDiffusionXLPipeline",
          force_zeros_for_empty_prompt: true,
          ...shared,
          text_encoder: ["transformers", "CLIPTextModel"],
          tokenizer: ["transformers", "CLIPTokenizer"],
        }
      : {
          _class_name: "StableDiffusionXLImg2ImgPipeline",
          force_zeros_for_empty_prompt: false,
          requires_aesthetics_score: true,
          ...shared,
          text_encoder: [null, null],
          tokenizer: [null, null],
        };
  return {
    ...index,
    [REFERENCE_MODEL_MARKER]: { version: REFERENCE_MODEL_VERSION, pictures: PICTURES.length, detail },
  };
}

/** Writes one reference model folder; the same options give byte-identical files. */
export function writeReferenceModel(dir: string, options: ReferenceModelOptions): void {
  const role = options.role;
  const detail = options.detail ?? role === "refiner";
  const embedWidth = role === "base" ? 2048 : 1280;
  const timeIdsWidth = role === "base" ? 6 : 5;
  fs.mkdirSync(dir, { recursive: true });
  writeJson(path.join(dir, "model_index.json"), modelIndex(role, detail));
  writeJson(path.join(dir, "scheduler", "scheduler_config.json"), SDXL_SCHEDULER_CONFIG);
  const encoderConfig = (width: number, layers: number, withProjection: boolean) => ({
    architectures: [withProjection ? "CLIPTextModelWithProjection" : "CLIPTextModel"],
    model_type: "clip_text_model",
    hidden_size: width,
    num_hidden_layers: layers,
    max_position_embeddings: SEQUENCE_LENGTH,
    projection_dim: withProjection ? POOLED_WIDTH : width,
    vocab_size: 49408,
    [REFERENCE_MODEL_MARKER]: { keywords: Object.keys(KEYWORDS) },
  });
  if (role === "base") {
    writeClipTokenizerFolder(path.join(dir, "tokenizer"), "clip-l");
    writeJson(path.join(dir, "text_encoder", "config.json"), encoderConfig(768, 12, false));
    writeOnnx(path.join(dir, "text_encoder"), textEncoderGraph(768, 12, false));
  }
  writeClipTokenizerFolder(path.join(dir, "tokenizer_2"), "open-clip-bigg");
  writeJson(path.join(dir, "text_encoder_2", "config.json"), encoderConfig(1280, 32, true));
  writeOnnx(path.join(dir, "text_encoder_2"), textEncoderGraph(1280, 32, true));
  writeJson(path.join(dir, "unet", "config.json"), {
    _class_name: "UNet2DConditionModel",
    addition_embed_type: "text_time",
    addition_time_embed_dim: 256,
    cross_attention_dim: embedWidth,
    in_channels: LATENT_CHANNELS,
    out_channels: LATENT_CHANNELS,
    projection_class_embeddings_input_dim: POOLED_WIDTH + 256 * timeIdsWidth,
    sample_size: 128,
    [REFERENCE_MODEL_MARKER]: { detail },
  });
  writeOnnx(path.join(dir, "unet"), unetGraph(embedWidth, timeIdsWidth, detail));
  const vaeConfig = {
    _class_name: "AutoencoderKL",
    latent_channels: LATENT_CHANNELS,
    in_channels: 3,
    out_channels: 3,
    sample_size: 1024,
    scaling_factor: VAE_SCALING_FACTOR,
    force_upcast: true,
  };
  writeJson(path.join(dir, "vae_decoder", "config.json"), vaeConfig);
  writeOnnx(path.join(dir, "vae_decoder"), vaeDecoderGraph());
  writeJson(path.join(dir, "vae_encoder", "config.json"), vaeConfig);
  writeOnnx(path.join(dir, "vae_encoder"), vaeEncoderGraph());
}

/** Writes `rootDir/base` and `rootDir/refiner`; returns their paths. */
export function writeReferenceModels(
  rootDir: string,
  options: { refinerDetail?: boolean } = {},
): { base: string; refiner: string } {
  const base = path.join(rootDir, "base");
  const refiner = path.join(rootDir, "refiner");
  writeReferenceModel(base, { role: "base" });
  writeReferenceModel(refiner, { role: "refiner", detail: options.refinerDetail ?? true });
  return { base, refiner };
}
