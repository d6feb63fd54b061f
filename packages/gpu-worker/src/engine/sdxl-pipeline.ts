import { KilnError, type Latents, outputSize, type RenderPlan, type StagePlan } from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";

import { reportReferencePrompt } from "../models/reference/prompt-report.js";
import { SDXL_LATENT_CHANNELS, SDXL_VAE_FACTOR, sdxlLatentShape } from "../models/sdxl-spec.js";
import type { GpuTurn } from "../runtime/pipeline/gpu-turns.js";
import { stageTimeIdInputs, timeIds } from "./conditioning.js";
import { decodeAndFinish } from "./finishing/decode-and-finish.js";
import type { EncodedImage } from "./image-files.js";
import { type ImageStart, prepareImageStart, prepareRefineBlend } from "./img2img/prepare-latents.js";
import type { PreparedSource } from "./img2img/source-image.js";
import { resizeLatentsBilinear, scaleRange } from "./latent-ops.js";
import { type NoiseKernel, NoiseSource } from "./noise.js";
import { drawInitialNoise } from "./noise-helper.js";
import { encodePromptPair, type PromptEmbeddings } from "./prompt-encoder.js";
import { convertLatentSpace, createScheduler } from "./schedulers/index.js";
import type { Scheduler } from "./schedulers/scheduler.js";
import type { SdxlModel } from "./sdxl-model.js";
import { ensembleSplit, sdeditStart } from "./stage-split.js";
import { type DenoiseMember, type DenoiseTimes, denoiseTogether } from "./unet-batch.js";
import type { UnetGroupSeat } from "./unet-group.js";

export interface StageHooks {
  /**
   * Called after every denoising step with the steps done and the steps this stage runs. `latents` is the
   * loop's own buffer, updated in place by the next step: copy it to keep it.
   */
  onStep?(step: number, steps: number, latents: Float32Array, shape: readonly number[]): void | Promise<void>;
  /** Checked between steps: aborting stops the stage at the next step boundary (cancel, drain). */
  signal?: AbortSignal;
  logger?: Logger;
  /**
   * The pipelined worker's GPU turn: taken right before the first UNet call and given back after the last
   * GPU call (here after the VAE decode; a hand-over stage's executor gives it back as the stage returns), so
   * prompt encoding before and image encoding after overlap another stage's GPU work.
   */
  gpu?: GpuTurn;
  /**
   * Batching (KILN_WORKER_BATCH): this stage's seat in a group of jobs' stages claimed together; its denoising
   * runs in one UNet batch with the group's compatible members. Absent: the stage denoises alone.
   */
  group?: UnetGroupSeat;
}

/** `unetSeconds`: time in the UNet's `session.run`; `denoiseSeconds`: the whole denoising loop, UNet included. */
export type StageResult =
  | { kind: "latents"; latents: Latents; unetSeconds: number; denoiseSeconds: number; steps: number }
  | { kind: "images"; images: EncodedImage[]; unetSeconds: number; denoiseSeconds: number; steps: number };

/** Seed of an image's noise stream in a stage: `seed + i` in the first stage (torch-compatible), mixed per later stage. */
export const stageNoiseSeed = (seed: number, stage: number): number =>
  stage === 0 ? seed : (seed + Math.imul(stage, 0x9e3779b1)) >>> 0;

/** The slice of the schedule a stage runs, by diffusers' `denoising_start`/`denoising_end`/`strength` rules. */
export function stageSchedule(
  scheduler: Scheduler,
  plan: RenderPlan,
  stage: StagePlan,
): { begin: number; end: number } {
  const timesteps = scheduler.timesteps;
  let begin = 0;
  let end = timesteps.length;
  if (stage.denoisingEnd !== undefined) end = ensembleSplit(timesteps, stage.denoisingEnd, scheduler.order).base;
  if (stage.denoisingStart !== undefined)
    begin = ensembleSplit(timesteps, stage.denoisingStart, scheduler.order).refinerStartIndex;
  if (stage.strength !== undefined) begin = sdeditStart(plan.steps, stage.strength, scheduler.order).initTimestepIndex;
  return { begin, end };
}

/**
 * Runs one stage of an SDXL render, in the order of diffusers' SDXL pipelines:
 * 1. check inputs → 2. encode prompts → 3. prepare timesteps → 4. prepare latents →
 * 5. prepare the UNet's conditioning → 6. denoise (CFG over a [negative, positive] batch) →
 * 7. hand the latents over, or decode and encode the images.
 */
export async function runPipelineStage(
  model: SdxlModel,
  job: {
    jobId: string;
    plan: RenderPlan;
    stage: StagePlan;
    /** The plan's source picture at the render's size: read when the stage starts from it or composites onto it. */
    source?: PreparedSource;
    /** Which of torch's CPU Box–Muller kernels the noise reproduces (default `avx2`, see noise.ts). */
    noiseKernel?: NoiseKernel;
  },
  input: Latents | undefined,
  hooks: StageHooks = {},
): Promise<StageResult> {
  const { plan, stage } = job;
  const n = plan.n;
  // diffusers' `do_classifier_free_guidance`.
  const guided = plan.guidanceScale > 1;

  // 1. Check inputs.
  if (stage.index > 0 && !input)
    throw new KilnError("stage_input_missing", `Stage ${stage.index} needs the latents of stage ${stage.index - 1}.`);
  if (input && input.shape[0] !== n) {
    throw new KilnError(
      "latents_shape_mismatch",
      `The latents hold ${input.shape[0]} images but the plan asks for ${n}; the producing stage must run again.`,
      { retryable: true },
    );
  }

  if (stage.start === "image" && !job.source)
    throw new KilnError("input_missing", `Stage ${stage.index} starts from the job's picture, which was not given.`);
  if (model.unetInChannels === 9 && !(stage.start === "image" && job.source?.mask)) {
    throw new KilnError(
      "model_is_inpainting",
      `${model.dir} has a 9-channel inpainting UNet, which only runs inpaint and outpaint starts; use a standard SDXL model for ${plan.mode}.`,
    );
  }

  // 2. Encode prompts.
  const { positive, negative } = await encodePromptPair(
    model.encoders,
    {
      prompt: plan.prompt,
      prompt2: plan.prompt2,
      negativePrompt: plan.negativePrompt,
      negativePrompt2: plan.negativePrompt2,
    },
    {
      clipSkip: plan.clipSkip,
      longPrompt: plan.longPrompt,
      weighting: plan.promptWeighting,
      forceZerosForEmptyPrompt: model.forceZerosForEmptyPrompt,
      guided,
    },
    hooks.logger,
  );
  reportReferencePrompt(model.folder.index, plan.prompt, plan.negativePrompt, hooks.logger);
  if (positive.width !== model.unetEmbedWidth) {
    throw new KilnError(
      "model_mismatch",
      `The text encoders of ${model.dir} give ${positive.width}-wide embeddings but its UNet takes ${model.unetEmbedWidth}.`,
    );
  }

  // 3. Prepare timesteps: the full schedule, then this stage's slice of it.
  const scheduler = createScheduler(model.schedulerConfig, { name: plan.scheduler, karras: plan.karras });
  scheduler.setTimesteps(plan.steps);
  const { begin, end } = stageSchedule(scheduler, plan, stage);
  scheduler.setBeginIndex(begin);

  // 4. Prepare latents. One generator per image (seed + i), as diffusers with a list of generators: the
  // first stage draws the initial noise from it and keeps drawing (ancestral steps); later stages get
  // their own stream per image so a stage re-run on another worker draws the same noise. The loop
  // steps `latents` in place, so it is always a fresh array, never the caller's input.
  const generators = Array.from(
    { length: n },
    (_, i) => new NoiseSource(stageNoiseSeed(plan.seed + i, stage.index), job.noiseKernel),
  );
  let shape: number[];
  let latents: Float32Array;
  let imageStart: ImageStart | undefined;
  // A later stage of an inpaint/outpaint (ensemble or SDEdit refiner) keeps blending the picture in outside the mask.
  const refineBlend =
    stage.start !== "image" && input && job.source?.mask && model.unetInChannels !== 9
      ? await prepareRefineBlend(model, job.source, generators)
      : undefined;
  if (stage.start === "image") {
    // img2img / inpaint / outpaint: the picture's latents, re-noised to `strength` at timesteps[begin].
    imageStart = await prepareImageStart(model, plan, stage.strength ?? 1, scheduler, begin, generators, job.source!);
    shape = imageStart.shape;
    latents = imageStart.latents;
  } else if (!input) {
    shape = sdxlLatentShape(n, plan.width, plan.height);
    latents = await drawInitialNoise(generators, n * SDXL_LATENT_CHANNELS * shape[2]! * shape[3]!, hooks.logger);
    scaleRange(latents, 0, latents.length, scheduler.initNoiseSigma);
  } else if (stage.strength !== undefined) {
    // SDEdit: the input is fully denoised (σ = 0, where both latent spaces agree); upscale as A1111's
    // "Latent" hires fix does (bilinear, no antialias), then re-noise to `strength` at timesteps[begin].
    const size = outputSize(plan);
    shape = sdxlLatentShape(n, size.width, size.height);
    const x0 =
      shape[2] === input.shape[2] && shape[3] === input.shape[3]
        ? input.data
        : resizeLatentsBilinear(input.data, input.shape, shape[2]!, shape[3]!);
    // After an inpaint the re-noise is the blend's noise, drawn after the picture's latents (diffusers' order).
    const eps = refineBlend?.noise ?? (await drawInitialNoise(generators, x0.length, hooks.logger));
    latents = scheduler.addNoise(x0, eps, begin);
  } else {
    // Ensemble of experts: continue from the noisy latents as they are, re-expressed if the families differ.
    shape = [...input.shape];
    latents = convertLatentSpace(input.data, input.meta.sigma, input.meta.latentSpace, scheduler.latentSpace);
  }
  const [, , h, w] = shape as [number, number, number, number];

  // 5. Prepare the UNet's conditioning: this job's rows [negative × n, positive × n] (diffusers' order), or
  // [positive × n] without guidance. The feeds are built by the denoising loop, for this job alone or for the
  // UNet batch it joins.
  const conditioning = batchedConditioning(positive, negative, n);
  const member: DenoiseMember = {
    model,
    n,
    guided,
    guidanceScale: plan.guidanceScale,
    guidanceRescale: plan.guidanceRescale,
    scheduler,
    begin,
    end,
    latents,
    shape,
    hidden: conditioning.hidden,
    pooled: conditioning.pooled,
    timeIds: timeIds(
      stageTimeIdInputs(plan, [h * SDXL_VAE_FACTOR, w * SDXL_VAE_FACTOR]),
      model.timeIdsWidth,
      n,
      guided,
    ),
    tokens: positive.tokens,
    width: positive.width,
    inpaintConditioning: imageStart?.conditioning,
    blend: imageStart?.blend ?? refineBlend,
    generators,
    onStep: hooks.onStep,
    signal: hooks.signal,
  };

  // 6. Denoise (`unet-batch.ts`): alone, or as one UNet batch with other jobs' compatible stages (`hooks.group`),
  // this job keeping its own prompts, noise, latents, scheduler and guidance.
  const steps = end - begin;
  const { unetSeconds, denoiseSeconds } = hooks.group
    ? await hooks.group.denoise(member)
    : await denoiseAlone(member, hooks);

  // 7. Hand over (unscaled scheduler-space latents, diffusers' `output_type="latent"`) or decode.
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
  const vaeDecoder =
    model.engines?.sessionFor("vae_decoder", shape[3]! * SDXL_VAE_FACTOR, shape[2]! * SDXL_VAE_FACTOR, shape[0]!) ??
    model.vaeDecoder;
  // diffusers' order after the decode: watermark, `postprocess`, `apply_overlay`, then the file (finishing/).
  const source = job.source;
  const images = await decodeAndFinish(vaeDecoder, latents, shape, {
    scalingFactor: model.vaeScalingFactor,
    watermark: plan.watermark !== false,
    composite: source?.mask
      ? { width: source.width, height: source.height, rgb: source.rgb, mask: source.mask, crop: source.crop }
      : undefined,
    format: plan.outputFormat,
    quality: plan.outputQuality,
    parameters: (i) => generationParameters(plan, model, i, scheduler.name),
    pool: model.finishing,
    // The last VAE call was the last GPU call: what follows overlaps the next stage's denoising.
    afterLastRun: () => hooks.gpu?.release(),
    signal: hooks.signal,
  });
  return { kind: "images", images, unetSeconds, denoiseSeconds, steps };
}

/** The denoising loop for one job alone: the batch of one. */
async function denoiseAlone(member: DenoiseMember, hooks: StageHooks): Promise<DenoiseTimes> {
  const [result] = await denoiseTogether([member], { gpu: hooks.gpu, signal: hooks.signal, logger: hooks.logger });
  if (result!.status === "rejected") throw result!.reason;
  return result!.value;
}

/** [negative × n, positive × n] (or [positive × n] without guidance) for the UNet's conditioning inputs. */
function batchedConditioning(
  positive: PromptEmbeddings,
  negative: PromptEmbeddings | undefined,
  n: number,
): { hidden: Float32Array; pooled: Float32Array } {
  const rows = [...(negative ? Array(n).fill(negative) : []), ...Array(n).fill(positive)] as PromptEmbeddings[];
  const hidden = new Float32Array(rows.length * positive.hidden.length);
  const pooled = new Float32Array(rows.length * positive.pooled.length);
  rows.forEach((r, i) => {
    hidden.set(r.hidden, i * positive.hidden.length);
    pooled.set(r.pooled, i * positive.pooled.length);
  });
  return { hidden, pooled };
}

const SAMPLER_NAMES: Record<string, string> = {
  euler: "Euler",
  euler_a: "Euler a",
  dpmpp_2m: "DPM++ 2M",
  ddim: "DDIM",
};

/**
 * The A1111 `parameters` text, so tools that read it show how the image was made. As A1111 writes it, `Size` is
 * the first pass's size (a latent upscale shows as `Hires upscale`), and `Clip skip` counts from the last layer
 * (A1111's 2 is SDXL's default penultimate layer, diffusers' `clip_skip` 0), so it is `clip_skip + 2`.
 */
export function generationParameters(
  plan: RenderPlan,
  model: SdxlModel,
  imageIndex: number,
  scheduler: string,
): string {
  const hires = plan.mode === "sdedit" && plan.hiresScale !== 1;
  const fields: [string, string | number | undefined][] = [
    ["Steps", plan.steps],
    ["Sampler", SAMPLER_NAMES[scheduler] ?? scheduler],
    ["Schedule type", plan.karras ? "Karras" : undefined],
    ["CFG scale", plan.guidanceScale],
    ["Seed", plan.seed + imageIndex],
    ["Size", `${plan.width}x${plan.height}`],
    ["Model", model.name],
    ["Mode", plan.mode],
    ["Refiner switch at", plan.mode === "ensemble" ? plan.highNoiseFrac : undefined],
    ["Denoising strength", plan.mode === "sdedit" || plan.source ? plan.strength : undefined],
    ["Hires upscale", hires ? plan.hiresScale : undefined],
    ["Hires upscaler", hires ? "Latent" : undefined],
    ["CFG rescale", plan.guidanceRescale || undefined],
    ["Clip skip", plan.clipSkip ? plan.clipSkip + 2 : undefined],
    ["Version", "Kiln"],
  ];
  const line = fields
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}: ${v}`)
    .join(", ");
  return [plan.prompt, plan.negativePrompt ? `Negative prompt: ${plan.negativePrompt}` : undefined, line]
    .filter(Boolean)
    .join("\n");
}
