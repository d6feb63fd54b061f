import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { KilnError } from "@kiln/shared";
import * as ort from "onnxruntime-node";

import { writeTinyModel } from "../src/models/tiny-models.js";
import { createSession, type SessionLogger, warmup } from "../src/onnx/session-factory.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-session-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function recordingLogger() {
  const lines: { level: "info" | "warn"; obj: Record<string, unknown>; msg: string }[] = [];
  const logger: SessionLogger = {
    info: (obj, msg) => lines.push({ level: "info", obj: obj as Record<string, unknown>, msg }),
    warn: (obj, msg) => lines.push({ level: "warn", obj: obj as Record<string, unknown>, msg }),
  };
  return { logger, lines };
}

// This machine has onnxruntime-node's CPU build only; on a GPU host the chain stops earlier.
const gpuHost = process.env.KILN_TEST_GPU === "1";

describe("createSession", () => {
  const dir = path.join(tmp, "refiner");
  const unetPath = path.join(dir, "unet", "model.onnx");

  before(() => {
    writeTinyModel(dir, { role: "refiner", seed: 3 });
  });

  it("falls back along tensorrt → cuda → cpu and logs why", { skip: gpuHost }, async () => {
    const { logger, lines } = recordingLogger();
    const loaded = await createSession(unetPath, { providers: ["tensorrt", "cuda", "cpu"], logger });
    assert.equal(loaded.provider, "cpu");
    const warns = lines.filter((l) => l.level === "warn");
    assert.deepEqual(
      warns.map((w) => w.obj.provider),
      ["tensorrt", "cuda"],
    );
    for (const w of warns)
      assert.ok(typeof w.obj.error === "string" && w.obj.error.length > 0, "each fallback names its reason");
    assert.match(warns[0].msg, /falling back to cuda/);
    const info = lines.find((l) => l.level === "info");
    assert.ok(info, "the final choice is logged");
    assert.deepEqual(
      (info.obj.fellBackFrom as { provider: string }[]).map((f) => f.provider),
      ["tensorrt", "cuda"],
    );
    await loaded.session.release();
  });

  it("reads input and output names, dtypes and shapes from the session", async () => {
    const loaded = await createSession(unetPath, { providers: ["cpu"], intraOpThreads: 1 });
    assert.equal(loaded.provider, "cpu");
    assert.equal(loaded.modelPath, unetPath);
    assert.deepEqual(loaded.inputs, [
      { name: "sample", dtype: "float32", shape: ["batch_size", 4, "height", "width"] },
      { name: "timestep", dtype: "float32", shape: ["steps"] },
      { name: "encoder_hidden_states", dtype: "float32", shape: ["batch_size", "sequence_length", 1280] },
      { name: "text_embeds", dtype: "float32", shape: ["batch_size", 1280] },
      { name: "time_ids", dtype: "float32", shape: ["batch_size", 5] },
    ]);
    assert.deepEqual(
      loaded.outputs.map((o) => [o.name, o.dtype]),
      [["out_sample", "float32"]],
    );

    const ms = await warmup(loaded.session, {
      sample: new ort.Tensor("float32", new Float32Array(2 * 4 * 8 * 8), [2, 4, 8, 8]),
      timestep: new ort.Tensor("float32", Float32Array.from([999]), [1]),
      encoder_hidden_states: new ort.Tensor("float32", new Float32Array(2 * 77 * 1280), [2, 77, 1280]),
      text_embeds: new ort.Tensor("float32", new Float32Array(2 * 1280), [2, 1280]),
      time_ids: new ort.Tensor("float32", new Float32Array(2 * 5), [2, 5]),
    });
    assert.ok(ms > 0 && Number.isFinite(ms));
    await loaded.session.release();
  });

  it("fails with model_session_failed naming the file and every provider's error", { skip: gpuHost }, async () => {
    const { logger, lines } = recordingLogger();
    await assert.rejects(createSession(unetPath, { providers: ["tensorrt", "cuda"], logger }), (e: unknown) => {
      assert.ok(e instanceof KilnError);
      assert.equal(e.code, "model_session_failed");
      assert.ok(e.message.includes(unetPath));
      assert.match(e.message, /tensorrt: .+; cuda: .+/);
      assert.deepEqual(
        (e.details?.failures as { provider: string }[]).map((f) => f.provider),
        ["tensorrt", "cuda"],
      );
      return true;
    });
    assert.match(lines[lines.length - 1].msg, /the last provider listed/);
  });

  it("fails on a missing or corrupt file even on cpu", async () => {
    const missing = path.join(tmp, "nope", "model.onnx");
    await assert.rejects(createSession(missing, { providers: ["cpu"] }), (e: unknown) => {
      assert.ok(e instanceof KilnError && e.code === "model_session_failed");
      assert.ok(e.message.includes(missing));
      return true;
    });
    const corrupt = path.join(tmp, "corrupt.onnx");
    fs.writeFileSync(corrupt, fs.readFileSync(path.join(dir, "text_encoder_2", "model.onnx")).subarray(0, 5000));
    await assert.rejects(createSession(corrupt, { providers: ["cpu"] }), /Protobuf parsing failed/);
  });

  it("refuses an empty provider list", async () => {
    await assert.rejects(
      createSession(unetPath, { providers: [] }),
      (e: unknown) => e instanceof KilnError && /KILN_PROVIDERS/.test(e.message),
    );
  });
});
