import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { loadSdxlModel, type ModelSet, writeReferenceModels } from "@kiln/gpu-worker";
import { QUEUES } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import sharp from "sharp";

import {
  decodeExpected,
  maxAbsDiff,
  onlyPicture,
  pictureLatents,
} from "../../packages/gpu-worker/test/reference/expected.js";
import {
  type AwsStandins,
  openStandinPorts,
  startAwsStandins,
} from "../../packages/shared/test/support/aws-standins.js";
import { api, download, type LocalStack, startLocalStack, waitForJob } from "../support/local-stack.js";

/**
 * Known answers over the queue on the AWS family: the API and a worker on the reference models, with
 * SQS and S3 on fauxqs and DynamoDB on dynalite (loopback stand-ins). A subset of the local family's
 * known answers (reference-renders-local.test.ts), kept small: every mode, so the base → refine
 * hand-over crosses SQS and S3; a deterministic and an ancestral sampler; and a two-shape prompt.
 * The PNG comes back through a presigned S3 URL and must be the picture decoded.
 */

const POINT = "a small red circle at the left on a blue background";
const TWO = "a red circle and a yellow star on a blue background";
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-reference-aws-"));
let models: ModelSet;
let standins: AwsStandins;
let stack: LocalStack;

before(async () => {
  const dirs = writeReferenceModels(tmp);
  const options = { providers: ["cpu" as const], logger: createLogger({ level: "silent" }) };
  models = {
    base: await loadSdxlModel(dirs.base, "base", options),
    refiner: await loadSdxlModel(dirs.refiner, "refiner", options),
  };
  standins = await startAwsStandins();
  const { ports } = await openStandinPorts(standins, {
    queues: QUEUES.map((q) => q.name),
    maxReceives: 3,
    bucket: "kiln-reference",
    table: "kiln-reference",
  });
  stack = await startLocalStack({ models, ports });
});

after(async () => {
  await stack?.stop();
  await standins?.stop();
  for (const m of Object.values(models ?? {})) await m?.release();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const rgbOf = async (url: string) =>
  new Uint8Array(
    await sharp(await download(url))
      .removeAlpha()
      .raw()
      .toBuffer(),
  );

describe("reference renders over SQS, S3 and DynamoDB (stand-ins) land on the known picture", () => {
  it("every mode with euler and euler_a, and two shapes composed", async () => {
    const cases: { prompt: string; mode: "base" | "ensemble" | "sdedit"; scheduler: string; size: number }[] = [];
    for (const mode of ["base", "ensemble", "sdedit"] as const)
      for (const scheduler of ["euler", "euler_a"]) cases.push({ prompt: POINT, mode, scheduler, size: 64 });
    cases.push({ prompt: TWO, mode: "base", scheduler: "euler", size: 128 });
    const submitted = [];
    for (const c of cases) {
      const body = {
        prompt: c.prompt,
        mode: c.mode,
        scheduler: c.scheduler,
        width: c.size,
        height: c.size,
        steps: 8,
        guidance_scale: 1,
        seed: 3,
      };
      const res = await api(stack, "POST", "/v1/renders", body);
      assert.equal(res.status, 202, res.text);
      submitted.push({ c, id: res.json.id as string });
    }
    for (const { c, id } of submitted) {
      const job = await waitForJob(stack, id);
      assert.equal(job.status, "succeeded", JSON.stringify(job.error));
      assert.match(job.images[0].url, /^http:\/\/127\.0\.0\.1:\d+\/kiln-reference\//, "a presigned S3 URL");
      const h = c.size / 8;
      const expected = decodeExpected(pictureLatents(onlyPicture(c.prompt), h, h, c.mode !== "base"), h, h);
      const err = maxAbsDiff(await rgbOf(job.images[0].url), expected);
      assert.ok(err <= 2, `${JSON.stringify(c)}: PNG differs from the picture by ${err} levels`);
    }
  });
});
