import path from "node:path";

import { writeReferenceModels, writeTinyModels } from "@kiln/gpu-worker";

import { parseFlags, UsageError } from "../cli/args.js";

/**
 * `kiln models tiny --out DIR [--seed N]`: Kiln's tiny SDXL base and refiner, byte-identical per seed.
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
  });
  const seed = Number(values.seed);
  if (!Number.isInteger(seed) || seed < 0) throw new UsageError(`--seed must be a whole number, got ${values.seed}`);
  const dirs = writeTinyModels(path.resolve(values.out!), seed);
  console.error(
    `Wrote tiny SDXL models (seed ${seed}). Use them with KILN_MODEL_DIR=${dirs.base} KILN_REFINER_DIR=${dirs.refiner}`,
  );
  console.log(dirs.base);
  console.log(dirs.refiner);
}
