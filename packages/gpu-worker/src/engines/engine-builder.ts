import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

import { type BuildStep, type PartToBuild, planEngineBuilds } from "./build-plan.js";
import {
  type Bucket,
  ENGINE_FILE,
  type EngineKey,
  type EnginePart,
  type EngineTarget,
  hardwareArchitecture,
  modelIdOf,
  partHash,
  slug,
} from "./engine-key.js";
import type { EngineStore } from "./engine-store.js";
import { MAX_EMBEDDED_ENGINE_BYTES, readGraphIo, writeEpContextModel } from "./epcontext-model.js";
import { probeTarget, requireTrtexec, ToolMissingError } from "./toolchain.js";

/**
 * `kiln engines build`: runs trtexec for every step of the plan on this machine's GPU, wraps each
 * engine in an EPContext model and puts both into the engine store.
 */

export interface BuildEnginesOptions {
  modelDir: string;
  /** The GPU the operator means to build for; must be the one this machine has. */
  gpu: string;
  buckets: Bucket[];
  fp16: boolean;
  parts: EnginePart[];
  store: EngineStore;
  /** Engines, logs and the timing cache go here before the store. */
  workDir: string;
  /** Embed engines in the wrapper (only under 2 GiB) instead of storing them beside it. */
  embed?: boolean;
  log: (line: string) => void;
}

export interface BuiltEngine {
  key: EngineKey;
  seconds: number;
  engineBytes: number;
}

/** Reads each part's graph I/O and whether it must stay fp32 (the VAE's `force_upcast`). */
export function readPartsToBuild(modelDir: string, parts: readonly EnginePart[]): PartToBuild[] {
  return parts.map((part) => {
    const onnxFile = path.join(modelDir, part, "model.onnx");
    if (!fs.existsSync(onnxFile))
      throw new Error(`${onnxFile} is missing; ${part} is not part of this model (a refiner has no text_encoder)`);
    let forceFp32 = false;
    if (part === "vae_decoder") {
      try {
        const config = JSON.parse(fs.readFileSync(path.join(modelDir, part, "config.json"), "utf8")) as {
          force_upcast?: boolean;
        };
        forceFp32 = config.force_upcast !== false;
      } catch {
        forceFp32 = true;
      }
    }
    return { part, onnxFile, io: readGraphIo(fs.readFileSync(onnxFile)), forceFp32 };
  });
}

/** Checks for trtexec, the GPU and the TensorRT/CUDA runtimes at once, so one message names all that is missing. */
export async function requireBuildToolchain(gpu: string): Promise<{ trtexec: string; target: EngineTarget }> {
  const missing: string[] = [];
  let trtexec: string | undefined;
  let target: EngineTarget | undefined;
  try {
    trtexec = requireTrtexec();
  } catch (e) {
    if (!(e instanceof ToolMissingError)) throw e;
    missing.push(e.message);
  }
  try {
    target = await probeTarget();
  } catch (e) {
    if (!(e instanceof ToolMissingError)) throw e;
    missing.push(e.message);
  }
  if (missing.length > 0 || !trtexec || !target)
    throw new ToolMissingError(`kiln engines build cannot run here:\n- ${missing.join("\n- ")}`);
  if (slug(target.gpuName) !== slug(gpu))
    throw new Error(
      `--gpu says ${gpu} but this machine has ${target.gpuName}; TensorRT engines only run on the GPU model they are built on, so build on a ${gpu} instance (or pass --gpu "${target.gpuName}")`,
    );
  return { trtexec, target };
}

function runTrtexec(trtexec: string, step: BuildStep, logFile: string): Promise<void> {
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  fs.mkdirSync(path.dirname(step.engineFile), { recursive: true });
  const out = fs.openSync(logFile, "w");
  return new Promise((resolve, reject) => {
    const child = spawn(trtexec, step.args, { stdio: ["ignore", out, out] });
    child.on("error", (e) => {
      fs.closeSync(out);
      reject(e);
    });
    child.on("exit", (code, signal) => {
      fs.closeSync(out);
      if (code === 0 && fs.existsSync(step.engineFile)) return resolve();
      const tail = fs.readFileSync(logFile, "utf8").split("\n").slice(-15).join("\n");
      reject(
        new Error(
          `trtexec ${signal ? `was killed by ${signal}` : `exited with ${code}`} for ${step.part}; see ${logFile}:\n${tail}`,
        ),
      );
    });
  });
}

export async function buildEngines(options: BuildEnginesOptions): Promise<BuiltEngine[]> {
  const { trtexec, target } = await requireBuildToolchain(options.gpu);
  const parts = readPartsToBuild(options.modelDir, options.parts);
  const steps = planEngineBuilds({
    parts,
    buckets: options.buckets,
    fp16: options.fp16,
    outDir: path.join(options.workDir, "engines"),
    timingCacheFile: path.join(options.workDir, `timing-${slug(target.gpuName)}.cache`),
  });
  const modelId = await modelIdOf(options.modelDir);
  const hashes = new Map<EnginePart, string>();
  for (const p of parts) hashes.set(p.part, await partHash(path.dirname(p.onnxFile)));

  const built: BuiltEngine[] = [];
  for (const [i, step] of steps.entries()) {
    const key: EngineKey = {
      ...target,
      modelId,
      part: step.part,
      partHash: hashes.get(step.part)!,
      bucket: step.bucket,
      precision: step.precision,
    };
    const label = `${step.part} ${step.bucket ? `${step.bucket.width}x${step.bucket.height}` : "(any size)"} ${step.precision}`;
    options.log(`[${i + 1}/${steps.length}] building ${label}: trtexec ${step.args.join(" ")}`);
    await options.store.markBuilding(key);
    const started = performance.now();
    try {
      await runTrtexec(trtexec, step, `${step.engineFile}.log`);
    } catch (e) {
      await options.store.clearBuilding(key);
      throw e;
    }
    const seconds = (performance.now() - started) / 1000;
    const engineBytes = fs.statSync(step.engineFile).size;
    const embed = options.embed === true && engineBytes <= MAX_EMBEDDED_ENGINE_BYTES;
    // Engines are read a chunk at a time by the store; only an embedded one is read whole.
    const engine = embed ? { embed: fs.readFileSync(step.engineFile) } : undefined;
    const wrapper = writeEpContextModel({
      io: parts.find((p) => p.part === step.part)!.io,
      engine: engine ?? { file: ENGINE_FILE },
      epSdkVersion: target.tensorrtVersion,
      hardwareArchitecture: hardwareArchitecture(target.computeCapability),
      partitionName: `${step.part}_${step.bucket ? `${step.bucket.width}x${step.bucket.height}` : "any"}_${step.precision}`,
      notes: `trtexec ${step.args.filter((a) => !a.startsWith("--onnx=") && !a.startsWith("--saveEngine=") && !a.startsWith("--timingCacheFile=")).join(" ")}`,
    });
    await options.store.put(key, engine ? { wrapper } : { wrapper, engine: { path: step.engineFile } }, {
      buildSeconds: Math.round(seconds),
    });
    options.log(
      `[${i + 1}/${steps.length}] stored ${label}: ${(engineBytes / 2 ** 20).toFixed(1)} MiB engine, built in ${seconds.toFixed(0)} s`,
    );
    built.push({ key, seconds, engineBytes });
  }
  return built;
}
