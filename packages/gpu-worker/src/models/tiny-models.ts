import fs from "node:fs";
import path from "node:path";

import type { onnx as OnnxTypes } from "onnx-proto";
import onnxProto from "onnx-proto";

import { writeClipTokenizerFolder } from "../engine/tokenizer/clip-vocab.js";
import {
  SDXL_BIGG_WIDTH,
  SDXL_CLIP_L_WIDTH,
  SDXL_LATENT_CHANNELS,
  SDXL_POOLED_WIDTH,
  SDXL_ROLE_WIDTHS,
  SDXL_TOKEN_LENGTH,
  SDXL_VAE_FACTOR,
  SDXL_VAE_SCALING_FACTOR,
} from "./sdxl-spec.js";

/**
 * Tiny SDXL models in the diffusers/optimum ONNX folder layout, for tests and for running Kiln
 * without real weights. Names, dtypes, ranks and widths are the real ones (the UNet sees 2048- or
 * 1280-wide token embeddings, 1280-wide pooled embeddings and 6 or 5 time ids); the compute is a
 * handful of cheap ops, so outputs are structured noise. Every input reaches the outputs, so tests
 * can tell when the engine drops or swaps one.
 */

const { onnx } = onnxProto;
type NodeProto = OnnxTypes.INodeProto;
type ValueInfoProto = OnnxTypes.IValueInfoProto;
type AttributeProto = OnnxTypes.IAttributeProto;
type TensorProto = OnnxTypes.ITensorProto;

export type TinyModelRole = "base" | "refiner";

export interface TinyModelOptions {
  role: TinyModelRole;
  seed?: number;
  /** dtype of the UNet's `timestep` input; exports differ (optimum: float32; older: int64; fp16 exports: float16). */
  timestepDtype?: "float32" | "int64" | "float16";
  /** 1 → shape [steps] (optimum); 0 → a scalar, as some exports have. */
  timestepRank?: 0 | 1;
  inputIdsDtype?: "int32" | "int64";
  /**
   * Keep the UNet's weights in `unet/model.onnx_data` beside `unet/model.onnx`, as the official
   * SDXL ONNX export does (its UNet is over the 2 GB protobuf limit), so loaders exercise that path.
   * Default true.
   */
  unetExternalData?: boolean;
  /** The VAE decoder outputs NaN, as the stock SDXL VAE does when it overflows in fp16 (tests of the NaN guard). */
  vaeDecoderEmitsNaN?: boolean;
  /**
   * 9: an inpainting UNet (SDXL inpainting 0.1 layout: `sample` takes latents ‖ mask ‖ masked-image latents).
   * Default 4.
   */
  unetInChannels?: 4 | 9;
}

export const DEFAULT_TINY_SEED = 1;

/** Marker in model_index.json: outputs of this folder are noise from a test model. */
export const TINY_MODEL_MARKER = "_kiln_tiny";

const TOKEN_TABLE_SIZE = 2039;
const TOKEN_FEATURES = 16;
const CLIP_L = { width: SDXL_CLIP_L_WIDTH, layers: 12 } as const;
const OPEN_CLIP_BIGG = { width: SDXL_BIGG_WIDTH, layers: 32 } as const;

const FLOAT = 1;
const INT32 = 6;
const INT64 = 7;
const FLOAT16 = 10;

const ELEM_TYPE = { float32: FLOAT, float16: FLOAT16, int32: INT32, int64: INT64 } as const;

// ---------------------------------------------------------------------------------------------
// Deterministic weights: our own PRNG (mulberry32) and uniform draws only, because Math.random is
// unseeded and transcendental functions may differ in the last bit between platforms.

function hashLabel(seed: number, label: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < label.length; i++) {
    h ^= label.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

class Weights {
  private state: number;
  constructor(seed: number, label: string) {
    this.state = hashLabel(seed, label);
  }

  private next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** n draws from U(center − scale, center + scale). */
  uniform(n: number, scale: number, center = 0): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = center + scale * (2 * this.next() - 1);
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// A minimal ONNX graph builder over onnx-proto.

type Dim = number | string;

export const attr = {
  int: (name: string, i: number): AttributeProto => ({ name, type: onnx.AttributeProto.AttributeType.INT, i }),
  float: (name: string, f: number): AttributeProto => ({ name, type: onnx.AttributeProto.AttributeType.FLOAT, f }),
  ints: (name: string, ints: number[]): AttributeProto => ({
    name,
    type: onnx.AttributeProto.AttributeType.INTS,
    ints,
  }),
  string: (name: string, s: string): AttributeProto => ({
    name,
    type: onnx.AttributeProto.AttributeType.STRING,
    s: new TextEncoder().encode(s),
  }),
  /** A STRING attribute holding raw bytes (ONNX strings are byte strings), e.g. a serialized engine. */
  bytes: (name: string, s: Uint8Array): AttributeProto => ({
    name,
    type: onnx.AttributeProto.AttributeType.STRING,
    s,
  }),
};

/** Model-level fields a graph other than a tiny model needs (an EPContext wrapper imports `com.microsoft`). */
export interface ModelMeta {
  irVersion?: number;
  producerName?: string;
  producerVersion?: string;
  opsetImport?: { domain: string; version: number }[];
}

interface Initializer {
  name: string;
  dims: number[];
  dataType: number;
  bytes: Uint8Array;
}

/** Initializers at least this large go to the external data file when one is asked for (optimum uses 1 KiB too). */
const EXTERNAL_DATA_THRESHOLD = 1024;
const EXTERNAL_DATA_ALIGNMENT = 64;

export class GraphBuilder {
  private readonly nodes: NodeProto[] = [];
  private readonly initializers: Initializer[] = [];
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private counter = 0;

  constructor(private readonly name: string) {}

  input(name: string, elemType: number, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  output(name: string, elemType: number, dims: Dim[]): void {
    this.outputs.push(valueInfo(name, elemType, dims));
  }

  floats(name: string, dims: number[], values: ArrayLike<number>): string {
    const bytes = new Uint8Array(values.length * 4);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i], true);
    return this.addInitializer({ name, dims, dataType: FLOAT, bytes }, values.length);
  }

  int64s(name: string, dims: number[], values: number[]): string {
    const bytes = new Uint8Array(values.length * 8);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < values.length; i++) view.setBigInt64(i * 8, BigInt(values[i]), true);
    return this.addInitializer({ name, dims, dataType: INT64, bytes }, values.length);
  }

  private addInitializer(init: Initializer, count: number): string {
    const expected = init.dims.reduce((a, b) => a * b, 1);
    if (expected !== count)
      throw new Error(`initializer ${init.name}: dims ${init.dims} need ${expected} values, got ${count}`);
    this.initializers.push(init);
    return init.name;
  }

  /** Adds a node in another operator domain with several outputs (e.g. `com.microsoft` `EPContext`). */
  domainOp(
    domain: string,
    opType: string,
    name: string,
    inputs: string[],
    outputs: string[],
    attributes: AttributeProto[],
  ): void {
    this.nodes.push({ name, opType, domain, input: inputs, output: outputs, attribute: attributes });
  }

  /** Adds a node and returns the name of its (first) output. */
  op(opType: string, inputs: string[], attributes: AttributeProto[] = [], output?: string): string {
    const out = output ?? `${opType.toLowerCase()}_${this.counter}`;
    this.nodes.push({ name: `${opType}_${this.counter}`, opType, input: inputs, output: [out], attribute: attributes });
    this.counter += 1;
    return out;
  }

  /**
   * Serializes the model. With `externalDataFile`, large initializers are stored in that file
   * (relative to the model) as the ONNX external-data convention describes.
   */
  encode(externalDataFile?: string, meta: ModelMeta = {}): { model: Uint8Array; externalData?: Uint8Array } {
    const chunks: Uint8Array[] = [];
    let offset = 0;
    const tensors: TensorProto[] = this.initializers.map((init) => {
      const base: TensorProto = { name: init.name, dims: init.dims, dataType: init.dataType };
      if (!externalDataFile || init.bytes.length < EXTERNAL_DATA_THRESHOLD) return { ...base, rawData: init.bytes };
      const padding = (EXTERNAL_DATA_ALIGNMENT - (offset % EXTERNAL_DATA_ALIGNMENT)) % EXTERNAL_DATA_ALIGNMENT;
      if (padding > 0) chunks.push(new Uint8Array(padding));
      offset += padding;
      chunks.push(init.bytes);
      const entry: TensorProto = {
        ...base,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: "location", value: externalDataFile },
          { key: "offset", value: String(offset) },
          { key: "length", value: String(init.bytes.length) },
        ],
      };
      offset += init.bytes.length;
      return entry;
    });

    const model = {
      irVersion: meta.irVersion ?? 8,
      producerName: meta.producerName ?? "kiln-tiny-models",
      producerVersion: meta.producerVersion ?? "1",
      opsetImport: meta.opsetImport ?? [{ domain: "", version: 17 }],
      graph: { name: this.name, node: this.nodes, initializer: tensors, input: this.inputs, output: this.outputs },
    };
    const problem = onnx.ModelProto.verify(model);
    if (problem) throw new Error(`ONNX model ${this.name} is not a valid ModelProto: ${problem}`);
    const encoded = onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
    return externalDataFile ? { model: encoded, externalData: concat(chunks, offset) } : { model: encoded };
  }
}

function valueInfo(name: string, elemType: number, dims: Dim[]): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Component graphs.

interface TextEncoderSpec {
  width: number;
  layers: number;
  /** text_encoder_2 (CLIPTextModelWithProjection) outputs `text_embeds`; text_encoder outputs `pooler_output`. */
  withProjection: boolean;
  inputIdsDtype: "int32" | "int64";
  weights: Weights;
}

/**
 * Token + position lookup, a causal running mean (so a token's features depend on the tokens before
 * it, as with CLIP's causal attention), then `layers` cheap elementwise layers whose outputs are
 * `hidden_states.1…N`. `last_hidden_state` is a LayerNorm of the last one (CLIP's final_layer_norm),
 * so it differs from every hidden state. The pooled output is `last_hidden_state` at the position of
 * the largest token id — the EOS token, as in transformers' CLIP.
 */
function textEncoderGraph(spec: TextEncoderSpec): GraphBuilder {
  const { width: d, layers, weights: w } = spec;
  const g = new GraphBuilder(spec.withProjection ? "tiny_clip_text_model_with_projection" : "tiny_clip_text_model");
  const ids = g.input("input_ids", ELEM_TYPE[spec.inputIdsDtype], ["batch_size", "sequence_length"]);

  const ids64 = g.op("Cast", [ids], [attr.int("to", INT64)]);
  const slot = g.op("Mod", [ids64, g.int64s("token_table_size", [], [TOKEN_TABLE_SIZE])]);
  const tokens = g.op("Gather", [
    g.floats("token_embedding", [TOKEN_TABLE_SIZE, TOKEN_FEATURES], w.uniform(TOKEN_TABLE_SIZE * TOKEN_FEATURES, 1)),
    slot,
  ]);
  const embedded = g.op("Add", [
    tokens,
    g.floats(
      "position_embedding",
      [SDXL_TOKEN_LENGTH, TOKEN_FEATURES],
      w.uniform(SDXL_TOKEN_LENGTH * TOKEN_FEATURES, 0.5),
    ),
  ]);
  const runningSum = g.op("CumSum", [embedded, g.int64s("sequence_axis", [], [1])]);
  const inversePosition = Array.from({ length: SDXL_TOKEN_LENGTH }, (_, i) => 1 / (i + 1));
  const causalMean = g.op("Mul", [runningSum, g.floats("inverse_position", [SDXL_TOKEN_LENGTH, 1], inversePosition)]);
  const context = g.op("MatMul", [
    causalMean,
    g.floats("context_proj", [TOKEN_FEATURES, d], w.uniform(TOKEN_FEATURES * d, 0.5)),
  ]);

  let hidden = g.op(
    "MatMul",
    [embedded, g.floats("embed_proj", [TOKEN_FEATURES, d], w.uniform(TOKEN_FEATURES * d, 0.3))],
    [],
    "hidden_states.0",
  );
  for (let k = 0; k < layers; k++) {
    const [gain] = w.uniform(1, 0.2, 0.8);
    const [mix] = w.uniform(1, 0.2, 0.4);
    const scaled = g.op("Mul", [hidden, g.floats(`layer${k}_gain`, [], [gain])]);
    const mixed = g.op("Mul", [context, g.floats(`layer${k}_mix`, [], [mix])]);
    const summed = g.op("Add", [g.op("Add", [scaled, mixed]), g.floats(`layer${k}_bias`, [d], w.uniform(d, 0.3))]);
    hidden = g.op("Tanh", [summed], [], `hidden_states.${k + 1}`);
  }
  const last = g.op(
    "LayerNormalization",
    [hidden, g.floats("final_ln_scale", [d], w.uniform(d, 0.1, 1)), g.floats("final_ln_bias", [d], w.uniform(d, 0.05))],
    [attr.int("axis", -1), attr.float("epsilon", 1e-5)],
    "last_hidden_state",
  );

  const eosPosition = g.op(
    "ArgMax",
    [g.op("Cast", [ids64], [attr.int("to", FLOAT)])],
    [attr.int("axis", 1), attr.int("keepdims", 0)],
  );
  const sequenceLength = g.op("Gather", [g.op("Shape", [ids]), g.int64s("sequence_dim", [], [1])]);
  const pick = g.op("OneHot", [eosPosition, sequenceLength, g.floats("one_hot_values", [2], [0, 1])]);
  const axisOne = g.int64s("axis_one", [1], [1]);
  const pooledName = spec.withProjection ? undefined : "pooler_output";
  const pooled = g.op("Squeeze", [g.op("MatMul", [g.op("Unsqueeze", [pick, axisOne]), last]), axisOne], [], pooledName);

  if (spec.withProjection) {
    const down = g.op("MatMul", [
      pooled,
      g.floats("projection_down", [d, TOKEN_FEATURES], w.uniform(d * TOKEN_FEATURES, 0.1)),
    ]);
    const up = g.op("MatMul", [
      g.op("Tanh", [down]),
      g.floats("projection_up", [TOKEN_FEATURES, d], w.uniform(TOKEN_FEATURES * d, 0.3)),
    ]);
    g.op("Add", [pooled, up], [], "text_embeds");
    g.output("text_embeds", FLOAT, ["batch_size", d]);
    g.output("last_hidden_state", FLOAT, ["batch_size", "sequence_length", d]);
  } else {
    g.output("last_hidden_state", FLOAT, ["batch_size", "sequence_length", d]);
    g.output("pooler_output", FLOAT, ["batch_size", d]);
  }
  for (let k = 0; k <= layers; k++) g.output(`hidden_states.${k}`, FLOAT, ["batch_size", "sequence_length", d]);
  return g;
}

interface UnetSpec {
  embedWidth: number;
  timeIdsWidth: number;
  timestepDtype: "float32" | "int64" | "float16";
  timestepRank: 0 | 1;
  /** Channels of `sample`: 4, or 9 for an inpainting UNet. */
  inChannels?: number;
  weights: Weights;
}

/**
 * out = 0.8·tanh(conv3x3(sample)) + a per-channel bias from the token-mean of
 * `encoder_hidden_states`, `text_embeds`, a sinusoid of `time_ids` and a sinusoid of `timestep`.
 * Bounded by ~1.6, like an epsilon prediction, so a full Euler loop stays finite.
 */
function unetGraph(spec: UnetSpec): GraphBuilder {
  const { embedWidth: e, timeIdsWidth: n, weights: w } = spec;
  const c = SDXL_LATENT_CHANNELS;
  const cin = spec.inChannels ?? SDXL_LATENT_CHANNELS;
  const g = new GraphBuilder("tiny_unet");
  const sample = g.input("sample", FLOAT, ["batch_size", cin, "height", "width"]);
  const timestep = g.input("timestep", ELEM_TYPE[spec.timestepDtype], spec.timestepRank === 1 ? ["steps"] : []);
  const tokens = g.input("encoder_hidden_states", FLOAT, ["batch_size", "sequence_length", e]);
  const pooled = g.input("text_embeds", FLOAT, ["batch_size", SDXL_POOLED_WIDTH]);
  const timeIds = g.input("time_ids", FLOAT, ["batch_size", n]);

  const conv = g.op(
    "Conv",
    [
      sample,
      g.floats("conv_weight", [c, cin, 3, 3], w.uniform(c * cin * 9, 0.35)),
      g.floats("conv_bias", [c], w.uniform(c, 0.1)),
    ],
    [attr.ints("kernel_shape", [3, 3]), attr.ints("pads", [1, 1, 1, 1])],
  );
  const spatial = g.op("Mul", [g.op("Tanh", [conv]), g.floats("spatial_gain", [], [0.8])]);

  const tokenMean = g.op("ReduceMean", [tokens], [attr.ints("axes", [1]), attr.int("keepdims", 0)]);
  const fromTokens = g.op("MatMul", [tokenMean, g.floats("token_proj", [e, c], w.uniform(e * c, 4 / Math.sqrt(e)))]);
  const fromPooled = g.op("MatMul", [
    pooled,
    g.floats("pooled_proj", [SDXL_POOLED_WIDTH, c], w.uniform(SDXL_POOLED_WIDTH * c, 2 / Math.sqrt(SDXL_POOLED_WIDTH))),
  ]);
  // Time ids span 0…4096 (sizes) and 2.5…6 (aesthetic scores): slow frequencies plus a phase keep
  // every value, zero crop offsets included, visible through the sinusoid.
  const idsWave = g.op("Sin", [
    g.op("Add", [
      g.op("Mul", [timeIds, g.floats("time_ids_freq", [n], w.uniform(n, 0.004, 0.006))]),
      g.floats("time_ids_phase", [n], w.uniform(n, 1.5)),
    ]),
  ]);
  const fromTimeIds = g.op("MatMul", [idsWave, g.floats("time_ids_proj", [n, c], w.uniform(n * c, 0.8))]);
  const condition = g.op("Tanh", [g.op("Add", [g.op("Add", [fromTokens, fromPooled]), fromTimeIds])]);
  const conditionBias = g.op("Mul", [condition, g.floats("condition_gain", [], [0.5])]);

  const t = spec.timestepDtype === "float32" ? timestep : g.op("Cast", [timestep], [attr.int("to", FLOAT)]);
  const tColumn = g.op("Reshape", [t, g.int64s("column_shape", [2], [-1, 1])]);
  const tWave = g.op("Sin", [
    g.op("Add", [
      g.op("MatMul", [tColumn, g.floats("timestep_freq", [1, c], w.uniform(c, 0.002, 0.004))]),
      g.floats("timestep_phase", [c], w.uniform(c, 1.5)),
    ]),
  ]);
  const timeBias = g.op("Mul", [tWave, g.floats("timestep_gain", [], [0.3])]);

  const bias = g.op("Unsqueeze", [g.op("Add", [conditionBias, timeBias]), g.int64s("spatial_axes", [2], [2, 3])]);
  g.op("Add", [spatial, bias], [], "out_sample");
  g.output("out_sample", FLOAT, ["batch_size", c, "height", "width"]);
  return g;
}

/** 1×1 conv 4→3 (scaled for latents divided by the 0.13025 scaling factor), linear ×8 upsampling, 3×3 conv, tanh. */
function vaeDecoderGraph(w: Weights, emitNaN = false): GraphBuilder {
  const g = new GraphBuilder("tiny_vae_decoder");
  const latents = g.input("latent_sample", FLOAT, [
    "batch_size",
    SDXL_LATENT_CHANNELS,
    "latent_height",
    "latent_width",
  ]);
  const mixed = g.op("Conv", [
    latents,
    g.floats(
      "mix_weight",
      [3, SDXL_LATENT_CHANNELS, 1, 1],
      w.uniform(3 * SDXL_LATENT_CHANNELS, 0.6 * SDXL_VAE_SCALING_FACTOR),
    ),
    g.floats("mix_bias", [3], w.uniform(3, 0.1)),
  ]);
  const up = g.op(
    "Resize",
    [mixed, "", g.floats("upsample_scales", [4], [1, 1, SDXL_VAE_FACTOR, SDXL_VAE_FACTOR])],
    [attr.string("mode", "linear")],
  );
  const smooth = g.op(
    "Conv",
    [
      up,
      g.floats("smooth_weight", [3, 3, 3, 3], w.uniform(81, 0.25)),
      g.floats("smooth_bias", [3], w.uniform(3, 0.05)),
    ],
    [attr.ints("kernel_shape", [3, 3]), attr.ints("pads", [1, 1, 1, 1])],
  );
  if (emitNaN) g.op("Add", [g.op("Tanh", [smooth]), g.floats("overflow", [], [NaN])], [], "sample");
  else g.op("Tanh", [smooth], [], "sample");
  g.output("sample", FLOAT, ["batch_size", 3, "height", "width"]);
  return g;
}

/**
 * 8×8 average pooling and a 1×1 conv 3→8: the shape of SDXL's encoder as optimum exports it, whose
 * `latent_parameters` are the diagonal Gaussian's mean ‖ logvar on the channel axis. The mean is scaled up by
 * 1/0.13025 (as real latents are) and the logvar sits near −6, so a sampled latent is mostly its mean.
 */
function vaeEncoderGraph(w: Weights): GraphBuilder {
  const g = new GraphBuilder("tiny_vae_encoder");
  const image = g.input("sample", FLOAT, ["batch_size", 3, "height", "width"]);
  const pooled = g.op(
    "AveragePool",
    [image],
    [
      attr.ints("kernel_shape", [SDXL_VAE_FACTOR, SDXL_VAE_FACTOR]),
      attr.ints("strides", [SDXL_VAE_FACTOR, SDXL_VAE_FACTOR]),
    ],
  );
  const c = SDXL_LATENT_CHANNELS;
  const meanWeights = w.uniform(3 * c, 0.4 / SDXL_VAE_SCALING_FACTOR);
  const logvarWeights = w.uniform(3 * c, 0.5);
  const meanBias = w.uniform(c, 0.1 / SDXL_VAE_SCALING_FACTOR);
  const logvarBias = w.uniform(c, 0.5, -6);
  g.op(
    "Conv",
    [
      pooled,
      g.floats("proj_weight", [2 * c, 3, 1, 1], [...meanWeights, ...logvarWeights]),
      g.floats("proj_bias", [2 * c], [...meanBias, ...logvarBias]),
    ],
    [],
    "latent_parameters",
  );
  g.output("latent_parameters", FLOAT, ["batch_size", 2 * c, "latent_height", "latent_width"]);
  return g;
}

// ---------------------------------------------------------------------------------------------
// Folder contents.

/** SDXL 1.0's `scheduler/scheduler_config.json` (base and refiner ship the same one). */
export const SDXL_SCHEDULER_CONFIG = {
  _class_name: "EulerDiscreteScheduler",
  _diffusers_version: "0.19.0.dev0",
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  clip_sample: false,
  interpolation_type: "linear",
  num_train_timesteps: 1000,
  prediction_type: "epsilon",
  sample_max_value: 1.0,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  timestep_spacing: "leading",
  trained_betas: null,
  use_karras_sigmas: false,
};

function modelIndex(role: TinyModelRole): Record<string, unknown> {
  const common = { feature_extractor: [null, null], image_encoder: [null, null], add_watermarker: null };
  const shared = {
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
          _diffusers_version: "0.19.0.dev0",
          force_zeros_for_empty_prompt: true,
          ...common,
          ...shared,
          text_encoder: ["transformers", "CLIPTextModel"],
          tokenizer: ["transformers", "CLIPTokenizer"],
        }
      : {
          _class_name: "StableDiffusionXLImg2ImgPipeline",
          _diffusers_version: "0.19.0.dev0",
          force_zeros_for_empty_prompt: false,
          requires_aesthetics_score: true,
          ...common,
          ...shared,
          text_encoder: [null, null],
          tokenizer: [null, null],
        };
  return { ...index, [TINY_MODEL_MARKER]: true };
}

function textEncoderConfig(spec: { width: number; layers: number; withProjection: boolean }): Record<string, unknown> {
  return {
    architectures: [spec.withProjection ? "CLIPTextModelWithProjection" : "CLIPTextModel"],
    model_type: "clip_text_model",
    hidden_size: spec.width,
    num_hidden_layers: spec.layers,
    max_position_embeddings: SDXL_TOKEN_LENGTH,
    projection_dim: spec.withProjection ? SDXL_POOLED_WIDTH : spec.width,
    vocab_size: 49408,
    [TINY_MODEL_MARKER]: true,
  };
}

function unetConfig(embedWidth: number, timeIdsWidth: number, inChannels: number): Record<string, unknown> {
  return {
    _class_name: "UNet2DConditionModel",
    addition_embed_type: "text_time",
    addition_time_embed_dim: 256,
    cross_attention_dim: embedWidth,
    in_channels: inChannels,
    out_channels: SDXL_LATENT_CHANNELS,
    projection_class_embeddings_input_dim: SDXL_POOLED_WIDTH + 256 * timeIdsWidth,
    sample_size: 128,
    [TINY_MODEL_MARKER]: true,
  };
}

const VAE_CONFIG = {
  _class_name: "AutoencoderKL",
  latent_channels: SDXL_LATENT_CHANNELS,
  in_channels: 3,
  out_channels: 3,
  sample_size: 1024,
  scaling_factor: SDXL_VAE_SCALING_FACTOR,
  force_upcast: true,
  [TINY_MODEL_MARKER]: true,
};

export function writeJson(file: string, value: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}

export function writeOnnx(dir: string, graph: GraphBuilder, externalData = false): void {
  fs.mkdirSync(dir, { recursive: true });
  const dataName = "model.onnx_data";
  const { model, externalData: data } = graph.encode(externalData ? dataName : undefined);
  fs.writeFileSync(path.join(dir, "model.onnx"), model);
  if (data) fs.writeFileSync(path.join(dir, dataName), data);
}

/**
 * Writes a tiny SDXL model folder (base or refiner) to `dir`. The same options give byte-identical
 * files. The base's and refiner's text_encoder_2 and VAE share weights, as the real pair does; the
 * UNets differ.
 */
export function writeTinyModel(dir: string, options: TinyModelOptions): void {
  const seed = options.seed ?? DEFAULT_TINY_SEED;
  const role = options.role;
  const inputIdsDtype = options.inputIdsDtype ?? "int32";
  const { embedWidth, timeIdsWidth } = SDXL_ROLE_WIDTHS[role];

  fs.mkdirSync(dir, { recursive: true });
  writeJson(path.join(dir, "model_index.json"), modelIndex(role));
  writeJson(path.join(dir, "scheduler", "scheduler_config.json"), SDXL_SCHEDULER_CONFIG);

  if (role === "base") {
    writeClipTokenizerFolder(path.join(dir, "tokenizer"), "clip-l");
    const te1 = { ...CLIP_L, withProjection: false };
    writeJson(path.join(dir, "text_encoder", "config.json"), textEncoderConfig(te1));
    writeOnnx(
      path.join(dir, "text_encoder"),
      textEncoderGraph({ ...te1, inputIdsDtype, weights: new Weights(seed, "text_encoder") }),
    );
  }
  writeClipTokenizerFolder(path.join(dir, "tokenizer_2"), "open-clip-bigg");
  const te2 = { ...OPEN_CLIP_BIGG, withProjection: true };
  writeJson(path.join(dir, "text_encoder_2", "config.json"), textEncoderConfig(te2));
  writeOnnx(
    path.join(dir, "text_encoder_2"),
    textEncoderGraph({ ...te2, inputIdsDtype, weights: new Weights(seed, "text_encoder_2") }),
  );

  const inChannels = options.unetInChannels ?? SDXL_LATENT_CHANNELS;
  writeJson(path.join(dir, "unet", "config.json"), unetConfig(embedWidth, timeIdsWidth, inChannels));
  writeOnnx(
    path.join(dir, "unet"),
    unetGraph({
      embedWidth,
      timeIdsWidth,
      timestepDtype: options.timestepDtype ?? "float32",
      timestepRank: options.timestepRank ?? 1,
      inChannels,
      weights: new Weights(seed, inChannels === SDXL_LATENT_CHANNELS ? `unet_${role}` : `unet_${role}_inpaint`),
    }),
    options.unetExternalData ?? true,
  );

  writeJson(path.join(dir, "vae_decoder", "config.json"), VAE_CONFIG);
  writeOnnx(
    path.join(dir, "vae_decoder"),
    vaeDecoderGraph(new Weights(seed, "vae_decoder"), options.vaeDecoderEmitsNaN),
  );
  writeJson(path.join(dir, "vae_encoder", "config.json"), VAE_CONFIG);
  writeOnnx(path.join(dir, "vae_encoder"), vaeEncoderGraph(new Weights(seed, "vae_encoder")));
}

/** Writes `rootDir/base` and `rootDir/refiner`; returns their paths. */
export function writeTinyModels(rootDir: string, seed = DEFAULT_TINY_SEED): { base: string; refiner: string } {
  const base = path.join(rootDir, "base");
  const refiner = path.join(rootDir, "refiner");
  writeTinyModel(base, { role: "base", seed });
  writeTinyModel(refiner, { role: "refiner", seed });
  return { base, refiner };
}
