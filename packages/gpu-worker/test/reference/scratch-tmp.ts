import fs from "node:fs";
import sharp from "sharp";
import { planRender, renderRequestSchema } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import { writeReferenceModels } from "../../src/models/reference/reference-models.js";
import { loadSdxlModel } from "../../src/engine/sdxl-model.js";
import { runStage } from "../../src/engine/sdxl-pipeline.js";
const logger = createLogger({ level: "warn" });
const t0 = performance.now();
const dirs = writeReferenceModels("/tmp/refmodels");
console.log("write", performance.now() - t0);
const options = { providers: ["cpu" as const], logger };
const base = await loadSdxlModel(dirs.base, "base", options);
const refiner = await loadSdxlModel(dirs.refiner, "refiner", options);
console.log("load", performance.now() - t0);
for (const [mode, size] of [
  ["base", 256],
  ["ensemble", 512],
  ["base", 1024],
] as const) {
  const plan = planRender(
    renderRequestSchema().parse({
      prompt: "a red circle on a blue background",
      width: size,
      height: size,
      steps: 20,
      mode,
    }),
    42,
  );
  let input;
  let res;
  const t1 = performance.now();
  for (let i = 0; i < plan.stages.length; i++) {
    res = await runStage(i === 0 ? base : refiner, { jobId: "j", plan, stage: plan.stages[i]! }, input);
    if (res.kind === "latents") input = res.latents;
  }
  console.log(mode, size, performance.now() - t1, res!.kind === "images" ? res!.unetSeconds : "");
  if (res!.kind === "images") fs.writeFileSync(`/tmp/ref-${mode}-${size}.png`, res!.images[0]!.bytes);
}
