import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { KilnError } from "@kiln/shared";
import onnxProto from "onnx-proto";

import { loadModelFolder, type ModelRole } from "../src/models/model-folder.js";
import { writeTinyModel, writeTinyModels } from "../src/models/tiny-models.js";
import type { SessionLogger } from "../src/onnx/session-factory.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-folder-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const cpu = { providers: ["cpu"] as const };
let copies = 0;

function recordingLogger() {
  const lines: { level: string; obj: object; msg: string }[] = [];
  const logger: SessionLogger = {
    info: (obj, msg) => lines.push({ level: "info", obj, msg }),
    warn: (obj, msg) => lines.push({ level: "warn", obj, msg }),
  };
  return { logger, lines };
}

async function expectInvalid(dir: string, role: ModelRole, pattern: RegExp): Promise<KilnError> {
  let caught: unknown;
  try {
    const folder = await loadModelFolder(dir, role, cpu);
    await folder.release();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof KilnError, `expected a KilnError, got ${String(caught)}`);
  assert.equal(caught.code, "model_folder_invalid", caught.message);
  assert.match(caught.message, pattern);
  return caught;
}

describe("loadModelFolder", () => {
  let base = "";
  let refiner = "";

  before(() => {
    ({ base, refiner } = writeTinyModels(path.join(tmp, "models"), 11));
  });

  /** A fresh copy to break. */
  function copyOf(dir: string): string {
    copies += 1;
    const target = path.join(tmp, `copy-${copies}`);
    fs.cpSync(dir, target, { recursive: true });
    return target;
  }

  it("loads the tiny base model with everything the engine needs, and says loudly that it is a test model", async () => {
    const { logger, lines } = recordingLogger();
    const folder = await loadModelFolder(base, "base", { ...cpu, logger });
    try {
      assert.equal(folder.role, "base");
      assert.equal(folder.dir, path.resolve(base));
      assert.equal(folder.isTinyTestModel, true);
      assert.equal(folder.index._class_name, "StableDiffusionXLPipeline");
      assert.equal(JSON.parse(folder.schedulerConfigJson)._class_name, "EulerDiscreteScheduler");
      assert.deepEqual(folder.tokenizerDirs, {
        tokenizer: path.join(folder.dir, "tokenizer"),
        tokenizer2: path.join(folder.dir, "tokenizer_2"),
      });
      assert.deepEqual(folder.unet, {
        embedWidth: 2048,
        timeIdsWidth: 6,
        timestepDtype: "float32",
        timestepRank: 1,
        floatDtype: "float32",
        inChannels: 4,
      });
      // optimum's vae_encoder is loaded when the folder has one (img2img, inpaint, outpaint).
      assert.ok(folder.sessions.vaeEncoder);
      assert.deepEqual(folder.textEncoders.textEncoder, {
        inputIdsDtype: "int32",
        hiddenStateCount: 13,
        penultimateOutput: "hidden_states.11",
        width: 768,
      });
      assert.deepEqual(folder.textEncoders.textEncoder2, {
        inputIdsDtype: "int32",
        hiddenStateCount: 33,
        penultimateOutput: "hidden_states.31",
        width: 1280,
      });
      assert.equal(folder.vaeDecoderDtype, "float32");
      assert.equal(folder.sessions.unet.provider, "cpu");
      assert.ok(folder.sessions.textEncoder && folder.sessions.textEncoder2 && folder.sessions.vaeDecoder);
      assert.ok(lines.some((l) => l.level === "warn" && /TINY TEST MODEL/.test(l.msg) && /noise/.test(l.msg)));
    } finally {
      await folder.release();
    }
  });

  it("loads the tiny refiner: no first text encoder, 1280-wide embeddings, 5 time ids", async () => {
    const folder = await loadModelFolder(refiner, "refiner", cpu);
    try {
      assert.equal(folder.sessions.textEncoder, undefined);
      assert.equal(folder.textEncoders.textEncoder, undefined);
      assert.equal(folder.tokenizerDirs.tokenizer, undefined);
      assert.equal(folder.unet.embedWidth, 1280);
      assert.equal(folder.unet.timeIdsWidth, 5);
      assert.equal(folder.index.requires_aesthetics_score, true);
    } finally {
      await folder.release();
    }
  });

  it("reports the timestep and input_ids dtypes and ranks an export uses", async () => {
    const dir = path.join(tmp, "variant-int64");
    writeTinyModel(dir, { role: "base", seed: 11, timestepDtype: "int64", timestepRank: 0, inputIdsDtype: "int64" });
    const folder = await loadModelFolder(dir, "base", cpu);
    assert.equal(folder.unet.timestepDtype, "int64");
    assert.equal(folder.unet.timestepRank, 0);
    assert.equal(folder.textEncoders.textEncoder?.inputIdsDtype, "int64");
    assert.equal(folder.textEncoders.textEncoder2.inputIdsDtype, "int64");
    await folder.release();

    const fp16 = path.join(tmp, "variant-fp16");
    writeTinyModel(fp16, { role: "refiner", seed: 11, timestepDtype: "float16", unetExternalData: false });
    const folder16 = await loadModelFolder(fp16, "refiner", cpu);
    assert.equal(folder16.unet.timestepDtype, "float16");
    assert.equal(folder16.unet.timestepRank, 1);
    await folder16.release();
  });

  it("rejects a folder that does not exist", async () => {
    await expectInvalid(path.join(tmp, "no-such-dir"), "base", /no-such-dir does not exist.*KILN_MODEL_DIR/);
  });

  it("rejects a missing or unreadable model_index.json", async () => {
    const missing = copyOf(refiner);
    fs.rmSync(path.join(missing, "model_index.json"));
    await expectInvalid(missing, "refiner", /model_index\.json is missing/);

    const garbled = copyOf(refiner);
    fs.writeFileSync(path.join(garbled, "model_index.json"), "{ not json");
    await expectInvalid(garbled, "refiner", /model_index\.json is unreadable/);

    const notSdxl = copyOf(refiner);
    fs.writeFileSync(
      path.join(notSdxl, "model_index.json"),
      JSON.stringify({ _class_name: "StableDiffusionPipeline" }),
    );
    await expectInvalid(notSdxl, "refiner", /"StableDiffusionPipeline".*SDXL/);
  });

  it("names each missing file", async () => {
    const cases: [string, ModelRole, RegExp][] = [
      ["unet/model.onnx", "base", /unet[/\\]model\.onnx is missing/],
      ["vae_decoder/model.onnx", "refiner", /vae_decoder[/\\]model\.onnx is missing/],
      ["text_encoder/model.onnx", "base", /text_encoder[/\\]model\.onnx is missing.*refiner/],
      ["tokenizer_2/merges.txt", "refiner", /tokenizer_2[/\\]merges\.txt is missing/],
      ["scheduler/scheduler_config.json", "base", /scheduler_config\.json is missing/],
    ];
    for (const [file, role, pattern] of cases) {
      const dir = copyOf(role === "base" ? base : refiner);
      fs.rmSync(path.join(dir, file));
      await expectInvalid(dir, role, pattern);
    }
  });

  it("rejects missing or incomplete external data", async () => {
    const missing = copyOf(refiner);
    fs.rmSync(path.join(missing, "unet", "model.onnx_data"));
    await expectInvalid(missing, "refiner", /unet[/\\]model\.onnx_data, which is missing/);

    const short = copyOf(refiner);
    const data = path.join(short, "unet", "model.onnx_data");
    fs.truncateSync(data, Math.floor(fs.statSync(data).size / 2));
    await expectInvalid(short, "refiner", /model\.onnx_data is \d+ bytes.*incomplete/);

    // ONNX Runtime refuses external data outside the model's folder; say so before it does.
    const outside = copyOf(refiner);
    const unetFile = path.join(outside, "unet", "model.onnx");
    const model = onnxProto.onnx.ModelProto.decode(fs.readFileSync(unetFile));
    for (const tensor of model.graph?.initializer ?? []) {
      for (const entry of tensor.externalData ?? []) if (entry.key === "location") entry.value = "../model.onnx_data";
    }
    fs.writeFileSync(unetFile, onnxProto.onnx.ModelProto.encode(model).finish());
    fs.renameSync(path.join(outside, "unet", "model.onnx_data"), path.join(outside, "model.onnx_data"));
    await expectInvalid(outside, "refiner", /names its external data as "\.\.\/model\.onnx_data", outside its folder/);
  });

  it("rejects a truncated model.onnx", async () => {
    const dir = copyOf(base);
    const file = path.join(dir, "text_encoder_2", "model.onnx");
    fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));
    await expectInvalid(dir, "base", /text_encoder_2[/\\]model\.onnx is not a readable ONNX model.*truncated/);
  });

  it("recognises a refiner given as the base and a base given as the refiner", async () => {
    await expectInvalid(refiner, "base", /looks like a refiner; set it as KILN_REFINER_DIR/);
    await expectInvalid(
      base,
      "refiner",
      /takes 2048-wide encoder_hidden_states and 6 time_ids.*needs 1280 and 5: this looks like a base model; set it as KILN_MODEL_DIR/,
    );

    // Index and layout say base, but the UNet is a refiner's: the UNet's widths decide.
    const mixed = copyOf(base);
    fs.rmSync(path.join(mixed, "unet"), { recursive: true });
    fs.cpSync(path.join(refiner, "unet"), path.join(mixed, "unet"), { recursive: true });
    await expectInvalid(
      mixed,
      "base",
      /unet[/\\]model\.onnx takes 1280-wide encoder_hidden_states and 5 time_ids.*needs 2048 and 6: this looks like a refiner; set it as KILN_REFINER_DIR/,
    );
  });

  it("rejects sessions whose names or widths are not SDXL's", async () => {
    const wrongVae = copyOf(refiner);
    fs.copyFileSync(path.join(refiner, "vae_encoder", "model.onnx"), path.join(wrongVae, "vae_decoder", "model.onnx"));
    await expectInvalid(
      wrongVae,
      "refiner",
      /vae_decoder[/\\]model\.onnx has inputs \[sample\] \(missing latent_sample; unexpected sample\)/,
    );

    const swappedEncoders = copyOf(base);
    fs.copyFileSync(
      path.join(base, "text_encoder_2", "model.onnx"),
      path.join(swappedEncoders, "text_encoder", "model.onnx"),
    );
    await expectInvalid(
      swappedEncoders,
      "base",
      /text_encoder[/\\]model\.onnx: hidden_states\.31 is 1280 wide; expected 768/,
    );

    const unetAsEncoder = copyOf(refiner);
    fs.cpSync(path.join(refiner, "unet"), path.join(unetAsEncoder, "text_encoder_2"), { recursive: true });
    await expectInvalid(
      unetAsEncoder,
      "refiner",
      /text_encoder_2[/\\]model\.onnx has inputs \[.*\] \(missing input_ids; unexpected sample/,
    );
  });
});
