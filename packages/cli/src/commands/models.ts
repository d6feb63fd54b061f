import path from "node:path";

import { writeReferenceModels, writeTinyModel, writeTinyModels } from "@kiln/gpu-worker";

import { parseFlags, UsageError } from "../cli/args.js";

/**
 * `kiln models tiny --out DIR [--seed N] [--inpainting]`: Kiln's tiny SDXL base and refiner, byte-identical per
 * seed; `--inpainting` also writes DIR/inpaint, a base whose UNet takes 9 channels (SDXL inpainting 0.1's layout).
 * `kiln models reference --out DIR`: the reference pair (exact denoiser of a procedural picture set).
 */
export async function run(argv: string[]): Promise<void> {
  const [action, ...rest] = argv;
  if (action === "reference") {
    const { values } = parseFlags(rest, { out: { type: "string", default: "./.kiln/models/reference" } });
    const dirs = writeReferenceModels(path.resolve(values.out!));
    console.error(
      `Wrote Kiln's reference SDXL models. Use them with KILN_MODEL_DIR=${dirs.base} KILN_REFINER_DIR=${dirs.refiner}`,
    );
    console.log(dirs.base);
    console.log(dirs.refiner);
    return;
  }
  if (action !== "tiny")
    throw new UsageError(action ? `unknown action "${action}"; use reference or tiny` : "say reference or tiny");
  const { values } = parseFlags(rest, {
    out: { type: "string", default: "./.kiln/models/tiny" },
    seed: { type: "string", default: "1" },
    inpainting: { type: "boolean", default: false },
  });
  const seed = Number(values.seed);
  if (!Number.isInteger(seed) || seed < 0) throw new UsageError(`--seed must be a whole number, got ${values.seed}`);
  const root = path.resolve(values.out!);
  const dirs = writeTinyModels(root, seed);
  console.error(
    `Wrote tiny SDXL models (seed ${seed}). Use them with KILN_MODEL_DIR=${dirs.base} KILN_REFINER_DIR=${dirs.refiner}`,
  );
  console.log(dirs.base);
  console.log(dirs.refiner);
  if (values.inpainting) {
    const inpaint = path.join(root, "inpaint");
    writeTinyModel(inpaint, { role: "base", seed, unetInChannels: 9 });
    console.error(
      `Wrote a tiny 9-channel inpainting base: KILN_MODEL_DIR=${inpaint} (it runs inpaint and outpaint only)`,
    );
    console.log(inpaint);
  }
}
