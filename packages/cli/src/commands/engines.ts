import path from "node:path";

import {
  buildEngines,
  ENGINE_PARTS,
  type EnginePart,
  EngineStore,
  modelIdOf,
  parseBuckets,
  ToolMissingError,
} from "@kiln/gpu-worker";
import { loadConfig } from "@kiln/shared";

import { CliError, parseFlags, UsageError } from "../cli/args.js";
import { openPorts } from "../stack.js";

export const ENGINES_USAGE = [
  "usage: kiln engines build --model DIR --gpu NAME --buckets 1024x1024,1152x896,… [--fp16]",
  "                          [--parts unet,vae_decoder[,text_encoder,text_encoder_2]] [--embed] [--work DIR]",
  "       kiln engines list --model DIR",
  "",
  "build: runs TensorRT's trtexec on this machine's GPU for each model part and bucket (explicit",
  "       min/opt/max shapes for 1–4 images), wraps each engine in an EPContext ONNX model and stores",
  "       both in the engine store (KILN_DATA_DIR locally, the bucket on AWS). --gpu must name this",
  "       machine's GPU as nvidia-smi does: engines only run on the GPU model they are built on.",
  "       Run it once per model folder (base, then refiner). Needs trtexec and an NVIDIA GPU (docs/tensorrt.md).",
  "list:  prints the model's engine manifest.",
].join("\n");

function parseParts(text: string): EnginePart[] {
  const parts = text.split(",").map((s) => s.trim());
  for (const p of parts)
    if (!(ENGINE_PARTS as readonly string[]).includes(p))
      throw new UsageError(`--parts: unknown part "${p}"; choose from ${ENGINE_PARTS.join(", ")}`);
  return parts as EnginePart[];
}

export async function run(argv: string[]): Promise<void> {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(ENGINES_USAGE);
    return;
  }
  const [action, ...rest] = argv;
  if (action !== "build" && action !== "list")
    throw new UsageError(action ? `unknown action "${action}"; use build or list` : "say build or list");
  const { values } = parseFlags(rest, {
    model: { type: "string" },
    gpu: { type: "string" },
    buckets: { type: "string" },
    fp16: { type: "boolean", default: false },
    parts: { type: "string", default: "unet,vae_decoder" },
    embed: { type: "boolean", default: false },
    work: { type: "string" },
  });
  if (!values.model) throw new UsageError("--model DIR is required");
  const modelDir = path.resolve(values.model);
  const config = loadConfig();
  const ports = openPorts(config);
  const store = new EngineStore(ports.blobs);
  try {
    if (action === "list") {
      const modelId = await modelIdOf(modelDir);
      const manifest = await store.manifest(modelId);
      if (!manifest) throw new CliError(`no engines are stored for ${modelDir} (model id ${modelId})`);
      console.log(JSON.stringify(manifest, null, 2));
      return;
    }
    if (!values.gpu) throw new UsageError('--gpu NAME is required (as nvidia-smi names it, e.g. "NVIDIA A10G")');
    if (!values.buckets) throw new UsageError("--buckets is required, e.g. --buckets 1024x1024,1152x896");
    let buckets;
    try {
      buckets = parseBuckets(values.buckets);
    } catch (e) {
      throw new UsageError(`--buckets: ${(e as Error).message}`);
    }
    try {
      const built = await buildEngines({
        modelDir,
        gpu: values.gpu,
        buckets,
        fp16: values.fp16!,
        parts: parseParts(values.parts!),
        store,
        embed: values.embed!,
        workDir: path.resolve(values.work ?? path.join(config.dataDir, "engine-builds")),
        log: (line) => console.error(line),
      });
      console.error(`Built and stored ${built.length} engine(s) for ${modelDir}.`);
    } catch (e) {
      if (e instanceof ToolMissingError) throw new CliError(e.message);
      throw e;
    }
  } finally {
    await ports.close();
  }
}
