import { execFile } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { promisify } from "node:util";

import type { EngineTarget } from "./engine-key.js";

/**
 * What this machine has for TensorRT: the GPU (nvidia-smi), the TensorRT and CUDA runtime libraries
 * (the versions the engine store keys by, read the same way by the builder and the worker, from the
 * real file names behind `libnvinfer.so.N` and `libcudart.so.N`), onnxruntime-node's version, and
 * trtexec for builds.
 */

const run = promisify(execFile);

export class ToolMissingError extends Error {}

/** `name` on PATH, or null. */
export function findExecutable(name: string, searchPath = process.env.PATH ?? ""): string | null {
  for (const dir of searchPath.split(path.delimiter).filter(Boolean)) {
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      if (fs.statSync(file).isFile()) return file;
    } catch {
      // not here
    }
  }
  return null;
}

export interface GpuInfo {
  gpuName: string;
  computeCapability: string;
  driverVersion: string;
}

export const NO_GPU_MESSAGE = "no NVIDIA GPU found (nvidia-smi missing)";

/** The GPU at `index` as nvidia-smi reports it. */
export async function probeGpu(index = 0, searchPath?: string): Promise<GpuInfo> {
  const smi = findExecutable("nvidia-smi", searchPath);
  if (!smi)
    throw new ToolMissingError(
      `${NO_GPU_MESSAGE}: TensorRT engines are built and loaded on the GPU they are for; run this on the GPU instance (the NVIDIA driver provides nvidia-smi).`,
    );
  const { stdout } = await run(smi, [
    `--id=${index}`,
    "--query-gpu=name,compute_cap,driver_version",
    "--format=csv,noheader",
  ]);
  const [gpuName, computeCapability, driverVersion] = stdout
    .trim()
    .split(",")
    .map((s) => s.trim());
  if (!gpuName || !computeCapability || !/^\d+\.\d+$/.test(computeCapability))
    throw new Error(`nvidia-smi printed "${stdout.trim()}"; expected "name, compute capability, driver version"`);
  return { gpuName, computeCapability, driverVersion: driverVersion ?? "" };
}

/** "libnvinfer.so.10.9.0" → "10.9.0" (at least major.minor). */
export function versionFromSoname(file: string, lib: string): string | null {
  const m = new RegExp(`^${lib.replace(/\./g, "\\.")}\\.so\\.(\\d+(?:\\.\\d+)+)$`).exec(path.basename(file));
  return m ? m[1]! : null;
}

/** The version of a shared library the dynamic loader finds, from the real file behind its soname. */
async function libraryVersion(lib: string): Promise<string | null> {
  const candidates: string[] = [];
  try {
    const { stdout } = await run("ldconfig", ["-p"]);
    for (const line of stdout.split("\n")) {
      const m = /=>\s*(\S+)$/.exec(line.trim());
      if (m && path.basename(m[1]!).startsWith(`${lib}.so`)) candidates.push(m[1]!);
    }
  } catch {
    // no ldconfig: fall back to LD_LIBRARY_PATH only
  }
  for (const dir of (process.env.LD_LIBRARY_PATH ?? "").split(":").filter(Boolean)) {
    try {
      for (const f of fs.readdirSync(dir)) if (f.startsWith(`${lib}.so`)) candidates.push(path.join(dir, f));
    } catch {
      // unreadable entry
    }
  }
  for (const c of candidates) {
    try {
      const version = versionFromSoname(fs.realpathSync(c), lib);
      if (version) return version;
    } catch {
      // dangling link
    }
  }
  return null;
}

export function ortVersion(): string {
  const require = createRequire(import.meta.url);
  return (require("onnxruntime-node/package.json") as { version: string }).version;
}

/** "12.8.90" → "12.8": CUDA minor releases are compatible, so keys use major.minor. */
function majorMinor(v: string): string {
  return v.split(".").slice(0, 2).join(".");
}

/**
 * The full engine target of this machine. Throws ToolMissingError naming what is absent: the GPU,
 * the TensorRT runtime or the CUDA runtime.
 */
export async function probeTarget(gpuIndex = 0): Promise<EngineTarget & { driverVersion: string }> {
  const gpu = await probeGpu(gpuIndex);
  const trt = await libraryVersion("libnvinfer");
  if (!trt)
    throw new ToolMissingError(
      "the TensorRT runtime (libnvinfer.so.10) was not found by the dynamic loader; use Kiln's GPU image or install NVIDIA's libnvinfer10 of the version onnxruntime-node was built with (docs/tensorrt.md)",
    );
  const cuda = (await libraryVersion("libcudart")) ?? process.env.CUDA_VERSION ?? null;
  if (!cuda)
    throw new ToolMissingError(
      "the CUDA runtime (libcudart.so.12) was not found; use an nvidia/cuda 12 runtime image or install the CUDA 12 runtime",
    );
  return {
    gpuName: gpu.gpuName,
    computeCapability: gpu.computeCapability,
    driverVersion: gpu.driverVersion,
    tensorrtVersion: trt,
    cudaVersion: majorMinor(cuda),
    ortVersion: ortVersion(),
  };
}

/** trtexec's path, or a ToolMissingError that says what to install. */
export function requireTrtexec(searchPath?: string): string {
  const found = findExecutable("trtexec", searchPath);
  if (found) return found;
  throw new ToolMissingError(
    "trtexec (TensorRT's engine builder) is not on PATH. Build engines in Kiln's GPU image (it ships trtexec at /usr/src/tensorrt/bin), or install NVIDIA's TensorRT 10 packages (libnvinfer-bin) on a machine with the GPU the engines are for and add /usr/src/tensorrt/bin to PATH.",
  );
}
