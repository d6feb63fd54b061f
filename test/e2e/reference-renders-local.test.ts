import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { loadSdxlModel, type ModelSet, writeReferenceModels } from "@kiln/gpu-worker";
import { createLogger } from "@kiln/shared/node";
import sharp from "sharp";

import {
  decodeExpected,
  maxAbsDiff,
  onlyPicture,
  pictureLatents,
} from "../../packages/gpu-worker/test/reference/expected.js";
import { api, download, type LocalStack, startLocalStack, waitForJob } from "../support/local-stack.js";

/**
 * Known answers over the queue on the local family: every scheduler and mode, submitted through the public
 * API, run by a worker on the reference models, stored and downloaded as PNG. With one matching picture the
 * exact denoiser's posterior is a point mass, so the PNG is that picture decoded (the refiner's textured
 * version after an ensemble or SDEdit stage).
 */

const POINT = "a small red circle at the left on a blue background";
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-reference-e2e-"));
let models: ModelSet;
let stack: LocalStack;

before(async () => {
  const dirs = writeReferenceModels(tmp);
  const options = { providers: ["cpu" as const], logger: createLogger({ level: "silent" }) };
  models = {
    base: await loadSdxlModel(dirs.base, "base", options),
    refiner: await loadSdxlModel(dirs.refiner, "refiner", options),
  };
  stack = await startLocalStack({ models });
});

after(async () => {
  await stack?.stop();
  for (const m of Object.values(models ?? {})) await m?.release();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const SAMPLERS = [
  { scheduler: "euler" },
  { scheduler: "euler", karras: true },
  { scheduler: "euler_a" },
  { scheduler: "dpmpp_2m" },
  { scheduler: "dpmpp_2m", karras: true },
  { scheduler: "ddim" },
] as const;

describe("reference renders over the local queue land on the known picture", () => {
  for (const mode of ["base", "ensemble", "sdedit"] as const) {
    it(`${mode}: every scheduler`, async () => {
      const submitted = [];
      for (const sampler of SAMPLERS) {
        const body = { prompt: POINT, mode, width: 64, height: 64, steps: 8, guidance_scale: 1, seed: 3, ...sampler };
        const res = await api(stack, "POST", "/v1/renders", body);
        assert.equal(res.status, 202, res.text);
        submitted.push({ sampler, id: res.json.id as string });
      }
      const expected = decodeExpected(pictureLatents(onlyPicture(POINT), 8, 8, mode !== "base"), 8, 8);
      for (const { sampler, id } of submitted) {
        const job = await waitForJob(stack, id);
        assert.equal(job.status, "succeeded", JSON.stringify(job.error));
        const rgb = await sharp(await download(job.images[0].url))
          .removeAlpha()
          .raw()
          .toBuffer();
        // DDIM stops at ᾱ₀ (σ ≈ 0.029), so a trace of the noise stays: a wider bound for it.
        const bound = sampler.scheduler === "ddim" ? 16 : 2;
        const err = maxAbsDiff(rgb, expected);
        assert.ok(err <= bound, `${JSON.stringify(sampler)}: PNG differs from the picture by ${err} levels`);
      }
    });
  }
});
