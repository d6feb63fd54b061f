import path from "node:path";
import { parseArgs } from "node:util";

import { writeTinyModels } from "@kiln/gpu-worker";

/** `kiln models tiny --out DIR [--seed N]`: Kiln's tiny SDXL base and refiner, byte-identical per seed. */
export async function run(argv: string[]): Promise<void> {
  const [action, ...rest] = argv;
  if (action !== "tiny") throw new Error("usage: kiln models tiny --out DIR [--seed N]");
  const { values } = parseArgs({
    args: rest,
    options: { out: { type: "string", default: "./.kiln/models/tiny" }, seed: { type: "string", default: "1" } },
  });
  const seed = Number(values.seed);
  if (!Number.isInteger(seed) || seed < 0) throw new Error(`--seed must be a whole number, got ${values.seed}`);
  const dirs = writeTinyModels(path.resolve(values.out!), seed);
  console.error(
    `Wrote tiny SDXL models (seed ${seed}). Use them with KILN_MODEL_DIR=${dirs.base} KILN_REFINER_DIR=${dirs.refiner}`,
  );
  console.log(dirs.base);
  console.log(dirs.refiner);
}
