import path from "node:path";

import { SDXL_TOKEN_LENGTH, SDXL_VAE_FACTOR } from "../models/sdxl-spec.js";
import { type Bucket, bucketLabel, type EnginePart, type EnginePrecision } from "./engine-key.js";
import type { GraphIo, TensorIo } from "./epcontext-model.js";

/**
 * The engine build plan: for each model part and bucket, the trtexec command with explicit
 * min/opt/max shapes. Pure, so the shapes and file names are tested without TensorRT.
 *
 * Batch sizes follow how Kiln runs the parts: the UNet sees classifier-free guidance's doubled
 * batch 2×n for n = 1…4 images (opt: one image); the VAE decoder sees n = 1…4 latents; the text
 * encoders see up to 2×4 prompts (positive and negative), whatever the image size.
 */

export const MAX_IMAGES_PER_REQUEST = 4;

export interface PartToBuild {
  part: EnginePart;
  /** `<model>/<part>/model.onnx`. */
  onnxFile: string;
  io: GraphIo;
  /**
   * Build fp32 even with --fp16: the stock SDXL VAE overflows in fp16 (its config says
   * `force_upcast: true`), so its engine keeps fp32 unless the model says otherwise.
   */
  forceFp32?: boolean;
}

export interface BuildPlanInput {
  parts: PartToBuild[];
  buckets: Bucket[];
  fp16: boolean;
  /** Where engines are written before they go to the store. */
  outDir: string;
  /** trtexec's timing cache: later builds on the same GPU reuse kernel timings. */
  timingCacheFile?: string;
  maxImages?: number;
}

export type ShapeSet = Record<string, number[]>;

export interface BuildStep {
  part: EnginePart;
  bucket: Bucket | null;
  precision: EnginePrecision;
  onnxFile: string;
  engineFile: string;
  shapes: { min: ShapeSet; opt: ShapeSet; max: ShapeSet };
  /** trtexec's arguments (without the executable). */
  args: string[];
}

/** Part-independent naming of one build's output: `<outDir>/<part>/<bucket>-<precision>.engine`. */
export function engineOutFile(
  outDir: string,
  part: EnginePart,
  bucket: Bucket | null,
  precision: EnginePrecision,
): string {
  return path.join(outDir, part, `${bucketLabel(bucket)}-${precision}.engine`);
}

interface Sizes {
  batch: number;
  latentHeight: number;
  latentWidth: number;
}

/** The concrete dims of one input at one batch; fixed dims stay, symbolic ones get Kiln's sizes. */
function concreteDims(part: EnginePart, input: TensorIo, s: Sizes): number[] {
  return input.dims.map((d, i) => {
    if (typeof d === "number") return d;
    if (i === 0) return s.batch;
    if (part === "unet" && input.name === "sample" && i === 2) return s.latentHeight;
    if (part === "unet" && input.name === "sample" && i === 3) return s.latentWidth;
    if (part === "vae_decoder" && i === 2) return s.latentHeight;
    if (part === "vae_decoder" && i === 3) return s.latentWidth;
    if ((part === "text_encoder" || part === "text_encoder_2") && input.name === "input_ids" && i === 1)
      return SDXL_TOKEN_LENGTH;
    if (part === "unet" && input.name === "encoder_hidden_states" && i === 1) return SDXL_TOKEN_LENGTH;
    throw new Error(
      `cannot tell the size of ${part} input ${input.name} dimension ${i} ("${d}"); export the model with that dimension fixed`,
    );
  });
}

export function batchRange(part: EnginePart, maxImages: number): { min: number; opt: number; max: number } {
  if (part === "unet") return { min: 2, opt: 2, max: 2 * maxImages };
  if (part === "vae_decoder") return { min: 1, opt: 1, max: maxImages };
  return { min: 1, opt: 2, max: 2 * maxImages };
}

function shapeArg(shapes: ShapeSet): string {
  return Object.entries(shapes)
    .map(([name, dims]) => `${name}:${dims.join("x")}`)
    .join(",");
}

export function planEngineBuilds(input: BuildPlanInput): BuildStep[] {
  const maxImages = input.maxImages ?? MAX_IMAGES_PER_REQUEST;
  const steps: BuildStep[] = [];
  for (const part of input.parts) {
    const precision: EnginePrecision = input.fp16 && !part.forceFp32 ? "fp16" : "fp32";
    const bucketFree = part.part === "text_encoder" || part.part === "text_encoder_2";
    const buckets: (Bucket | null)[] = bucketFree ? [null] : input.buckets;
    // Scalars and fully fixed inputs have one shape; trtexec takes shapes for dynamic inputs only.
    const dynamic = part.io.inputs.filter((i) => i.dims.some((d) => typeof d === "string"));
    for (const bucket of buckets) {
      const latentHeight = bucket ? bucket.height / SDXL_VAE_FACTOR : 0;
      const latentWidth = bucket ? bucket.width / SDXL_VAE_FACTOR : 0;
      const range = batchRange(part.part, maxImages);
      const at = (batch: number): ShapeSet =>
        Object.fromEntries(
          dynamic.map((i) => [i.name, concreteDims(part.part, i, { batch, latentHeight, latentWidth })]),
        );
      const shapes = { min: at(range.min), opt: at(range.opt), max: at(range.max) };
      const engineFile = engineOutFile(input.outDir, part.part, bucket, precision);
      const args = [
        `--onnx=${part.onnxFile}`,
        `--saveEngine=${engineFile}`,
        ...(dynamic.length > 0
          ? [
              `--minShapes=${shapeArg(shapes.min)}`,
              `--optShapes=${shapeArg(shapes.opt)}`,
              `--maxShapes=${shapeArg(shapes.max)}`,
            ]
          : []),
        ...(precision === "fp16" ? ["--fp16"] : []),
        ...(input.timingCacheFile ? [`--timingCacheFile=${input.timingCacheFile}`] : []),
        // Build only: the engine is measured by the worker and `npm run gpu:check`, not here.
        "--skipInference",
      ];
      steps.push({ part: part.part, bucket, precision, onnxFile: part.onnxFile, engineFile, shapes, args });
    }
  }
  return steps;
}
