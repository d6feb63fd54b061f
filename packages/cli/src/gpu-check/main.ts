/**
 * `npm run gpu:check`: for an operator on a machine with an NVIDIA GPU. Builds one TensorRT engine
 * (the tiny base UNet, bucket 256x256, fp16) with trtexec, stores it, loads it through Kiln's
 * engine sessions and session factory, compares its output with the CPU provider's on the same
 * feeds, times a UNet step on each, and prints a report. Not part of `npm test`.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import {
  attachEngineSessions,
  buildEngines,
  EngineStore,
  loadSdxlModel,
  NO_GPU_MESSAGE,
  probeGpu,
  type RunnableSession,
  ToolMissingError,
  writeTinyModel,
} from "@kiln/gpu-worker";
import { FileBlobStore } from "@kiln/shared/local";
import * as ort from "onnxruntime-node";

/** fp16 engine vs fp32 CPU: |engine − cpu| ≤ ATOL + RTOL·max|cpu| element-wise. */
const RTOL = 1e-2;
const ATOL = 1e-3;
const BUCKET = { width: 256, height: 256 };
const TIMED_RUNS = 20;

function fail(message: string): never {
  console.error(`gpu:check: ${message}`);
  process.exit(1);
}

function feeds(): Record<string, ort.Tensor> {
  const fill = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * k) * 0.5);
  const h = BUCKET.height / 8;
  const w = BUCKET.width / 8;
  return {
    sample: new ort.Tensor("float32", fill(2 * 4 * h * w, 0.37), [2, 4, h, w]),
    timestep: new ort.Tensor("float32", Float32Array.from([500, 500]), [2]),
    encoder_hidden_states: new ort.Tensor("float32", fill(2 * 77 * 2048, 0.011), [2, 77, 2048]),
    text_embeds: new ort.Tensor("float32", fill(2 * 1280, 0.05), [2, 1280]),
    time_ids: new ort.Tensor(
      "float32",
      Float32Array.from([256, 256, 0, 0, 256, 256, 256, 256, 0, 0, 256, 256]),
      [2, 6],
    ),
  };
}

async function timeRuns(session: RunnableSession, f: Record<string, ort.Tensor>): Promise<number> {
  await session.run(f);
  const times: number[] = [];
  for (let i = 0; i < TIMED_RUNS; i++) {
    const t = performance.now();
    await session.run(f);
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

async function main(): Promise<void> {
  let gpu;
  try {
    gpu = await probeGpu();
  } catch (e) {
    if (e instanceof ToolMissingError) fail(NO_GPU_MESSAGE);
    throw e;
  }
  console.error(`GPU: ${gpu.gpuName} (compute capability ${gpu.computeCapability}, driver ${gpu.driverVersion})`);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-gpu-check-"));
  const modelDir = path.join(work, "tiny-base");
  writeTinyModel(modelDir, { role: "base" });
  const store = new EngineStore(
    new FileBlobStore({
      dataDir: path.join(work, "data"),
      publicBaseUrl: "http://127.0.0.1:9",
      urlSecret: "gpu-check-secret-0123456789",
    }),
  );

  let built;
  try {
    built = await buildEngines({
      modelDir,
      gpu: gpu.gpuName,
      buckets: [BUCKET],
      fp16: true,
      parts: ["unet"],
      store,
      workDir: path.join(work, "build"),
      log: (line) => console.error(line),
    });
  } catch (e) {
    if (e instanceof ToolMissingError) fail(e.message);
    throw e;
  }

  const reference = await loadSdxlModel(modelDir, "base", { providers: ["cpu"] });
  const onGpu = await loadSdxlModel(modelDir, "base", { providers: ["cuda", "cpu"] });
  const health = await attachEngineSessions(
    { base: onGpu },
    { store, cacheDir: path.join(work, "cache"), buckets: [BUCKET] },
  );
  const slot = health().base!.find((s) => s.part === "unet")!;
  const engineSession = onGpu.engines!.sessionFor("unet", BUCKET.width, BUCKET.height, 2);
  const report: Record<string, unknown> = {
    gpu,
    engine: { ...built[0]!.key, buildSeconds: Math.round(built[0]!.seconds), bytes: built[0]!.engineBytes },
    slot,
  };
  if (slot.state !== "ready" || !engineSession || engineSession.provider !== "tensorrt") {
    console.log(JSON.stringify(report, null, 2));
    fail(`the engine did not load on TensorRT: ${slot.state}${slot.reason ? ` (${slot.reason})` : ""}`);
  }

  const f = feeds();
  const expected = (await reference.unet.session.run(f)).out_sample!.data as Float32Array;
  const actual = (await engineSession.session.run(f)).out_sample!.data as Float32Array;
  let maxAbs = 0;
  let maxDiff = 0;
  for (let i = 0; i < expected.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(expected[i]!));
    maxDiff = Math.max(maxDiff, Math.abs(expected[i]! - actual[i]!));
  }
  const tolerance = ATOL + RTOL * maxAbs;
  report.comparison = {
    elements: expected.length,
    maxAbsDiff: maxDiff,
    tolerance,
    rtol: RTOL,
    atol: ATOL,
    pass: maxDiff <= tolerance,
  };
  report.stepMs = {
    tensorrt: await timeRuns(engineSession.session, f),
    [onGpu.unet.provider]: await timeRuns(onGpu.unet.session, f),
    cpu: await timeRuns(reference.unet.session, f),
    note: `median of ${TIMED_RUNS} UNet runs, batch 2 at ${BUCKET.width}x${BUCKET.height} (tiny model: launch overhead, not SDXL speed)`,
  };
  console.log(JSON.stringify(report, null, 2));
  await onGpu.engines!.release();
  await onGpu.release();
  await reference.release();
  if (maxDiff > tolerance) fail(`TensorRT output differs from the CPU's by ${maxDiff} (> ${tolerance})`);
  console.error("gpu:check passed");
}

await main();
