import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { planEngineBuilds } from "../../src/engines/build-plan.js";
import { readPartsToBuild, requireBuildToolchain } from "../../src/engines/engine-builder.js";
import { parseBuckets } from "../../src/engines/engine-key.js";
import {
  findExecutable,
  NO_GPU_MESSAGE,
  requireTrtexec,
  ToolMissingError,
  versionFromSoname,
} from "../../src/engines/toolchain.js";
import { writeTinyModel } from "../../src/models/tiny-models.js";

describe("engine build plan", () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-build-plan-"));
    writeTinyModel(path.join(dir, "base"), { role: "base" });
    writeTinyModel(path.join(dir, "refiner"), { role: "refiner" });
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("plans the UNet per bucket with CFG batch 2×n (n = 1…4) and latents of bucket/8", () => {
    const base = path.join(dir, "base");
    const steps = planEngineBuilds({
      parts: readPartsToBuild(base, ["unet"]),
      buckets: parseBuckets("1024x1024,1152x896"),
      fp16: true,
      outDir: "/work/engines",
      timingCacheFile: "/work/timing.cache",
    });
    assert.equal(steps.length, 2);
    const wide = steps[1]!;
    assert.deepEqual(wide.bucket, { width: 1152, height: 896 });
    assert.equal(wide.precision, "fp16");
    assert.equal(wide.engineFile, "/work/engines/unet/1152x896-fp16.engine");
    assert.deepEqual(wide.shapes.min.sample, [2, 4, 112, 144]);
    assert.deepEqual(wide.shapes.opt.sample, [2, 4, 112, 144]);
    assert.deepEqual(wide.shapes.max.sample, [8, 4, 112, 144]);
    assert.deepEqual(wide.shapes.max.encoder_hidden_states, [8, 77, 2048]);
    assert.deepEqual(wide.shapes.max.text_embeds, [8, 1280]);
    assert.deepEqual(wide.shapes.max.time_ids, [8, 6]);
    assert.deepEqual(wide.shapes.max.timestep, [8]);
    assert.deepEqual(wide.args, [
      `--onnx=${path.join(base, "unet", "model.onnx")}`,
      "--saveEngine=/work/engines/unet/1152x896-fp16.engine",
      "--minShapes=sample:2x4x112x144,timestep:2,encoder_hidden_states:2x77x2048,text_embeds:2x1280,time_ids:2x6",
      "--optShapes=sample:2x4x112x144,timestep:2,encoder_hidden_states:2x77x2048,text_embeds:2x1280,time_ids:2x6",
      "--maxShapes=sample:8x4x112x144,timestep:8,encoder_hidden_states:8x77x2048,text_embeds:8x1280,time_ids:8x6",
      "--fp16",
      "--timingCacheFile=/work/timing.cache",
      "--skipInference",
    ]);
    assert.deepEqual(steps[0]!.shapes.max.sample, [8, 4, 128, 128]);
  });

  it("uses the refiner's widths, keeps the VAE in fp32 when its config says force_upcast, and builds text encoders once", () => {
    const steps = planEngineBuilds({
      parts: [...readPartsToBuild(path.join(dir, "refiner"), ["unet", "vae_decoder", "text_encoder_2"])],
      buckets: parseBuckets("1024x1024"),
      fp16: true,
      outDir: "/e",
    });
    const byPart = Object.fromEntries(steps.map((s) => [s.part, s]));
    assert.deepEqual(byPart.unet!.shapes.max.encoder_hidden_states, [8, 77, 1280]);
    assert.deepEqual(byPart.unet!.shapes.max.time_ids, [8, 5]);
    const vae = byPart.vae_decoder!;
    assert.equal(vae.precision, "fp32");
    assert.ok(!vae.args.includes("--fp16"));
    assert.deepEqual(vae.shapes.min.latent_sample, [1, 4, 128, 128]);
    assert.deepEqual(vae.shapes.max.latent_sample, [4, 4, 128, 128]);
    const te = byPart.text_encoder_2!;
    assert.equal(te.bucket, null);
    assert.equal(te.engineFile, "/e/text_encoder_2/any-fp16.engine");
    assert.deepEqual(te.shapes.opt.input_ids, [2, 77]);
    assert.deepEqual(te.shapes.max.input_ids, [8, 77]);
  });

  it("says which part a model folder lacks", () => {
    assert.throws(() => readPartsToBuild(path.join(dir, "refiner"), ["text_encoder"]), /refiner has no text_encoder/);
  });
});

describe("engine build toolchain", () => {
  it("names what is missing when trtexec is not installed", () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-empty-path-"));
    try {
      assert.equal(findExecutable("trtexec", empty), null);
      assert.throws(
        () => requireTrtexec(empty),
        (e: Error) =>
          e instanceof ToolMissingError && /trtexec \(TensorRT's engine builder\) is not on PATH/.test(e.message),
      );
    } finally {
      fs.rmSync(empty, { recursive: true });
    }
  });

  it("refuses to build on this machine with one message naming trtexec and the GPU (skipped where they exist)", async (t) => {
    if (findExecutable("trtexec") || findExecutable("nvidia-smi")) return t.skip("this machine has TensorRT or a GPU");
    await assert.rejects(requireBuildToolchain("NVIDIA A10G"), (e: Error) => {
      assert.ok(e instanceof ToolMissingError);
      assert.match(e.message, /^kiln engines build cannot run here:/);
      assert.match(e.message, /trtexec/);
      assert.ok(e.message.includes(NO_GPU_MESSAGE));
      return true;
    });
  });

  it("reads library versions from the real file names behind the sonames", () => {
    assert.equal(versionFromSoname("/usr/lib/x86_64-linux-gnu/libnvinfer.so.10.9.0", "libnvinfer"), "10.9.0");
    assert.equal(versionFromSoname("/usr/local/cuda/lib64/libcudart.so.12.8.90", "libcudart"), "12.8.90");
    assert.equal(versionFromSoname("/usr/lib/libnvinfer.so.10", "libnvinfer"), null);
    assert.equal(versionFromSoname("/usr/lib/libnvinfer_plugin.so.10.9.0", "libnvinfer"), null);
  });
});
