import fs from "node:fs";
import path from "node:path";

import { describeError, KilnError } from "@kiln/shared";
import onnxProto from "onnx-proto";

import {
  createSession,
  type ExecutionProviderName,
  type IoSpec,
  type LoadedSession,
  type SessionLogger,
  type SessionOpener,
} from "../onnx/session-factory.js";
import {
  SDXL_BIGG_WIDTH,
  SDXL_CLIP_L_WIDTH,
  SDXL_INPAINT_CHANNELS,
  SDXL_LATENT_CHANNELS,
  SDXL_POOLED_WIDTH,
  SDXL_ROLE_WIDTHS,
  SDXL_TOKEN_LENGTH,
  type SdxlEmbedWidth,
  type SdxlTimeIdsWidth,
} from "./sdxl-spec.js";
import { TINY_MODEL_MARKER } from "./tiny-models.js";

/**
 * Loads an SDXL model folder in the diffusers/optimum ONNX layout and checks, before any request
 * arrives, that it is what the role needs: every file present, every session's input and output
 * names, dtypes and widths as the engine will feed them. Whatever is wrong is reported with the file
 * and the expectation, so a misconfigured worker fails at start rather than on its first job.
 */

const { onnx } = onnxProto;

export type ModelRole = "base" | "refiner";

export interface TextEncoderInfo {
  inputIdsDtype: "int32" | "int64";
  /** Number of `hidden_states.*` outputs (embeddings + one per layer: 13 for CLIP-L, 33 for bigG). */
  hiddenStateCount: number;
  /** The output SDXL uses as per-token embeddings (`hidden_states[-2]`). */
  penultimateOutput: string;
  width: number;
}

export interface UnetInfo {
  embedWidth: SdxlEmbedWidth;
  timeIdsWidth: SdxlTimeIdsWidth;
  timestepDtype: "float32" | "float16" | "int64";
  /** 1 → feed shape [1]; 0 → feed a scalar. */
  timestepRank: 0 | 1;
  /** dtype of `sample`, `encoder_hidden_states`, `text_embeds` and `time_ids` (fp16 exports take float16). */
  floatDtype: "float32" | "float16";
  /** Channels of `sample`: 4, or 9 for an inpainting UNet (latents ‖ mask ‖ masked-image latents). */
  inChannels: 4 | 9;
}

export interface ModelFolder {
  dir: string;
  role: ModelRole;
  /** A Kiln tiny test model: its images are noise. */
  isTinyTestModel: boolean;
  index: Record<string, unknown>;
  /** `scheduler/scheduler_config.json` as read (checked to be JSON, not interpreted here). */
  schedulerConfigJson: string;
  tokenizerDirs: { tokenizer?: string; tokenizer2: string };
  sessions: {
    textEncoder?: LoadedSession;
    textEncoder2: LoadedSession;
    unet: LoadedSession;
    vaeDecoder: LoadedSession;
    /** Present when the folder ships `vae_encoder/` (needed by img2img, inpaint and outpaint). */
    vaeEncoder?: LoadedSession;
  };
  unet: UnetInfo;
  textEncoders: { textEncoder?: TextEncoderInfo; textEncoder2: TextEncoderInfo };
  /** dtype of `vae_decoder`'s `latent_sample`. */
  vaeDecoderDtype: "float32" | "float16";
  /** Releases every session. */
  release(): Promise<void>;
}

export interface LoadModelFolderOptions {
  providers: readonly ExecutionProviderName[];
  deviceId?: number;
  logger?: SessionLogger;
  intraOpThreads?: number;
  /** Opens the UNet and VAE sessions (the GPU's heavy calls): a device thread's `open`; default `createSession` here. */
  openGpuSession?: SessionOpener;
  /** Opens the text encoders: a second device thread's `open`; default `createSession` here. */
  openEncoderSession?: SessionOpener;
}

const ROLE_SHAPE = {
  base: { ...SDXL_ROLE_WIDTHS.base, setting: "KILN_MODEL_DIR" },
  refiner: { ...SDXL_ROLE_WIDTHS.refiner, setting: "KILN_REFINER_DIR" },
} as const;
/** Graphs up to this size are decoded to check their external data; bigger ones hold their weights inline. */
const DECODE_LIMIT_BYTES = 256 * 1024 * 1024;

const UNET_INPUTS = ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"];

function invalid(message: string, details?: Record<string, unknown>): KilnError {
  return new KilnError("model_folder_invalid", message, { details, retryable: false });
}

function otherRoleHint(role: ModelRole): string {
  return role === "base"
    ? `this looks like a refiner; set it as ${ROLE_SHAPE.refiner.setting}`
    : `this looks like a base model; set it as ${ROLE_SHAPE.base.setting}`;
}

// ---------------------------------------------------------------------------------------------
// Files.

function readIndex(dir: string, role: ModelRole): Record<string, unknown> {
  const file = path.join(dir, "model_index.json");
  if (!fs.existsSync(file))
    throw invalid(
      `${file} is missing; a diffusers SDXL folder has a model_index.json at its top level. Point the setting at that folder.`,
    );
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw invalid(
      `${file} is unreadable (${describeError(e)}); expected the JSON object diffusers writes. Re-download or re-export the model.`,
    );
  }
  if (typeof index !== "object" || index === null || Array.isArray(index)) {
    throw invalid(
      `${file} is not a JSON object; expected the object diffusers writes with "_class_name" and the components.`,
    );
  }
  const record = index as Record<string, unknown>;
  const className = record._class_name;
  if (typeof className !== "string" || !className.includes("StableDiffusionXL")) {
    throw invalid(
      `${file} has _class_name ${JSON.stringify(className)}; expected an SDXL pipeline (StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline or their ORT variants). Kiln runs SDXL models only.`,
    );
  }
  if (role === "base" && record.requires_aesthetics_score === true) {
    throw invalid(
      `${file} sets requires_aesthetics_score (a refiner's setting) but the folder was given as the base model: ${otherRoleHint(role)}.`,
    );
  }
  return record;
}

function readSchedulerConfig(dir: string): string {
  const file = path.join(dir, "scheduler", "scheduler_config.json");
  if (!fs.existsSync(file))
    throw invalid(
      `${file} is missing; expected the scheduler config diffusers writes (EulerDiscreteScheduler for SDXL).`,
    );
  const raw = fs.readFileSync(file, "utf8");
  try {
    JSON.parse(raw);
  } catch (e) {
    throw invalid(`${file} is not valid JSON (${describeError(e)}); re-download it.`);
  }
  return raw;
}

function checkTokenizerDir(dir: string, name: string, role: ModelRole): string {
  const tokenizerDir = path.join(dir, name);
  for (const file of ["vocab.json", "merges.txt"]) {
    const p = path.join(tokenizerDir, file);
    if (!fs.existsSync(p)) {
      const hint =
        role === "base" && name === "tokenizer" && fs.existsSync(path.join(dir, "tokenizer_2"))
          ? ` A folder with tokenizer_2/ but no tokenizer/ is a refiner: ${otherRoleHint(role)}.`
          : "";
      throw invalid(
        `${p} is missing; the ${role} model needs ${name}/vocab.json and ${name}/merges.txt (CLIP BPE files).${hint}`,
      );
    }
  }
  return tokenizerDir;
}

/**
 * Checks that `component/model.onnx` exists and, when it is small enough to decode, that it parses
 * and that every external data file it names is there and long enough.
 */
function checkOnnxFile(dir: string, component: string, role: ModelRole): string {
  const file = path.join(dir, component, "model.onnx");
  if (!fs.existsSync(file)) {
    const hint =
      role === "base" && component === "text_encoder" && fs.existsSync(path.join(dir, "text_encoder_2"))
        ? ` A folder with text_encoder_2/ but no text_encoder/ is a refiner: ${otherRoleHint(role)}.`
        : "";
    throw invalid(
      `${file} is missing; the ${role} model needs ${component}/model.onnx (an optimum ONNX export).${hint}`,
    );
  }
  const size = fs.statSync(file).size;
  if (size === 0) throw invalid(`${file} is empty; re-download or re-export it.`);
  if (size > DECODE_LIMIT_BYTES) return file;

  let model: OnnxModel;
  try {
    model = onnx.ModelProto.decode(fs.readFileSync(file));
  } catch (e) {
    throw invalid(
      `${file} is not a readable ONNX model (${describeError(e)}); it is probably truncated or corrupt. Re-download or re-export it.`,
    );
  }
  const needed = new Map<string, number>();
  for (const tensor of model.graph?.initializer ?? []) {
    if (tensor.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) continue;
    const entries = new Map((tensor.externalData ?? []).map((kv) => [kv.key ?? "", kv.value ?? ""]));
    const location = entries.get("location");
    if (!location)
      throw invalid(`${file}: initializer ${tensor.name} is stored externally but names no file; re-export the model.`);
    const end = Number(entries.get("offset") ?? 0) + Number(entries.get("length") ?? 0);
    needed.set(location, Math.max(needed.get(location) ?? 0, end));
  }
  for (const [location, end] of needed) {
    const dataFile = path.join(path.dirname(file), location);
    // ONNX Runtime only reads external data from the model's own folder.
    if (path.isAbsolute(location) || path.relative(path.dirname(file), dataFile).startsWith("..")) {
      throw invalid(
        `${file} names its external data as ${JSON.stringify(location)}, outside its folder; ONNX Runtime reads it only from ${path.dirname(file)}. Re-export with the data file beside model.onnx.`,
      );
    }
    if (!fs.existsSync(dataFile)) {
      throw invalid(
        `${file} keeps its weights in ${dataFile}, which is missing; copy ${location} into ${path.dirname(file)} next to model.onnx (it is the large file of the export).`,
      );
    }
    const have = fs.statSync(dataFile).size;
    if (have < end) {
      throw invalid(
        `${dataFile} is ${have} bytes but ${file} reads up to byte ${end}; the download is incomplete. Re-download it.`,
      );
    }
  }
  return file;
}

type OnnxModel = ReturnType<typeof onnx.ModelProto.decode>;

// ---------------------------------------------------------------------------------------------
// Sessions.

function byName(specs: IoSpec[]): Map<string, IoSpec> {
  return new Map(specs.map((s) => [s.name, s]));
}

function listNames(specs: IoSpec[]): string {
  return specs.map((s) => s.name).join(", ");
}

function requireNames(loaded: LoadedSession, kind: "input" | "output", required: string[], exact: boolean): void {
  const specs = kind === "input" ? loaded.inputs : loaded.outputs;
  const names = new Set(specs.map((s) => s.name));
  const missing = required.filter((n) => !names.has(n));
  const extra = exact ? [...names].filter((n) => !required.includes(n)) : [];
  if (missing.length > 0 || extra.length > 0) {
    const parts = [
      missing.length > 0 ? `missing ${missing.join(", ")}` : "",
      extra.length > 0 ? `unexpected ${extra.join(", ")}` : "",
    ].filter(Boolean);
    throw invalid(
      `${loaded.modelPath} has ${kind}s [${listNames(specs)}] (${parts.join("; ")}); expected ${exact ? "exactly" : "at least"} [${required.join(", ")}] as in an optimum SDXL export.`,
    );
  }
}

/** The last dimension when it is a fixed size; undefined when symbolic or unknown. */
function lastDim(spec: IoSpec | undefined): number | undefined {
  const d = spec?.shape?.[spec.shape.length - 1];
  return typeof d === "number" ? d : undefined;
}

function checkRank(file: string, spec: IoSpec, ranks: number[], what: string): void {
  if (spec.shape && !ranks.includes(spec.shape.length)) {
    throw invalid(`${file}: ${spec.name} has shape [${spec.shape.join(", ")}]; expected ${what}.`);
  }
}

function checkDtype<T extends string>(file: string, spec: IoSpec, allowed: readonly T[], fallback: T): T {
  if (spec.dtype === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(spec.dtype)) {
    throw invalid(`${file}: ${spec.name} is ${spec.dtype}; expected ${allowed.join(" or ")}.`);
  }
  return spec.dtype as T;
}

function inspectUnet(loaded: LoadedSession, role: ModelRole, logger: SessionLogger | undefined): UnetInfo {
  const file = loaded.modelPath;
  requireNames(loaded, "input", UNET_INPUTS, true);
  requireNames(loaded, "output", ["out_sample"], false);
  const inputs = byName(loaded.inputs);
  const sample = inputs.get("sample")!;
  const timestep = inputs.get("timestep")!;
  const tokens = inputs.get("encoder_hidden_states")!;
  const pooled = inputs.get("text_embeds")!;
  const timeIds = inputs.get("time_ids")!;

  const floatDtype = checkDtype(file, sample, ["float32", "float16"] as const, "float32");
  for (const spec of [tokens, pooled, timeIds]) {
    if (spec.dtype !== undefined && spec.dtype !== floatDtype)
      throw invalid(
        `${file}: ${spec.name} is ${spec.dtype} but sample is ${floatDtype}; expected one float type for all of them.`,
      );
  }
  checkRank(file, sample, [4], `[batch, ${SDXL_LATENT_CHANNELS}, height, width]`);
  const channels = sample.shape?.[1];
  if (typeof channels === "number" && channels !== SDXL_LATENT_CHANNELS && channels !== SDXL_INPAINT_CHANNELS) {
    throw invalid(
      `${file}: sample has ${channels} channels; SDXL's UNet takes ${SDXL_LATENT_CHANNELS} (an inpainting UNet ${SDXL_INPAINT_CHANNELS}).`,
    );
  }
  const inChannels = channels === SDXL_INPAINT_CHANNELS ? SDXL_INPAINT_CHANNELS : SDXL_LATENT_CHANNELS;
  const timestepDtype = checkDtype(file, timestep, ["float32", "float16", "int64"] as const, "float32");
  checkRank(file, timestep, [0, 1], "a scalar or [1]");
  const timestepRank = timestep.shape?.length === 0 ? 0 : 1;
  checkRank(file, tokens, [3], `[batch, ${SDXL_TOKEN_LENGTH}, width]`);
  checkRank(file, pooled, [2], `[batch, ${SDXL_POOLED_WIDTH}]`);
  checkRank(
    file,
    timeIds,
    [2],
    `[batch, ${SDXL_ROLE_WIDTHS.base.timeIdsWidth}] (base) or [batch, ${SDXL_ROLE_WIDTHS.refiner.timeIdsWidth}] (refiner)`,
  );

  const expected = ROLE_SHAPE[role];
  const embedWidth = lastDim(tokens);
  const timeIdsWidth = lastDim(timeIds);
  const other = ROLE_SHAPE[role === "base" ? "refiner" : "base"];
  if (
    (embedWidth !== undefined && embedWidth !== expected.embedWidth) ||
    (timeIdsWidth !== undefined && timeIdsWidth !== expected.timeIdsWidth)
  ) {
    const looksOther = embedWidth === other.embedWidth || timeIdsWidth === other.timeIdsWidth;
    throw invalid(
      `${file} takes ${embedWidth ?? "?"}-wide encoder_hidden_states and ${timeIdsWidth ?? "?"} time_ids, but the ${role} model needs ${expected.embedWidth} and ${expected.timeIdsWidth}` +
        (looksOther ? `: ${otherRoleHint(role)}.` : "; this is not an SDXL UNet."),
      { embedWidth, timeIdsWidth },
    );
  }
  const pooledWidth = lastDim(pooled);
  if (pooledWidth !== undefined && pooledWidth !== SDXL_POOLED_WIDTH) {
    throw invalid(`${file}: text_embeds is ${pooledWidth} wide; SDXL's UNet takes ${SDXL_POOLED_WIDTH}.`);
  }
  if (embedWidth === undefined || timeIdsWidth === undefined) {
    logger?.warn(
      { file, role },
      `UNet widths are symbolic in ${file}; assuming the ${role} model's ${expected.embedWidth}-wide embeddings and ${expected.timeIdsWidth} time ids`,
    );
  }
  return {
    embedWidth: expected.embedWidth,
    timeIdsWidth: expected.timeIdsWidth,
    timestepDtype,
    timestepRank,
    floatDtype,
    inChannels,
  };
}

function inspectTextEncoder(
  loaded: LoadedSession,
  width: number,
  pooledOutput: "pooler_output" | "text_embeds" | undefined,
): TextEncoderInfo {
  const file = loaded.modelPath;
  requireNames(loaded, "input", ["input_ids"], true);
  requireNames(loaded, "output", pooledOutput ? ["last_hidden_state", pooledOutput] : ["last_hidden_state"], false);
  const outputs = byName(loaded.outputs);
  let count = 0;
  while (outputs.has(`hidden_states.${count}`)) count += 1;
  const strays = loaded.outputs.filter(
    (o) => /^hidden_states\.\d+$/.test(o.name) && Number(o.name.slice("hidden_states.".length)) >= count,
  );
  if (count < 2 || strays.length > 0) {
    throw invalid(
      `${file} has outputs [${listNames(loaded.outputs)}]; expected hidden_states.0 … hidden_states.N without gaps (SDXL takes the penultimate one). Export the text encoder with output_hidden_states, as optimum does for SDXL.`,
    );
  }
  const ids = byName(loaded.inputs).get("input_ids")!;
  const inputIdsDtype = checkDtype(file, ids, ["int32", "int64"] as const, "int32");
  checkRank(file, ids, [2], `[batch, ${SDXL_TOKEN_LENGTH}]`);
  const penultimateOutput = `hidden_states.${count - 2}`;
  const actual = lastDim(outputs.get(penultimateOutput));
  if (actual !== undefined && actual !== width) {
    throw invalid(
      `${file}: ${penultimateOutput} is ${actual} wide; expected ${width} (${width === SDXL_CLIP_L_WIDTH ? "CLIP ViT-L" : "OpenCLIP bigG"}).`,
    );
  }
  if (pooledOutput === "text_embeds") {
    const pooledWidth = lastDim(outputs.get("text_embeds"));
    if (pooledWidth !== undefined && pooledWidth !== SDXL_POOLED_WIDTH) {
      throw invalid(
        `${file}: text_embeds is ${pooledWidth} wide; expected ${SDXL_POOLED_WIDTH} (OpenCLIP bigG's projection).`,
      );
    }
  }
  return { inputIdsDtype, hiddenStateCount: count, penultimateOutput, width };
}

function inspectVaeDecoder(loaded: LoadedSession): "float32" | "float16" {
  const file = loaded.modelPath;
  requireNames(loaded, "input", ["latent_sample"], true);
  requireNames(loaded, "output", ["sample"], false);
  const latents = byName(loaded.inputs).get("latent_sample")!;
  checkRank(file, latents, [4], `[batch, ${SDXL_LATENT_CHANNELS}, height, width]`);
  if (latents.shape && typeof latents.shape[1] === "number" && latents.shape[1] !== SDXL_LATENT_CHANNELS) {
    throw invalid(`${file}: latent_sample has ${latents.shape[1]} channels; SDXL's VAE takes ${SDXL_LATENT_CHANNELS}.`);
  }
  return checkDtype(file, latents, ["float32", "float16"] as const, "float32");
}

/** optimum's `vae_encoder`: `sample` → `latent_parameters` (the distribution's mean ‖ logvar, 8 channels). */
function inspectVaeEncoder(loaded: LoadedSession): void {
  const file = loaded.modelPath;
  requireNames(loaded, "input", ["sample"], true);
  requireNames(loaded, "output", ["latent_parameters"], false);
  const params = byName(loaded.outputs).get("latent_parameters")!;
  checkRank(file, params, [4], `[batch, ${2 * SDXL_LATENT_CHANNELS}, height, width]`);
  if (params.shape && typeof params.shape[1] === "number" && params.shape[1] !== 2 * SDXL_LATENT_CHANNELS) {
    throw invalid(
      `${file}: latent_parameters has ${params.shape[1]} channels; SDXL's VAE encoder gives ${2 * SDXL_LATENT_CHANNELS} (mean and logvar of ${SDXL_LATENT_CHANNELS}). Re-export it with optimum.`,
    );
  }
}

/** ONNX Runtime's messages when the file, not the provider, is at fault. */
const FILE_FAULT = /Protobuf parsing failed|External data path|File doesn't exist/i;

/**
 * Graphs too big to decode up front are only parsed by ONNX Runtime: when every provider failed on
 * the file itself, report a bad folder rather than a provider problem.
 */
function asFileProblem(file: string, e: unknown): KilnError | undefined {
  if (!(e instanceof KilnError) || e.code !== "model_session_failed") return undefined;
  const failures = (e.details?.failures ?? []) as { error: string }[];
  if (failures.length === 0 || !failures.every((f) => FILE_FAULT.test(f.error))) return undefined;
  return new KilnError(
    "model_folder_invalid",
    `${file} could not be read as an ONNX model (${failures[failures.length - 1].error}); it is truncated or corrupt, or its external data is missing. Re-download or re-export it.`,
    { cause: e, retryable: false },
  );
}

// ---------------------------------------------------------------------------------------------

/**
 * Loads and validates an SDXL model folder for `role`. Throws KilnError `model_folder_invalid`
 * naming the file and what was expected; sessions opened before a failure are released.
 */
export async function loadModelFolder(
  dir: string,
  role: ModelRole,
  options: LoadModelFolderOptions,
): Promise<ModelFolder> {
  const { logger } = options;
  const resolved = path.resolve(dir);
  if (!fs.existsSync(resolved) || !fs.statSync(resolved).isDirectory()) {
    throw invalid(
      `The ${role} model folder ${resolved} does not exist or is not a directory; set ${ROLE_SHAPE[role].setting} to a diffusers SDXL ONNX folder.`,
    );
  }

  // Cheap file checks first, so a broken folder fails before any multi-gigabyte session loads.
  const index = readIndex(resolved, role);
  const schedulerConfigJson = readSchedulerConfig(resolved);
  const tokenizerDirs = {
    ...(role === "base" ? { tokenizer: checkTokenizerDir(resolved, "tokenizer", role) } : {}),
    tokenizer2: checkTokenizerDir(resolved, "tokenizer_2", role),
  };
  const unetFile = checkOnnxFile(resolved, "unet", role);
  const textEncoderFile = role === "base" ? checkOnnxFile(resolved, "text_encoder", role) : undefined;
  const textEncoder2File = checkOnnxFile(resolved, "text_encoder_2", role);
  const vaeDecoderFile = checkOnnxFile(resolved, "vae_decoder", role);
  // Optional: text-to-image never needs it; image inputs fail with a clear error when it is missing.
  const vaeEncoderFile = fs.existsSync(path.join(resolved, "vae_encoder", "model.onnx"))
    ? checkOnnxFile(resolved, "vae_encoder", role)
    : undefined;

  const opened: LoadedSession[] = [];
  const open = async (file: string, part: "gpu" | "encoder"): Promise<LoadedSession> => {
    const opener = (part === "gpu" ? options.openGpuSession : options.openEncoderSession) ?? createSession;
    const loaded = await opener(file, options).catch((e: unknown) => {
      throw asFileProblem(file, e) ?? e;
    });
    opened.push(loaded);
    return loaded;
  };
  try {
    // The UNet first: its widths tell a base from a refiner.
    const unetSession = await open(unetFile, "gpu");
    const unet = inspectUnet(unetSession, role, logger);
    const textEncoderSession = textEncoderFile ? await open(textEncoderFile, "encoder") : undefined;
    const textEncoder = textEncoderSession
      ? inspectTextEncoder(textEncoderSession, SDXL_CLIP_L_WIDTH, undefined)
      : undefined;
    const textEncoder2Session = await open(textEncoder2File, "encoder");
    const textEncoder2 = inspectTextEncoder(textEncoder2Session, SDXL_BIGG_WIDTH, "text_embeds");
    const vaeDecoderSession = await open(vaeDecoderFile, "gpu");
    const vaeDecoderDtype = inspectVaeDecoder(vaeDecoderSession);
    const vaeEncoderSession = vaeEncoderFile ? await open(vaeEncoderFile, "gpu") : undefined;
    if (vaeEncoderSession) inspectVaeEncoder(vaeEncoderSession);

    const isTinyTestModel = index[TINY_MODEL_MARKER] === true;
    if (isTinyTestModel) {
      logger?.warn(
        { dir: resolved, role },
        `KILN TINY TEST MODEL loaded as the ${role} model: every image it renders is noise. Set ${ROLE_SHAPE[role].setting} to a real SDXL ONNX export for real images.`,
      );
    }
    logger?.info(
      {
        dir: resolved,
        role,
        providers: opened.map((s) => `${path.basename(path.dirname(s.modelPath))}:${s.provider}`),
        unet,
      },
      `${role} model loaded`,
    );

    return {
      dir: resolved,
      role,
      isTinyTestModel,
      index,
      schedulerConfigJson,
      tokenizerDirs,
      sessions: {
        textEncoder: textEncoderSession,
        textEncoder2: textEncoder2Session,
        unet: unetSession,
        vaeDecoder: vaeDecoderSession,
        vaeEncoder: vaeEncoderSession,
      },
      unet,
      textEncoders: { textEncoder, textEncoder2 },
      vaeDecoderDtype,
      release: async () => {
        await Promise.all(opened.map((s) => s.session.release()));
      },
    };
  } catch (e) {
    await Promise.allSettled(opened.map((s) => s.session.release()));
    throw e;
  }
}
