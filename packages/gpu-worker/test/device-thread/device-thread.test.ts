import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { KilnError, planRender, renderRequestSchema } from "@kiln/shared";
import * as ort from "onnxruntime-node";

import { loadSdxlModel } from "../../src/engine/sdxl-model.js";
import { runPipelineStage } from "../../src/engine/sdxl-pipeline.js";
import { writeTinyModels } from "../../src/models/tiny-models.js";
import { DeviceThread, pinFeed, RemoteSession } from "../../src/onnx/device-thread/device-thread.js";
import { createSession, type LoadedSession } from "../../src/onnx/session-factory.js";
import { FloatFeed } from "../../src/onnx/tensors.js";
import { GPU_PROFILES } from "../../src/simulated-gpu/gpu-profiles.js";
import { simulateGpu } from "../../src/simulated-gpu/simulated-gpu.js";
import { testLogger } from "../support/worker-harness.js";

/**
 * The device thread: the same outputs as the session on the main thread, pinned conditioning sent once and still
 * right, errors per call, a dead thread failing its calls retryably and coming back with its sessions, and the
 * simulated GPU running on it.
 */

const root = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-device-thread-"));
const dirs = writeTinyModels(root);
const unetPath = path.join(dirs.base, "unet", "model.onnx");
const threads: DeviceThread[] = [];
const newThread = (module?: string) => {
  const t = new DeviceThread({ logger: testLogger, ...(module ? { module } : {}) });
  threads.push(t);
  return t;
};

/** UNet feeds at 16×16 latents with CFG (batch 2); `seed` varies the sample, the conditioning stays. */
function unetFeeds(seed: number, conditioning = conditioningFeeds()): Record<string, ort.Tensor> {
  const sample = new Float32Array(2 * 4 * 16 * 16).map((_, i) => Math.sin(i * 0.37 + seed));
  return {
    sample: new ort.Tensor("float32", sample, [2, 4, 16, 16]),
    timestep: new ort.Tensor("float32", Float32Array.from([500 - seed]), [1]),
    ...conditioning,
  };
}
function conditioningFeeds() {
  return {
    encoder_hidden_states: new ort.Tensor(
      "float32",
      new Float32Array(2 * 77 * 2048).map((_, i) => Math.cos(i * 0.01) * 0.1),
      [2, 77, 2048],
    ),
    text_embeds: new ort.Tensor("float32", new Float32Array(2 * 1280).fill(0.05), [2, 1280]),
    time_ids: new ort.Tensor(
      "float32",
      Float32Array.from([256, 256, 0, 0, 256, 256, 256, 256, 0, 0, 256, 256]),
      [2, 6],
    ),
  };
}
const bytes = (t: ort.OnnxValue) => {
  const data = (t as ort.Tensor).data as Float32Array;
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
};
const same = (a: ort.OnnxValue, b: ort.OnnxValue) => assert.ok(bytes(a).equals(bytes(b)), "outputs differ");

let local: LoadedSession;
before(async () => {
  local = await createSession(unetPath, { providers: ["cpu"] });
});
after(async () => {
  await local.session.release();
  for (const t of threads) await t.close();
  fs.rmSync(root, { recursive: true, force: true });
});

describe("device thread", () => {
  it("opens a session with the same inputs and runs it to the same bytes as on the main thread", async () => {
    const thread = newThread();
    const remote = await thread.open(unetPath, { providers: ["cpu"] });
    assert.ok(remote.session instanceof RemoteSession);
    assert.equal(remote.provider, "cpu");
    assert.deepEqual(remote.inputs, local.inputs);
    assert.deepEqual([...remote.session.inputNames], [...local.session.inputNames]);
    const feeds = unetFeeds(1);
    const [here, there] = [
      await local.session.run(feeds, ["out_sample"]),
      await remote.session.run(feeds, ["out_sample"]),
    ];
    assert.deepEqual((there.out_sample as ort.Tensor).dims, [2, 4, 16, 16]);
    assert.ok(bytes(here.out_sample!).length > 0);
    same(here.out_sample!, there.out_sample!);
  });

  it("sends pinned conditioning once and still uses it with each step's new sample", async () => {
    const thread = newThread();
    const remote = await thread.open(unetPath, { providers: ["cpu"] });
    const conditioning = conditioningFeeds();
    for (const t of Object.values(conditioning)) pinFeed(t);
    for (const seed of [1, 2, 3]) {
      const there = await remote.session.run(unetFeeds(seed, conditioning), ["out_sample"]);
      const here = await local.session.run(unetFeeds(seed, conditioning), ["out_sample"]);
      same(here.out_sample!, there.out_sample!);
    }
    // A different step's sample gives a different output: the thread did not keep the first sample.
    const a = await remote.session.run(unetFeeds(1, conditioning), ["out_sample"]);
    const b = await remote.session.run(unetFeeds(2, conditioning), ["out_sample"]);
    assert.ok(!bytes(a.out_sample!).equals(bytes(b.out_sample!)));
  });

  it("takes a sample in shared memory (FloatFeed, for its sessions only), with several calls in flight at once", async () => {
    const thread = newThread();
    const remote = await thread.open(unetPath, { providers: ["cpu"] });
    // The feed a denoising loop rewrites each step: shared with a device thread, plain memory for a local session.
    assert.ok(new FloatFeed(remote, "sample", [2, 4, 16, 16]).values.buffer instanceof SharedArrayBuffer);
    assert.ok(new FloatFeed(local, "sample", [2, 4, 16, 16]).values.buffer instanceof ArrayBuffer);
    const conditioning = conditioningFeeds();
    for (const t of Object.values(conditioning)) pinFeed(t);
    const seeds = [1, 2, 3, 4, 5, 6];
    const feeds = seeds.map((seed) => {
      const f = new FloatFeed(remote, "sample", [2, 4, 16, 16]);
      f.values.set(unetFeeds(seed).sample.data as Float32Array);
      f.sync();
      return { ...unetFeeds(seed, conditioning), sample: f.tensor };
    });
    // All sent before the first returns: each call's copy of its shared sample is its own while it waits its turn.
    const there = await Promise.all(feeds.map((f) => remote.session.run(f, ["out_sample"])));
    for (const [i, seed] of seeds.entries()) {
      const here = await local.session.run(unetFeeds(seed, conditioning), ["out_sample"]);
      same(here.out_sample!, there[i]!.out_sample!);
    }
    // The shared sample rewritten between calls, as the loop does: the next call sees the new values.
    const f = new FloatFeed(remote, "sample", [2, 4, 16, 16]);
    for (const seed of [7, 8]) {
      f.values.set(unetFeeds(seed).sample.data as Float32Array);
      const out = await remote.session.run({ ...unetFeeds(seed, conditioning), sample: f.tensor }, ["out_sample"]);
      same((await local.session.run(unetFeeds(seed, conditioning), ["out_sample"])).out_sample!, out.out_sample!);
    }
  });

  it("fails a bad call with the runtime's message and serves the next one", async () => {
    const thread = newThread();
    const remote = await thread.open(unetPath, { providers: ["cpu"] });
    const bad = { ...unetFeeds(1), sample: new ort.Tensor("float32", new Float32Array(3), [3]) };
    await assert.rejects(remote.session.run(bad, ["out_sample"]), (e: Error) =>
      /sample|rank|dimension/i.test(e.message),
    );
    const ok = await remote.session.run(unetFeeds(1), ["out_sample"]);
    same((await local.session.run(unetFeeds(1), ["out_sample"])).out_sample!, ok.out_sample!);
  });

  it("reports a model that does not open as the session factory does (model_session_failed)", async () => {
    const thread = newThread();
    await assert.rejects(thread.open(path.join(root, "missing.onnx"), { providers: ["cpu"] }), (e: unknown) => {
      assert.ok(e instanceof KilnError);
      assert.equal(e.code, "model_session_failed");
      assert.match(e.message, /missing\.onnx/);
      return true;
    });
  });

  it("fails the calls of a thread that dies as retryable, then reopens its sessions on a new thread", async () => {
    const thread = newThread(import.meta.resolve("./faulty-device-thread.ts"));
    const remote = await thread.open(unetPath, { providers: ["cpu"] });
    const conditioning = conditioningFeeds();
    for (const t of Object.values(conditioning)) pinFeed(t);
    // Pinned on the first thread; the new one must be sent the conditioning again.
    await remote.session.run(unetFeeds(1, conditioning), ["out_sample"]);
    const crash = { ...unetFeeds(1), crash: new ort.Tensor("float32", new Float32Array(1), [1]) };
    await assert.rejects(remote.session.run(crash, ["out_sample"]), (e: unknown) => {
      assert.ok(e instanceof KilnError);
      assert.equal(e.code, "device_thread_failed");
      assert.equal(e.retryable, true);
      return true;
    });
    const after = await remote.session.run(unetFeeds(2, conditioning), ["out_sample"]);
    same((await local.session.run(unetFeeds(2, conditioning), ["out_sample"])).out_sample!, after.out_sample!);
  });

  it("runs the simulated GPU on the thread: the profile's time per call, counted busy, outputs of the right shape", async () => {
    const profile = { ...GPU_PROFILES.h100!, stepSeconds: 0.01, vaeSeconds: 0.02 };
    for (const gpuThread of [true, false]) {
      const options = { providers: ["cpu" as const], logger: testLogger, gpuThread };
      const base = await loadSdxlModel(dirs.base, "base", options);
      try {
        assert.equal(base.unet.session instanceof RemoteSession, gpuThread);
        const gpu = simulateGpu({ base }, profile);
        await gpu.ready;
        const out = await base.unet.session.run(unetFeeds(1), ["out_sample"]);
        assert.deepEqual((out.out_sample as ort.Tensor).dims, [2, 4, 16, 16]);
        assert.ok(((out.out_sample as ort.Tensor).data as Float32Array).every((v) => v === 0));
        const latent = new ort.Tensor("float32", new Float32Array(4 * 16 * 16), [1, 4, 16, 16]);
        const image = await base.vaeDecoder.session.run({ latent_sample: latent });
        assert.deepEqual((image.sample as ort.Tensor).dims, [1, 3, 128, 128]);
        // 16×16 latents are 128² pixels: the profile's 1024² times scaled by pixels^1.1.
        const scale = Math.pow((128 * 128) / (1024 * 1024), 1.1);
        assert.ok(Math.abs(gpu.busySeconds() - (0.01 + 0.02) * scale) < 1e-9, `busy ${gpu.busySeconds()}`);
        assert.ok(gpu.spanSeconds() >= gpu.busySeconds() - 1e-9);
        gpu.reset();
        assert.equal(gpu.busySeconds(), 0);
      } finally {
        await base.release();
      }
    }
  });

  it("renders the same image bytes, ensemble base → refiner, with the sessions on the device thread or the main thread", async () => {
    const plan = planRender(
      renderRequestSchema().parse({ prompt: "a red fox in snow", width: 64, height: 64, steps: 6, mode: "ensemble" }),
      7,
    );
    const pngs: Buffer[] = [];
    for (const gpuThread of [true, false]) {
      const options = { providers: ["cpu" as const], logger: testLogger, gpuThread };
      const base = await loadSdxlModel(dirs.base, "base", options);
      const refiner = await loadSdxlModel(dirs.refiner, "refiner", options);
      try {
        assert.equal(refiner.unet.session instanceof RemoteSession, gpuThread);
        assert.equal(refiner.encoders.textEncoder2.session instanceof RemoteSession, gpuThread);
        const first = await runPipelineStage(base, { jobId: "job_dt", plan, stage: plan.stages[0]! }, undefined);
        assert.equal(first.kind, "latents");
        const last = await runPipelineStage(
          refiner,
          { jobId: "job_dt", plan, stage: plan.stages[1]! },
          first.kind === "latents" ? first.latents : undefined,
        );
        assert.equal(last.kind, "images");
        if (last.kind === "images") pngs.push(Buffer.from(last.images[0]!.bytes));
      } finally {
        await base.release();
        await refiner.release();
      }
    }
    assert.ok(pngs[0]!.equals(pngs[1]!), "the two renders differ");
  });
});
