import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import * as ort from "onnxruntime-node";

import { writeTinyModel, writeTinyModels } from "../src/models/tiny-models.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-tiny-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function listFiles(root: string): string[] {
  return (fs.readdirSync(root, { recursive: true }) as string[])
    .filter((f) => fs.statSync(path.join(root, f)).isFile())
    .sort();
}

function folderSize(root: string): number {
  return listFiles(root).reduce((sum, f) => sum + fs.statSync(path.join(root, f)).size, 0);
}

const open = (dir: string, component: string) => ort.InferenceSession.create(path.join(dir, component, "model.onnx"));

/** BOS, the tokens, EOS, then padding — as the CLIP tokenizers lay out 77 ids. */
function idsRow(tokens: number[], pad: number): number[] {
  const row = [49406, ...tokens, 49407];
  while (row.length < 77) row.push(pad);
  return row;
}

function idsTensor(rows: number[][], dtype: "int32" | "int64" = "int32"): ort.Tensor {
  const flat = rows.flat();
  return dtype === "int32"
    ? new ort.Tensor("int32", Int32Array.from(flat), [rows.length, 77])
    : new ort.Tensor("int64", BigInt64Array.from(flat.map(BigInt)), [rows.length, 77]);
}

function floats(t: ort.Tensor): Float32Array {
  return t.data as Float32Array;
}

function slice(t: ort.Tensor, batchIndex: number): Float32Array {
  const per = t.size / t.dims[0];
  return floats(t).subarray(batchIndex * per, (batchIndex + 1) * per);
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function range(a: Float32Array): { min: number; max: number } {
  let min = Infinity;
  let max = -Infinity;
  for (const x of a) {
    if (x < min) min = x;
    if (x > max) max = x;
  }
  return { min, max };
}

/** Deterministic pseudo-noise in [-1, 1]. */
function wave(n: number, phase = 0): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.731 + phase) * Math.cos(i * 0.117));
}

interface UnetFeedSpec {
  batch: number;
  size: number;
  embedWidth: number;
  timeIdsWidth: number;
}

function unetFeeds(spec: UnetFeedSpec): Record<string, ort.Tensor> {
  const { batch: b, size: s, embedWidth: e, timeIdsWidth: n } = spec;
  const timeIds = spec.timeIdsWidth === 6 ? [s * 8, s * 8, 0, 0, s * 8, s * 8] : [s * 8, s * 8, 0, 0, 6];
  return {
    sample: new ort.Tensor("float32", wave(b * 4 * s * s), [b, 4, s, s]),
    timestep: new ort.Tensor("float32", Float32Array.from([801]), [1]),
    encoder_hidden_states: new ort.Tensor("float32", wave(b * 77 * e, 1), [b, 77, e]),
    text_embeds: new ort.Tensor("float32", wave(b * 1280, 2), [b, 1280]),
    time_ids: new ort.Tensor("float32", Float32Array.from(Array.from({ length: b }, () => timeIds).flat()), [b, n]),
  };
}

describe("tiny SDXL models", () => {
  let base = "";
  let refiner = "";

  before(() => {
    ({ base, refiner } = writeTinyModels(path.join(tmp, "a"), 7));
  });

  it("writes byte-identical folders for the same seed, and different weights for another seed", async () => {
    const again = writeTinyModels(path.join(tmp, "b"), 7);
    for (const [first, second] of [
      [base, again.base],
      [refiner, again.refiner],
    ]) {
      const files = listFiles(first);
      assert.deepEqual(listFiles(second), files);
      for (const f of files)
        assert.ok(
          fs.readFileSync(path.join(first, f)).equals(fs.readFileSync(path.join(second, f))),
          `${f} differs between runs`,
        );
    }
    const other = path.join(tmp, "seed8");
    writeTinyModel(other, { role: "base", seed: 8 });
    assert.ok(
      !fs
        .readFileSync(path.join(base, "unet/model.onnx_data"))
        .equals(fs.readFileSync(path.join(other, "unet/model.onnx_data"))),
    );
    fs.rmSync(path.join(tmp, "b"), { recursive: true });
  });

  it("lays the folders out as a diffusers SDXL ONNX export", () => {
    const common = [
      "model_index.json",
      "scheduler/scheduler_config.json",
      "tokenizer_2/merges.txt",
      "tokenizer_2/vocab.json",
      "text_encoder_2/model.onnx",
      "unet/model.onnx",
      "unet/model.onnx_data",
      "vae_decoder/model.onnx",
      "vae_encoder/model.onnx",
    ];
    const baseFiles = listFiles(base);
    const refinerFiles = listFiles(refiner);
    for (const f of [...common, "tokenizer/vocab.json", "tokenizer/merges.txt", "text_encoder/model.onnx"])
      assert.ok(baseFiles.includes(f), `base lacks ${f}`);
    for (const f of common) assert.ok(refinerFiles.includes(f), `refiner lacks ${f}`);
    assert.ok(!refinerFiles.some((f) => f.startsWith("tokenizer/") || f.startsWith("text_encoder/")));

    const baseIndex = JSON.parse(fs.readFileSync(path.join(base, "model_index.json"), "utf8"));
    assert.equal(baseIndex._class_name, "StableDiffusionXLPipeline");
    assert.equal(baseIndex.force_zeros_for_empty_prompt, true);
    assert.equal(baseIndex._kiln_tiny, true);
    assert.deepEqual(baseIndex.text_encoder_2, ["transformers", "CLIPTextModelWithProjection"]);
    const refinerIndex = JSON.parse(fs.readFileSync(path.join(refiner, "model_index.json"), "utf8"));
    assert.equal(refinerIndex._class_name, "StableDiffusionXLImg2ImgPipeline");
    assert.equal(refinerIndex.force_zeros_for_empty_prompt, false);
    assert.equal(refinerIndex.requires_aesthetics_score, true);
    assert.deepEqual(refinerIndex.text_encoder, [null, null]);

    const scheduler = JSON.parse(fs.readFileSync(path.join(base, "scheduler/scheduler_config.json"), "utf8"));
    assert.deepEqual(
      [
        scheduler._class_name,
        scheduler.beta_schedule,
        scheduler.beta_start,
        scheduler.beta_end,
        scheduler.num_train_timesteps,
      ],
      ["EulerDiscreteScheduler", "scaled_linear", 0.00085, 0.012, 1000],
    );
    assert.deepEqual(
      [scheduler.prediction_type, scheduler.timestep_spacing, scheduler.steps_offset, scheduler.use_karras_sigmas],
      ["epsilon", "leading", 1, false],
    );

    const size = folderSize(base) + folderSize(refiner);
    assert.ok(size < 10 * 1024 * 1024, `tiny models take ${size} bytes`);
  });

  it("keeps the UNet weights inline when asked", async () => {
    const dir = path.join(tmp, "inline");
    writeTinyModel(dir, { role: "refiner", seed: 7, unetExternalData: false });
    assert.ok(!fs.existsSync(path.join(dir, "unet/model.onnx_data")));
    const unet = await open(dir, "unet");
    const out = await unet.run(unetFeeds({ batch: 1, size: 8, embedWidth: 1280, timeIdsWidth: 5 }));
    assert.deepEqual(out.out_sample.dims, [1, 4, 8, 8]);
  });

  it("text encoders: real names and widths, penultimate ≠ last, prompt and EOS position matter", async () => {
    const te1 = await open(base, "text_encoder");
    const te2 = await open(base, "text_encoder_2");
    const catPhoto = [320, 1125, 539, 320, 2368];
    const dogPhoto = [320, 1125, 539, 320, 1929];

    const o1 = await te1.run({ input_ids: idsTensor([idsRow(catPhoto, 49407), idsRow(dogPhoto, 49407)]) });
    assert.deepEqual(o1.last_hidden_state.dims, [2, 77, 768]);
    assert.deepEqual(o1.pooler_output.dims, [2, 768]);
    for (let k = 0; k <= 12; k++) assert.deepEqual(o1[`hidden_states.${k}`].dims, [2, 77, 768]);
    assert.equal(o1["hidden_states.13"], undefined);
    assert.ok(maxAbsDiff(floats(o1["hidden_states.11"]), floats(o1["hidden_states.12"])) > 1e-3);
    assert.ok(maxAbsDiff(floats(o1["hidden_states.12"]), floats(o1.last_hidden_state)) > 1e-3);
    assert.ok(
      maxAbsDiff(slice(o1["hidden_states.11"], 0), slice(o1["hidden_states.11"], 1)) > 1e-3,
      "prompts must differ",
    );
    assert.ok(maxAbsDiff(slice(o1.pooler_output, 0), slice(o1.pooler_output, 1)) > 1e-3);

    const o2 = await te2.run({ input_ids: idsTensor([idsRow(catPhoto, 0), idsRow(dogPhoto, 0)]) });
    assert.deepEqual(o2.text_embeds.dims, [2, 1280]);
    assert.deepEqual(o2.last_hidden_state.dims, [2, 77, 1280]);
    for (let k = 0; k <= 32; k++) assert.deepEqual(o2[`hidden_states.${k}`].dims, [2, 77, 1280]);
    assert.equal(o2.pooler_output, undefined);
    assert.ok(maxAbsDiff(floats(o2["hidden_states.31"]), floats(o2["hidden_states.32"])) > 1e-3);
    assert.ok(maxAbsDiff(slice(o2.text_embeds, 0), slice(o2.text_embeds, 1)) > 1e-3);

    // The pooled embedding is read at the EOS token: the same first tokens with EOS one later must differ.
    const shorter = await te2.run({ input_ids: idsTensor([idsRow(catPhoto.slice(0, 4), 0), idsRow(catPhoto, 0)]) });
    assert.ok(maxAbsDiff(slice(shorter.text_embeds, 0), slice(shorter.text_embeds, 1)) > 1e-3);
    // The first token's features see nothing after it (causal), like CLIP's.
    const firstToken = (t: ort.Tensor, b: number) => slice(t, b).subarray(0, 2 * 1280);
    assert.ok(
      maxAbsDiff(firstToken(shorter["hidden_states.31"], 0), firstToken(shorter["hidden_states.31"], 1)) < 1e-6,
    );
  });

  it("text encoders accept int64 input_ids when generated so", async () => {
    const dir = path.join(tmp, "int64");
    writeTinyModel(dir, { role: "refiner", seed: 7, inputIdsDtype: "int64", timestepDtype: "int64", timestepRank: 0 });
    const te2 = await open(dir, "text_encoder_2");
    assert.equal((te2.inputMetadata[0] as { type: string }).type, "int64");
    const out = await te2.run({ input_ids: idsTensor([idsRow([320], 0)], "int64") });
    assert.deepEqual(out.text_embeds.dims, [1, 1280]);
    const unet = await open(dir, "unet");
    const feeds = unetFeeds({ batch: 2, size: 16, embedWidth: 1280, timeIdsWidth: 5 });
    const a = await unet.run({ ...feeds, timestep: new ort.Tensor("int64", BigInt64Array.from([801n]), []) });
    const b = await unet.run({ ...feeds, timestep: new ort.Tensor("int64", BigInt64Array.from([101n]), []) });
    assert.deepEqual(a.out_sample.dims, [2, 4, 16, 16]);
    assert.ok(maxAbsDiff(floats(a.out_sample), floats(b.out_sample)) > 1e-3);
  });

  it("UNet: output shape for B=2 at 32×32 and 128×128, and every input changes the output", async () => {
    const unet = await open(base, "unet");
    for (const size of [32, 128]) {
      const out = await unet.run(unetFeeds({ batch: 2, size, embedWidth: 2048, timeIdsWidth: 6 }));
      assert.deepEqual(out.out_sample.dims, [2, 4, size, size]);
    }

    const feeds = unetFeeds({ batch: 2, size: 32, embedWidth: 2048, timeIdsWidth: 6 });
    const reference = floats((await unet.run(feeds)).out_sample);
    const { min, max } = range(reference);
    assert.ok(min > -2 && max < 2 && max - min > 0.5, `epsilon-like scale, got [${min}, ${max}]`);

    const changed: Record<string, ort.Tensor> = {
      sample: new ort.Tensor("float32", wave(2 * 4 * 32 * 32, 3), [2, 4, 32, 32]),
      timestep: new ort.Tensor("float32", Float32Array.from([21]), [1]),
      encoder_hidden_states: new ort.Tensor("float32", wave(2 * 77 * 2048, 4), [2, 77, 2048]),
      text_embeds: new ort.Tensor("float32", wave(2 * 1280, 5), [2, 1280]),
      time_ids: new ort.Tensor(
        "float32",
        Float32Array.from([512, 512, 64, 0, 256, 256, 512, 512, 64, 0, 256, 256]),
        [2, 6],
      ),
    };
    for (const [name, tensor] of Object.entries(changed)) {
      const out = floats((await unet.run({ ...feeds, [name]: tensor })).out_sample);
      assert.ok(maxAbsDiff(reference, out) > 1e-3, `changing ${name} must change out_sample`);
    }

    // CFG: an all-zero negative embedding and the prompt's embedding give different predictions for the same latents.
    const cfgFeeds = unetFeeds({ batch: 2, size: 32, embedWidth: 2048, timeIdsWidth: 6 });
    const latents = wave(4 * 32 * 32, 6);
    const tokens = new Float32Array(2 * 77 * 2048);
    tokens.set(wave(77 * 2048, 7), 77 * 2048);
    const pooled = new Float32Array(2 * 1280);
    pooled.set(wave(1280, 8), 1280);
    const cfg = await unet.run({
      ...cfgFeeds,
      sample: new ort.Tensor("float32", Float32Array.from([...latents, ...latents]), [2, 4, 32, 32]),
      encoder_hidden_states: new ort.Tensor("float32", tokens, [2, 77, 2048]),
      text_embeds: new ort.Tensor("float32", pooled, [2, 1280]),
    });
    assert.ok(maxAbsDiff(slice(cfg.out_sample, 0), slice(cfg.out_sample, 1)) > 1e-3);
  });

  it("refiner UNet takes 1280-wide embeddings and 5 time ids, with weights of its own", async () => {
    const baseUnet = await open(base, "unet");
    const refinerUnet = await open(refiner, "unet");
    const inputs = Object.fromEntries(refinerUnet.inputMetadata.map((m) => [m.name, m.isTensor ? m.shape : []]));
    assert.deepEqual(inputs.encoder_hidden_states, ["batch_size", "sequence_length", 1280]);
    assert.deepEqual(inputs.time_ids, ["batch_size", 5]);

    const zeros = (width: number, n: number) => ({
      sample: new ort.Tensor("float32", wave(4 * 16 * 16), [1, 4, 16, 16]),
      timestep: new ort.Tensor("float32", Float32Array.from([500]), [1]),
      encoder_hidden_states: new ort.Tensor("float32", new Float32Array(77 * width), [1, 77, width]),
      text_embeds: new ort.Tensor("float32", new Float32Array(1280), [1, 1280]),
      time_ids: new ort.Tensor("float32", new Float32Array(n), [1, n]),
    });
    const a = await baseUnet.run(zeros(2048, 6));
    const b = await refinerUnet.run(zeros(1280, 5));
    assert.ok(maxAbsDiff(floats(a.out_sample), floats(b.out_sample)) > 1e-3);
  });

  it("a 30-step Euler loop over the tiny UNet stays finite", async () => {
    const unet = await open(base, "unet");
    const feeds = unetFeeds({ batch: 2, size: 32, embedWidth: 2048, timeIdsWidth: 6 });
    const sigmas = Array.from({ length: 30 }, (_, i) => 14.6147 * Math.pow(0.02917 / 14.6147, i / 29)).concat(0);
    let x = Float32Array.from(wave(2 * 4 * 32 * 32), (v) => v * Math.sqrt(sigmas[0] ** 2 + 1));
    for (let i = 0; i < 30; i++) {
      const sigma = sigmas[i];
      const scaled = Float32Array.from(x, (v) => v / Math.sqrt(sigma * sigma + 1));
      const eps = floats(
        (
          await unet.run({
            ...feeds,
            sample: new ort.Tensor("float32", scaled, [2, 4, 32, 32]),
            timestep: new ort.Tensor("float32", Float32Array.from([999 - i * 33]), [1]),
          })
        ).out_sample,
      );
      x = Float32Array.from(x, (v, j) => v + eps[j] * (sigmas[i + 1] - sigma));
    }
    const { min, max } = range(x);
    assert.ok(
      Number.isFinite(min) && Number.isFinite(max) && Math.abs(min) < 50 && Math.abs(max) < 50,
      `latents [${min}, ${max}]`,
    );
  });

  it("VAE decoder: ×8 upsampling to [-1, 1] with spatial structure; encoder ÷8", async () => {
    const decoder = await open(base, "vae_decoder");
    const latents = Float32Array.from(wave(2 * 4 * 32 * 32), (v) => (v * 2) / 0.13025);
    const image = (await decoder.run({ latent_sample: new ort.Tensor("float32", latents, [2, 4, 32, 32]) })).sample;
    assert.deepEqual(image.dims, [2, 3, 256, 256]);
    const { min, max } = range(floats(image));
    assert.ok(min >= -1 && max <= 1 && max - min > 0.5, `image range [${min}, ${max}]`);

    const big = (await decoder.run({ latent_sample: new ort.Tensor("float32", wave(4 * 128 * 128), [1, 4, 128, 128]) }))
      .sample;
    assert.deepEqual(big.dims, [1, 3, 1024, 1024]);

    const encoder = await open(base, "vae_encoder");
    const encoded = await encoder.run({ sample: new ort.Tensor("float32", floats(image), [2, 3, 256, 256]) });
    // optimum's layout: the distribution's mean ‖ logvar on the channel axis.
    assert.deepEqual(encoded.latent_parameters.dims, [2, 8, 32, 32]);
  });
});
