import * as ort from "onnxruntime-node";
import { KilnError, outputSize, type Latents, type RenderPlan, type StagePlan } from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";
import { createScheduler, convertLatentSpace } from "./schedulers/index.js";
import type { Scheduler } from "./schedulers/scheduler.js";
import { ensembleSplit, sdeditStart } from "./stage-split.js";
import { drawNoise, NoiseSource } from "./noise.js";
import { encodePromptPair, type PromptEmbeddings } from "./prompt-encoder.js";
import { timeIds } from "./conditioning.js";
import { applyGuidance } from "./guidance.js";
import { firstNonFinite, resizeLatentsBilinear } from "./latent-ops.js";
import { decodeLatentsToImages } from "./vae-decoder.js";
import { encodeImage, type EncodedImage } from "./image-encoder.js";
import { floatTensor, outputAsFloat32, timestepTensor } from "../onnx/tensors.js";
import type { SdxlModel } from "./sdxl-model.js";

export interface StageHooks {
  /** Called after every denoising step with the steps done and the steps this stage runs. */
  onStep?(step: number, steps: number, latents: Float32Array, shape: readonly number[]): void;
  /** Checked between steps: aborting stops the stage at the next step boundary (cancel, drain). */
  signal?: AbortSignal;
  logger?: Logger;
}

export type StageResult =
  | { kind: "latents"; latents: Latents; unetSeconds: number; denoiseSeconds: number; steps: number }
  | { kind: "images"; images: EncodedImage[]; unetSeconds: number; denoiseSeconds: number; steps: number };

/** Seed of an image's noise stream in a stage: `seed + i` in the first stage (torch-compatible), mixed per later stage. */
export const stageNoiseSeed = (seed: number, stage: number): number => (stage === 0 ? seed : (seed + Math.imul(stage, 0x9e3779b1)) >>> 0);

/** The slice of the schedule a stage runs, by diffusers' `denoising_start`/`denoising_end`/`strength` rules. */
export function stageSchedule(scheduler: Scheduler, plan: RenderPlan, stage: StagePlan): { begin: number; end: number } {
  const timesteps = scheduler.timesteps;
  let begin = 0;
  let end = timesteps.length;
  if (stage.denoisingEnd !== undefined) end = ensembleSplit(timesteps, stage.denoisingEnd, scheduler.order).base;
  if (stage.denoisingStart !== undefined) begin = ensembleSplit(timesteps, stage.denoisingStart, scheduler.order).refinerStartIndex;
  if (stage.strength !== undefined) begin = sdeditStart(plan.steps, stage.strength, scheduler.order).initTimestepIndex;
  return { begin, end };
}

/**
 * Runs one stage of an SDXL render, in diffusers' order:
 * 1. check inputs → 2. prepare timesteps → 3. prepare latents → 4. encode prompts →
 * 5. denoise (CFG over a [negative, positive] batch) → 6. hand latents over, or decode and encode images.
 */
export async function runStage(
  model: SdxlModel,
  job: { jobId: string; plan: RenderPlan; stage: StagePlan },
  input: Latents | undefined,
  hooks: StageHooks = {},
): Promise<StageResult> {
  const { plan, stage } = job;
  const n = plan.n;
  const guided = plan.guidanceScale > 1;

  // 1. Check inputs.
  if (stage.index > 0 && !input) throw new KilnError("stage_input_missing", `Stage ${stage.index} needs the latents of stage ${stage.index - 1}.`);
  if (input && input.shape[0] !== n) {
    throw new KilnError("latents_shape_mismatch", `The latents hold ${input.shape[0]} images but the plan asks for ${n}; the producing stage must run again.`, { retryable: true });
  }

  // 2. Prepare timesteps.
  const scheduler = createScheduler(model.schedulerConfig, { name: plan.scheduler, karras: plan.karras });
  scheduler.setTimesteps(plan.steps);
  const { begin, end } = stageSchedule(scheduler, plan, stage);
  scheduler.setBeginIndex(begin);

  // 3. Prepare latents. One generator per image (seed + i), as diffusers with a list of generators: the
  // first stage draws the initial noise from it and keeps drawing (ancestral steps); later stages get
  // their own stream per image so a stage re-run on another worker draws the same noise.
  const generators = Array.from({ length: n }, (_, i) => new NoiseSource(stageNoiseSeed(plan.seed + i, stage.index)));
  let shape: number[];
  let latents: Float32Array;
  if (!input) {
    shape = [n, 4, plan.height / 8, plan.width / 8];
    latents = drawNoise(generators, new Float32Array(n * 4 * shape[2]! * shape[3]!));
    for (let j = 0; j < latents.length; j++) latents[j] = latents[j]! * scheduler.initNoiseSigma;
  } else if (stage.strength !== undefined) {
    // SDEdit: the input is fully denoised (σ = 0, where both latent spaces agree); upscale, then re-noise to `strength`.
    const size = outputSize(plan);
    shape = [n, 4, size.height / 8, size.width / 8];
    const x0 = shape[2] === input.shape[2] && shape[3] === input.shape[3] ? input.data : resizeLatentsBilinear(input.data, input.shape, shape[2]!, shape[3]!);
    latents = scheduler.addNoise(x0, drawNoise(generators, new Float32Array(x0.length)), begin);
  } else {
    // Ensemble of experts: continue from the noisy latents as they are, converted if the families differ.
    shape = [...input.shape];
    latents = input.meta.latentSpace === scheduler.latentSpace ? input.data : convertLatentSpace(input.data, input.meta.sigma, input.meta.latentSpace, scheduler.latentSpace);
  }
  const [, , h, w] = shape as [number, number, number, number];

  // 4. Encode prompts.
  const { positive, negative } = await encodePromptPair(
    model.encoders,
    { prompt: plan.prompt, prompt2: plan.prompt2, negativePrompt: plan.negativePrompt, negativePrompt2: plan.negativePrompt2 },
    { clipSkip: plan.clipSkip, longPrompt: plan.longPrompt, weighting: plan.promptWeighting, forceZerosForEmptyPrompt: model.forceZerosForEmptyPrompt, guided },
    hooks.logger,
  );
  if (positive.width !== model.unetEmbedWidth) {
    throw new KilnError("model_mismatch", `The text encoders of ${model.dir} give ${positive.width}-wide embeddings but its UNet takes ${model.unetEmbedWidth}.`);
  }
  const batch = guided ? 2 * n : n;
  const conditioning = batchedConditioning(positive, negative, n);
  const unet = model.unet;
  const target: [number, number] = [h * 8, w * 8];
  const feedsFixed = {
    encoder_hidden_states: floatTensor(unet, "encoder_hidden_states", conditioning.hidden, [batch, positive.tokens, positive.width]),
    text_embeds: floatTensor(unet, "text_embeds", conditioning.pooled, [batch, positive.pooled.length]),
    time_ids: floatTensor(unet, "time_ids", timeIds(plan, model.timeIdsWidth, n, guided, stage.hiresScale && stage.hiresScale !== 1 ? target : undefined), [batch, model.timeIdsWidth]),
  };

  // 5. Denoise.
  const per = latents.length;
  const sampleBuffer = new Float32Array(guided ? 2 * per : per);
  const guidedNoise = new Float32Array(per);
  const steps = end - begin;
  let unetSeconds = 0;
  const denoiseStarted = performance.now();
  for (let i = begin; i < end; i++) {
    hooks.signal?.throwIfAborted();
    const scaled = scheduler.scaleModelInput(latents);
    sampleBuffer.set(scaled, 0);
    if (guided) sampleBuffer.set(scaled, per);
    const feeds = {
      ...feedsFixed,
      sample: floatTensor(unet, "sample", sampleBuffer, [batch, 4, h, w]),
      timestep: timestepTensor(unet, scheduler.timesteps[i]!, batch),
    };
    const started = performance.now();
    const out = await unet.session.run(feeds, ["out_sample"]);
    unetSeconds += (performance.now() - started) / 1000;
    const predicted = outputAsFloat32(out.out_sample as ort.Tensor);
    const noisePred = guided ? applyGuidance(predicted, n, plan.guidanceScale, plan.guidanceRescale, guidedNoise) : predicted;
    latents = scheduler.step(noisePred, latents, generators);
    hooks.onStep?.(i - begin + 1, steps, latents, shape);
  }
  const denoiseSeconds = (performance.now() - denoiseStarted) / 1000;
  const bad = firstNonFinite(latents);
  if (bad >= 0) {
    throw new KilnError("latents_non_finite", `Denoising produced ${latents[bad]} in the latents; the model or its precision is broken (try fp32 or another scheduler).`);
  }

  // 6. Hand over or decode.
  if (stage.output === "latents") {
    return {
      kind: "latents",
      unetSeconds,
      denoiseSeconds,
      steps,
      latents: {
        shape,
        data: latents,
        meta: {
          jobId: job.jobId,
          stage: stage.index,
          scheduler: scheduler.name,
          schedulerConfigHash: model.schedulerConfigHash,
          latentSpace: scheduler.latentSpace,
          stepIndex: end,
          steps: plan.steps,
          timestep: end < scheduler.timesteps.length ? scheduler.timesteps[end]! : 0,
          sigma: scheduler.sigmaAt(end),
          seed: plan.seed,
        },
      },
    };
  }
  const decoded = await decodeLatentsToImages(model.vaeDecoder, latents, shape, model.vaeScalingFactor);
  hooks.signal?.throwIfAborted();
  const images: EncodedImage[] = [];
  for (let i = 0; i < decoded.length; i++) {
    images.push(await encodeImage(decoded[i]!, plan.outputFormat, plan.outputQuality, generationParameters(plan, model, i, scheduler.name)));
  }
  return { kind: "images", images, unetSeconds, denoiseSeconds, steps };
}

/** [negative × n, positive × n] (or [positive × n] without guidance) for the UNet's conditioning inputs. */
function batchedConditioning(positive: PromptEmbeddings, negative: PromptEmbeddings | undefined, n: number): { hidden: Float32Array; pooled: Float32Array } {
  const rows = [...(negative ? Array(n).fill(negative) : []), ...Array(n).fill(positive)] as PromptEmbeddings[];
  const hidden = new Float32Array(rows.length * positive.hidden.length);
  const pooled = new Float32Array(rows.length * positive.pooled.length);
  rows.forEach((r, i) => {
    hidden.set(r.hidden, i * positive.hidden.length);
    pooled.set(r.pooled, i * positive.pooled.length);
  });
  return { hidden, pooled };
}

const SAMPLER_NAMES: Record<string, string> = { euler: "Euler", euler_a: "Euler a", dpmpp_2m: "DPM++ 2M", ddim: "DDIM" };

/** The A1111 `parameters` text, so tools that read it show how the image was made. */
export function generationParameters(plan: RenderPlan, model: SdxlModel, imageIndex: number, scheduler: string): string {
  const size = outputSize(plan);
  const fields: [string, string | number | undefined][] = [
    ["Steps", plan.steps],
    ["Sampler", SAMPLER_NAMES[scheduler] ?? scheduler],
    ["Schedule type", plan.karras ? "Karras" : undefined],
    ["CFG scale", plan.guidanceScale],
    ["Seed", plan.seed + imageIndex],
    ["Size", `${size.width}x${size.height}`],
    ["Model", model.name],
    ["Mode", plan.mode],
    ["Refiner switch at", plan.mode === "ensemble" ? plan.highNoiseFrac : undefined],
    ["Denoising strength", plan.mode === "sdedit" ? plan.strength : undefined],
    ["Hires upscale", plan.mode === "sdedit" && plan.hiresScale !== 1 ? plan.hiresScale : undefined],
    ["CFG rescale", plan.guidanceRescale || undefined],
    ["Clip skip", plan.clipSkip],
    ["Version", "Kiln"],
  ];
  const line = fields.filter(([, v]) => v !== undefined).map(([k, v]) => `${k}: ${v}`).join(", ");
  return [plan.prompt, plan.negativePrompt ? `Negative prompt: ${plan.negativePrompt}` : undefined, line].filter(Boolean).join("\n");
}
