import { KilnError } from "@kiln/shared";
import type { Logger } from "@kiln/shared/node";
import type * as ort from "onnxruntime-node";

import { SDXL_LATENT_CHANNELS, SDXL_VAE_FACTOR } from "../models/sdxl-spec.js";
import { pinFeed } from "../onnx/device-thread/device-thread.js";
import { FloatFeed, outputAsFloat32, TimestepFeed } from "../onnx/tensors.js";
import type { GpuTurn } from "../runtime/pipeline/gpu-turns.js";
import { applyGuidance, fillModelInput } from "./guidance.js";
import { blendKnownLatents, fillInpaintModelInput } from "./img2img/mask.js";
import type { LatentBlend } from "./img2img/prepare-latents.js";
import { firstNonFinite } from "./latent-ops.js";
import type { NoiseSource } from "./noise.js";
import { noiseHelper, type NoiseStream } from "./noise-helper.js";
import type { Scheduler } from "./schedulers/scheduler.js";
import type { SdxlModel } from "./sdxl-model.js";

/**
 * One job's stage as the denoising loop (step 6 of `runPipelineStage`) sees it: everything it owns — its
 * latents, scheduler instance, generators, guidance, blend and conditioning rows — prepared by steps 1–5.
 * Several members that agree on what one UNet call shares (see `unetBatchSignature`) denoise as one batch.
 */
export interface DenoiseMember {
  model: SdxlModel;
  /** Images of this job (its latents hold `n` of them). */
  n: number;
  /** Classifier-free guidance: this member's rows are [negative × n, positive × n], else [positive × n]. */
  guided: boolean;
  guidanceScale: number;
  guidanceRescale: number;
  scheduler: Scheduler;
  /** This stage's slice of the schedule. */
  begin: number;
  end: number;
  /** [n, 4, h, w], stepped in place. */
  latents: Float32Array;
  shape: readonly number[];
  /** This member's UNet conditioning rows, in its own row order. */
  hidden: Float32Array;
  pooled: Float32Array;
  timeIds: Float32Array;
  /** Per-token embeddings: tokens × width per row. */
  tokens: number;
  width: number;
  /** 9-channel inpainting: per image, the mask ‖ masked-picture latents appended to its UNet input. */
  inpaintConditioning?: Float32Array[];
  /** 4-channel inpainting: the picture re-noised and blended in outside the mask after each step. */
  blend?: LatentBlend;
  generators: NoiseSource[];
  onStep?(step: number, steps: number, latents: Float32Array, shape: readonly number[]): void | Promise<void>;
  /** Aborting takes this member out of the batch at the next step boundary; the others go on. */
  signal?: AbortSignal;
}

/**
 * `unetSeconds`: this member's share of the time in the UNet's `session.run` (each call's time split by its rows,
 * so the members' shares add up to the GPU time, not a multiple of it); `denoiseSeconds`: the whole loop.
 */
export interface DenoiseTimes {
  unetSeconds: number;
  denoiseSeconds: number;
}

const UNET_FETCHES = ["out_sample"];

const modelIds = new WeakMap<SdxlModel, number>();
let nextModelId = 0;

/**
 * What members of one UNet batch must share: the session (model, and with TensorRT the bucket), the latent
 * size and input channels, the prompt embeddings' token count and width (one `encoder_hidden_states` tensor),
 * guidance on or off, and the very timesteps of their slices (one `timestep` input per call). Scheduler family,
 * seeds, prompts, guidance scale and rescale, n, blends stay each member's own.
 */
export function unetBatchSignature(m: DenoiseMember): string {
  let id = modelIds.get(m.model);
  if (id === undefined) modelIds.set(m.model, (id = nextModelId++));
  const channels =
    SDXL_LATENT_CHANNELS + (m.inpaintConditioning ? m.inpaintConditioning[0]!.length / sampleSize(m) : 0);
  const timesteps = Array.from(m.scheduler.timesteps.slice(m.begin, m.end)).join(",");
  return [id, m.shape[2], m.shape[3], channels, m.tokens, m.width, m.guided, m.begin, m.end, timesteps].join("|");
}

const sampleSize = (m: DenoiseMember) => m.shape[2]! * m.shape[3]!;
/** A member's rows in the UNet batch. */
export const rowsOf = (m: DenoiseMember): number => (m.guided ? 2 * m.n : m.n);

/** The session a UNet batch of `rows` rows runs on: a TensorRT engine inside its batch profile, else the model's. */
export function unetSessionFor(m: DenoiseMember, rows: number): SdxlModel["unet"] {
  const [, , h, w] = m.shape as [number, number, number, number];
  return m.model.engines?.sessionFor("unet", w * SDXL_VAE_FACTOR, h * SDXL_VAE_FACTOR, rows) ?? m.model.unet;
}

/**
 * Cuts members of one signature, in order, into UNet batches that each run on the session their first member
 * runs on alone: a TensorRT engine's profile covers 2–8 rows, and a larger batch would fall back to the model's own
 * (far slower) session, so batching never moves a stage off its engine. `sessionOf(first, rows)`: `unetSessionFor`.
 */
export function splitBySession<M extends DenoiseMember>(
  members: readonly M[],
  sessionOf: (first: M, rows: number) => unknown = unetSessionFor,
): M[][] {
  const batches: M[][] = [];
  let current: M[] = [];
  let rows = 0;
  for (const m of members) {
    const first = current[0];
    if (first && sessionOf(first, rows + rowsOf(m)) !== sessionOf(first, rowsOf(first))) {
      batches.push(current);
      current = [];
      rows = 0;
    }
    current.push(m);
    rows += rowsOf(m);
  }
  if (current.length) batches.push(current);
  return batches;
}

/** The UNet's feeds for the members in the batch: each member's rows, one after another. */
class UnetBatch {
  readonly unet: SdxlModel["unet"];
  readonly sample: FloatFeed;
  readonly timestep: TimestepFeed;
  readonly feeds: Record<string, ort.Tensor>;
  /** Row offset of each member in the batch. */
  readonly offsets: number[];
  readonly fp16Output?: Float32Array;
  private readonly channels: number;

  constructor(readonly members: readonly DenoiseMember[]) {
    const first = members[0]!;
    const [, , h, w] = first.shape as [number, number, number, number];
    this.offsets = [];
    let batch = 0;
    for (const m of members) {
      this.offsets.push(batch);
      batch += rowsOf(m);
    }
    // A TensorRT engine built for this bucket and batch, when the worker has one; else the model's own session.
    this.unet = unetSessionFor(first, batch);
    const cat = (part: (m: DenoiseMember) => Float32Array) => {
      if (members.length === 1) return part(first);
      const out = new Float32Array(members.reduce((s, m) => s + part(m).length, 0));
      let at = 0;
      for (const m of members) {
        out.set(part(m), at);
        at += part(m).length;
      }
      return out;
    };
    this.channels =
      SDXL_LATENT_CHANNELS + (first.inpaintConditioning ? first.inpaintConditioning[0]!.length / (h * w) : 0);
    this.sample = new FloatFeed(this.unet, "sample", [batch, this.channels, h, w]);
    this.timestep = new TimestepFeed(this.unet, batch);
    // The conditioning is the same on every step: pinned, a device thread receives it once per batch.
    this.feeds = {
      sample: this.sample.tensor,
      timestep: this.timestep.tensor,
      encoder_hidden_states: pinFeed(
        new FloatFeed(
          this.unet,
          "encoder_hidden_states",
          [batch, first.tokens, first.width],
          cat((m) => m.hidden),
        ).tensor,
      ),
      text_embeds: pinFeed(
        new FloatFeed(
          this.unet,
          "text_embeds",
          [batch, first.pooled.length / rowsOf(first)],
          cat((m) => m.pooled),
        ).tensor,
      ),
      time_ids: pinFeed(
        new FloatFeed(
          this.unet,
          "time_ids",
          [batch, first.timeIds.length / rowsOf(first)],
          cat((m) => m.timeIds),
        ).tensor,
      ),
    };
    this.fp16Output =
      this.unet.outputs.find((o) => o.name === "out_sample")?.dtype === "float16"
        ? new Float32Array(batch * SDXL_LATENT_CHANNELS * h * w)
        : undefined;
  }

  /** Member k's rows of a [batch, c, h, w] array with `c` channels per row. */
  rows(values: Float32Array, k: number, c: number): Float32Array {
    const row = c * sampleSize(this.members[k]!);
    return values.subarray(this.offsets[k]! * row, (this.offsets[k]! + rowsOf(this.members[k]!)) * row);
  }

  sampleRows(k: number): Float32Array {
    return this.rows(this.sample.values, k, this.channels);
  }
}

/**
 * Step 6 of `runPipelineStage` for one or several jobs' stages: one UNet call per step over the concatenation
 * of each member's own rows ([negative × n, positive × n] with guidance), then guidance, the scheduler step and
 * the inpaint blend per member on its own slice. Members must share `unetBatchSignature`. A single job is the
 * batch of one: its feeds, order of operations and results are those of the loop before batching.
 *
 * Per member: an aborted signal takes it out at the next step boundary (its rows leave the batch, the others go
 * on); an error in its own work (guidance, step, blend, progress hook, non-finite latents) fails only it. Errors
 * of the shared UNet call or GPU turn fail every member still in the batch.
 *
 * Nothing is allocated per step on our side while the batch is unchanged: the sample is scaled in one pass and
 * copied natively into the second CFG half, guidance writes into a fixed buffer, the scheduler steps the latents in
 * place, and ancestral noise is drawn on a helper thread while the UNet runs (else on this thread, same values).
 */
export async function denoiseTogether(
  members: readonly DenoiseMember[],
  options: { gpu?: GpuTurn; signal?: AbortSignal; logger?: Logger } = {},
): Promise<PromiseSettledResult<DenoiseTimes>[]> {
  const results: (PromiseSettledResult<DenoiseTimes> | undefined)[] = members.map(() => undefined);
  const fail = (k: number, reason: unknown) => (results[k] ??= { status: "rejected", reason });
  const guidedNoise = members.map((m) => (m.guided ? new Float32Array(m.latents.length) : undefined));
  const helper = members.some((m) => m.scheduler.stochastic) ? await noiseHelper(options.logger) : undefined;
  const streams: (NoiseStream | undefined)[] = members.map((m) =>
    m.scheduler.stochastic ? helper?.open(m.generators, m.latents.length) : undefined,
  );
  const { begin, end } = members[0]!;
  const steps = end - begin;
  const unetSeconds = members.map(() => 0);
  let denoiseStarted = performance.now();
  let active = members.map((_, k) => k);
  try {
    await options.gpu?.acquire(options.signal);
    denoiseStarted = performance.now();
    let batch: UnetBatch | undefined;
    let batchOf: number[] = [];
    for (let i = begin; i < end; i++) {
      for (const k of active) {
        const signal = members[k]!.signal;
        if (signal?.aborted) fail(k, signal.reason);
      }
      active = active.filter((k) => !results[k]);
      if (active.length === 0) break;
      if (active.length !== batchOf.length) {
        batch = new UnetBatch(active.map((k) => members[k]!));
        batchOf = active;
      }
      const b = batch!;
      batchOf.forEach((k, slot) => {
        const m = members[k]!;
        streams[k]?.request();
        const divisor = m.scheduler.modelInputDivisor();
        if (m.inpaintConditioning) fillInpaintModelInput(m.latents, divisor, m.inpaintConditioning, b.sampleRows(slot));
        else fillModelInput(m.latents, divisor, b.sampleRows(slot));
      });
      b.sample.sync();
      b.timestep.set(members[batchOf[0]!]!.scheduler.timesteps[i]!);
      const started = performance.now();
      const out = await b.unet.session.run(b.feeds, UNET_FETCHES);
      const seconds = (performance.now() - started) / 1000;
      const rows = b.offsets.at(-1)! + rowsOf(members[batchOf.at(-1)!]!);
      for (const k of batchOf) unetSeconds[k]! += (seconds * rowsOf(members[k]!)) / rows;
      const predicted = outputAsFloat32(out.out_sample as ort.Tensor, b.fp16Output);
      for (const [slot, k] of batchOf.entries()) {
        const m = members[k]!;
        try {
          const own = batchOf.length === 1 ? predicted : b.rows(predicted, slot, SDXL_LATENT_CHANNELS);
          const noisePred = guidedNoise[k]
            ? applyGuidance(own, m.n, m.guidanceScale, m.guidanceRescale, guidedNoise[k])
            : own;
          const noise = streams[k];
          m.scheduler.step(noisePred, m.latents, noise ? noise.take() : m.generators, m.latents);
          if (m.blend) {
            // diffusers' 4-channel inpainting: outside the mask, the picture re-noised to the next step's level
            // (clean after the schedule's last step).
            const known =
              i + 1 < m.scheduler.timesteps.length
                ? m.scheduler.addNoise(m.blend.imageLatents, m.blend.noise, i + 1)
                : m.blend.imageLatents;
            blendKnownLatents(m.latents, known, m.blend.mask);
          }
          await m.onStep?.(i - begin + 1, steps, m.latents, m.shape);
        } catch (e) {
          fail(k, e);
        }
      }
    }
  } catch (e) {
    for (const k of active) fail(k, e);
  } finally {
    for (const s of streams) s?.close();
  }
  const denoiseSeconds = (performance.now() - denoiseStarted) / 1000;
  for (const k of active) {
    const latents = members[k]!.latents;
    const bad = firstNonFinite(latents);
    if (bad >= 0) {
      fail(
        k,
        new KilnError(
          "latents_non_finite",
          `Denoising produced ${latents[bad]} in the latents; the model or its precision is broken (try fp32 or another scheduler).`,
        ),
      );
    }
    results[k] ??= { status: "fulfilled", value: { unetSeconds: unetSeconds[k]!, denoiseSeconds } };
  }
  return results.map((r) => r!);
}
