import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { type Latents, planRender, type RenderPlan, type RenderRequestInput, renderRequestSchema } from "@kiln/shared";
import { createLogger } from "@kiln/shared/node";
import sharp from "sharp";

import { initialNoise } from "../../src/engine/noise.js";
import { createScheduler } from "../../src/engine/schedulers/index.js";
import { loadSdxlModel, type SdxlModel } from "../../src/engine/sdxl-model.js";
import { runPipelineStage } from "../../src/engine/sdxl-pipeline.js";
import { drawPicture, matchingPictures } from "../../src/models/reference/picture-set.js";
import { writeReferenceModel } from "../../src/models/reference/reference-models.js";
import { COLOURS, decodeExpected, maxAbsDiff, meanAbsDiff, onlyPicture, pictureLatents } from "./expected.js";

/**
 * Known answers of the whole SDXL path (prompt → encoders → CFG → sampler → hand-over → VAE → PNG) on the
 * reference models, whose UNet is the exact denoiser of a picture set: with one matching picture the
 * posterior is a point mass, so every correct sampler ends on that picture's latents.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-reference-"));
const logger = createLogger({ level: "silent" });
const models: { base?: SdxlModel; refiner?: SdxlModel; plainRefiner?: SdxlModel } = {};

before(async () => {
  const options = { providers: ["cpu" as const], logger };
  writeReferenceModel(path.join(tmp, "base"), { role: "base" });
  writeReferenceModel(path.join(tmp, "refiner"), { role: "refiner" });
  writeReferenceModel(path.join(tmp, "refiner-plain"), { role: "refiner", detail: false });
  models.base = await loadSdxlModel(path.join(tmp, "base"), "base", options);
  models.refiner = await loadSdxlModel(path.join(tmp, "refiner"), "refiner", options);
  models.plainRefiner = await loadSdxlModel(path.join(tmp, "refiner-plain"), "refiner", options);
});

after(async () => {
  for (const m of Object.values(models)) await m?.release();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const POINT = "a small red circle at the left on a blue background";
const OTHER_POINT = "a large green square at the right on a yellow background";
const SEVERAL = "a red circle on a blue background";

const plan = (body: Partial<RenderRequestInput>, seed = 7): RenderPlan =>
  planRender(renderRequestSchema().parse({ prompt: POINT, width: 64, height: 64, steps: 8, ...body }), seed);

interface Rendered {
  latents: Float32Array;
  png: Uint8Array;
}

/** Runs every stage of a plan; the final latents are the last stage's loop buffer after its last step. */
async function render(
  p: RenderPlan,
  refiner: SdxlModel = models.plainRefiner!,
  everyStep?: Float32Array[],
): Promise<Rendered> {
  let input: Latents | undefined;
  let last: Float32Array | undefined;
  for (const stage of p.stages) {
    const model = stage.index === 0 ? models.base! : refiner;
    const result = await runPipelineStage(model, { jobId: "job_ref", plan: p, stage }, input, {
      onStep: (step, steps, latents) => {
        everyStep?.push(latents.slice());
        if (step === steps) last = latents.slice();
      },
    });
    if (result.kind === "latents") input = result.latents;
    else return { latents: last!, png: result.images[0]!.bytes };
  }
  throw new Error("the plan produced no images");
}

const rgbOf = async (png: Uint8Array) => new Uint8Array(await sharp(png).removeAlpha().raw().toBuffer());

/**
 * DDIM with `set_alpha_to_one: false` (SDXL's config) stops at ᾱ₀, not at σ = 0: its output is
 * √ᾱ₀·x₀ + √(1 − ᾱ₀)·ε. With a point mass ε stays the first step's (x_T − √ᾱ_t·μ)/√(1 − ᾱ_t).
 */
function ddimExpected(p: RenderPlan, mu: Float64Array): Float64Array {
  const scheduler = createScheduler(models.base!.schedulerConfig, { name: "ddim" });
  scheduler.setTimesteps(p.steps);
  const t1 = scheduler.timesteps[0]!;
  const alphas = trainAlphas();
  const a1 = alphas[t1]!;
  const a0 = alphas[0]!;
  const noise = initialNoise(p.seed, 0, [4, p.height / 8, p.width / 8]);
  return mu.map(
    (m, i) => Math.sqrt(a0) * m + Math.sqrt(1 - a0) * ((noise[i]! - Math.sqrt(a1) * m) / Math.sqrt(1 - a1)),
  );
}

function trainAlphas(): number[] {
  const beta = (i: number) => (Math.sqrt(0.00085) + ((Math.sqrt(0.012) - Math.sqrt(0.00085)) * i) / 999) ** 2;
  const out: number[] = [];
  let acc = 1;
  for (let i = 0; i < 1000; i++) out.push((acc *= 1 - beta(i)));
  return out;
}

const SAMPLERS = [
  { scheduler: "euler" },
  { scheduler: "euler", karras: true },
  { scheduler: "euler_a" },
  { scheduler: "euler_a", karras: true },
  { scheduler: "dpmpp_2m" },
  { scheduler: "dpmpp_2m", karras: true },
  { scheduler: "ddim" },
] as const;

/**
 * Tolerance on the final latents. DPM++ 2M with Karras σ feeds the UNet `round(t(σ))` (diffusers does the
 * same), so the model is asked about a slightly different noise level than the sample has; the exact
 * denoiser then answers a slightly different question and the result is off by up to ~1e-2.
 */
const tolerance = (s: { scheduler: string; karras?: boolean }) =>
  s.scheduler === "dpmpp_2m" && s.karras ? 3e-2 : 2e-3;

describe("point-mass posterior: every sampler ends on the picture's latents", () => {
  for (const sampler of SAMPLERS) {
    for (const steps of [3, 10]) {
      it(`${sampler.scheduler}${"karras" in sampler ? " karras" : ""}, ${steps} steps, base`, async () => {
        const p = plan({ ...sampler, steps, mode: "base", guidance_scale: 1 });
        const { latents } = await render(p);
        const mu = pictureLatents(onlyPicture(POINT), 8, 8);
        const expected = sampler.scheduler === "ddim" ? ddimExpected(p, mu) : mu;
        const err = maxAbsDiff(latents, expected);
        assert.ok(err < tolerance(sampler), `max |latents − picture| = ${err}`);
      });
    }
  }
});

describe("point-mass posterior: every step of a deterministic sampler is on the exact path", () => {
  // With a point mass at μ the exact ε̂ is constant along the probability-flow ODE and these samplers integrate
  // it exactly: VE (Euler) x_k = μ + σ_k·(x_T − μ)/σ_0; VP (DPM++, DDIM) x_k = α_k·μ + σ̂_k·ε₀ with α = 1/√(σ² + 1),
  // σ̂ = σ·α and ε₀ = (x_T − α_0·μ)/σ̂_0. A wrong σ or a missing scale_model_input shows at the first step,
  // even where the last step would hide it.
  for (const sampler of [
    { scheduler: "euler" },
    { scheduler: "euler", karras: true },
    { scheduler: "dpmpp_2m" },
    { scheduler: "ddim" },
  ] as const) {
    for (const mode of ["base", "ensemble"] as const) {
      it(`${sampler.scheduler}${"karras" in sampler ? " karras" : ""}, 10 steps, ${mode}`, async () => {
        // Ensemble: the refiner (same picture set) must take over exactly where the base stopped.
        const p = plan({ ...sampler, steps: 10, mode, guidance_scale: 1, high_noise_frac: 0.6 });
        const steps: Float32Array[] = [];
        await render(p, undefined, steps);
        const scheduler = createScheduler(models.base!.schedulerConfig, {
          name: sampler.scheduler,
          karras: "karras" in sampler ? sampler.karras : undefined,
        });
        scheduler.setTimesteps(p.steps);
        const mu = pictureLatents(onlyPicture(POINT), 8, 8);
        const xT = initialNoise(p.seed, 0, [4, 8, 8]).map((v) => v * scheduler.initNoiseSigma);
        const ve = sampler.scheduler === "euler";
        const alpha = (k: number) => 1 / Math.sqrt(scheduler.sigmaAt(k) ** 2 + 1);
        const direction = mu.map((m, i) =>
          ve ? (xT[i]! - m) / scheduler.sigmaAt(0) : (xT[i]! - alpha(0) * m) / (scheduler.sigmaAt(0) * alpha(0)),
        );
        assert.equal(steps.length, 10);
        steps.forEach((latents, i) => {
          const k = i + 1;
          const sigma = scheduler.sigmaAt(k);
          const expected = mu.map((m, j) =>
            ve ? m + sigma * direction[j]! : alpha(k) * m + sigma * alpha(k) * direction[j]!,
          );
          const err = maxAbsDiff(latents, expected);
          assert.ok(err < 1e-3 * (1 + sigma), `step ${k} (σ ${sigma}): max |latents − exact path| = ${err}`);
        });
      });
    }
  }
});

describe("every mode ends on the picture, with guidance", () => {
  for (const sampler of SAMPLERS) {
    for (const mode of ["base", "ensemble", "sdedit"] as const) {
      it(`${sampler.scheduler}${"karras" in sampler ? " karras" : ""}, ${mode}, guidance 5, detailed refiner`, async () => {
        const p = plan({ ...sampler, mode, steps: 10, guidance_scale: 5 });
        const { latents, png } = await render(p, models.refiner!);
        // The refiner's picture carries its ring texture: ensemble and SDEdit end on the refiner's version.
        const mu = pictureLatents(onlyPicture(POINT), 8, 8, mode !== "base");
        const expected = sampler.scheduler === "ddim" ? ddimExpected(p, mu) : mu;
        // The unconditional branch is the posterior over all pictures; CFG only moves x₀ along (μ − x̂₀ᵤ), which
        // vanishes once the unconditional posterior has also settled on μ.
        // DDIM stops at ᾱ₀ (σ ≈ 0.029) with the guided ε of its path, which the point-mass formula does not give
        // under CFG: bound it by that last noise level instead.
        // DPM++ 2M's SDEdit runs its few low-σ steps with a multistep history that starts there; with the
        // two-shape pictures in the unconditional posterior (7,616 pictures, many one small shape apart) that
        // posterior has not fully settled on μ by then, and guidance 5 multiplies what is left: 0.083 measured
        // (13 levels in the PNG), against ≤ 0.05 (4 levels) with one-shape pictures only.
        const unsettled = sampler.scheduler === "dpmpp_2m" && mode === "sdedit";
        const bound = sampler.scheduler === "ddim" ? 0.15 : unsettled ? 0.1 : 5e-2;
        const err = maxAbsDiff(latents, sampler.scheduler === "ddim" ? mu : expected);
        assert.ok(err < bound, `max |latents − picture| = ${err}`);
        if (sampler.scheduler !== "ddim") {
          const err = maxAbsDiff(await rgbOf(png), decodeExpected(mu, 8, 8));
          assert.ok(err <= (unsettled ? 16 : 4), `PNG differs from the decoded picture by ${err} levels`);
        }
      });
    }
  }
});

describe("CFG is exact extrapolation on point masses", () => {
  for (const sampler of [{ scheduler: "euler" }, { scheduler: "dpmpp_2m" }, { scheduler: "euler_a" }] as const) {
    it(`${sampler.scheduler}: ends on μ₋ + g·(μ₊ − μ₋)`, async () => {
      const g = 1.5;
      const p = plan({ ...sampler, mode: "base", guidance_scale: g, negative_prompt: OTHER_POINT });
      const { latents } = await render(p);
      const pos = pictureLatents(onlyPicture(POINT), 8, 8);
      const neg = pictureLatents(onlyPicture(OTHER_POINT), 8, 8);
      const expected = pos.map((v, i) => neg[i]! + g * (v - neg[i]!));
      const err = maxAbsDiff(latents, expected);
      assert.ok(err < 2e-3, `max |latents − extrapolation| = ${err}`);
    });
  }
});

describe("the hand-over and SDEdit against base-only", () => {
  for (const scheduler of ["euler", "dpmpp_2m", "ddim"] as const) {
    it(`${scheduler}: ensemble with the base's own picture set = base-only, several matching pictures`, async () => {
      const body = { prompt: SEVERAL, scheduler, steps: 12, guidance_scale: 3, high_noise_frac: 0.5 };
      const base = await render(plan({ ...body, mode: "base" }, 11));
      const ensemble = await render(plan({ ...body, mode: "ensemble" }, 11));
      const err = maxAbsDiff(base.latents, ensemble.latents);
      assert.ok(err < 1e-3, `max |ensemble − base| = ${err}`);
    });
  }

  it("SDEdit of a finished picture at any strength returns it (same picture set)", async () => {
    for (const strength of [0.2, 0.5, 0.9]) {
      const body = { prompt: SEVERAL, scheduler: "euler" as const, steps: 10, guidance_scale: 3, strength };
      const base = await render(plan({ ...body, mode: "base" }, 5));
      const sdedit = await render(plan({ ...body, mode: "sdedit" }, 5));
      const err = maxAbsDiff(base.latents, sdedit.latents);
      assert.ok(err < 1e-2, `strength ${strength}: max |sdedit − base| = ${err}`);
    }
  });

  it("the detailed refiner visibly changes ensemble and SDEdit renders", async () => {
    const size = { width: 256, height: 256, steps: 10 };
    const base = await render(plan({ mode: "base", ...size }));
    const ensemble = await render(plan({ mode: "ensemble", ...size }), models.refiner!);
    const sdedit = await render(plan({ mode: "sdedit", ...size }), models.refiner!);
    const plain = await rgbOf(base.png);
    const ensembleDiff = meanAbsDiff(plain, await rgbOf(ensemble.png));
    const sdeditDiff = meanAbsDiff(plain, await rgbOf(sdedit.png));
    assert.ok(ensembleDiff > 2, `ensemble differs from base-only by ${ensembleDiff} levels on average`);
    assert.ok(sdeditDiff > 2, `SDEdit differs from base-only by ${sdeditDiff} levels on average`);
  });
});

describe("several matching pictures: the seed picks one", () => {
  it("each seed lands on one of the matching pictures, the same seed on the same one, and seeds differ", async () => {
    const candidates = matchingPictures(SEVERAL);
    assert.equal(candidates.length, 6);
    const picked = new Set<number>();
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const p = plan({ prompt: SEVERAL, mode: "base", scheduler: "euler", steps: 12, guidance_scale: 1 }, seed);
      const { latents } = await render(p);
      const again = await render(p);
      assert.deepEqual(again.latents, latents, "the same seed must give the same latents");
      const errors = candidates.map((c) => maxAbsDiff(latents, pictureLatents(c, 8, 8)));
      const best = errors.indexOf(Math.min(...errors));
      assert.ok(errors[best]! < 2e-3, `seed ${seed}: nearest matching picture is ${errors[best]} away`);
      picked.add(best);
    }
    assert.ok(picked.size >= 2, `six seeds all picked picture ${[...picked]}`);
  });
});

describe("the decoded PNG is the procedural picture", () => {
  it("a 256×256 render matches the picture drawn at full resolution (mean ≤ 4 levels, 97 % of pixels within 24)", async () => {
    const p = plan({ mode: "base", width: 256, height: 256, steps: 10 });
    const { png } = await render(p);
    const rgb = await rgbOf(png);
    const drawn = drawPicture(onlyPicture(POINT), 256, 256);
    const mean = meanAbsDiff(rgb, drawn);
    let close = 0;
    for (let i = 0; i < rgb.length; i++) if (Math.abs(rgb[i]! - drawn[i]!) <= 24) close++;
    assert.ok(mean <= 4, `mean |PNG − drawing| = ${mean}`);
    assert.ok(close / rgb.length >= 0.97, `${((100 * close) / rgb.length).toFixed(1)} % within 24 levels`);
  });
});

describe("two shapes in one prompt compose", () => {
  const TWO = "a red circle and a yellow star on a blue background";

  it("the first-named shape at the left, the second at the right: one picture, every sampler lands on it", async () => {
    const pic = onlyPicture(TWO);
    assert.deepEqual(
      [pic.colour, pic.shape, pic.second?.colour, pic.second?.shape, pic.background],
      ["red", "circle", "yellow", "star", "blue"],
    );
    const swapped = onlyPicture("a yellow star and a red circle on a blue background");
    assert.deepEqual([swapped.shape, swapped.second?.shape], ["star", "circle"]);
    for (const sampler of [{ scheduler: "euler" }, { scheduler: "dpmpp_2m" }, { scheduler: "euler_a" }] as const) {
      const p = plan({ ...sampler, prompt: TWO, mode: "base", width: 128, height: 128, steps: 10, guidance_scale: 1 });
      const { latents } = await render(p);
      const err = maxAbsDiff(latents, pictureLatents(pic, 16, 16));
      assert.ok(err < 2e-3, `${sampler.scheduler}: max |latents − picture| = ${err}`);
    }
  });

  it("with guidance, the 256×256 PNG is both shapes drawn at full resolution", async () => {
    const p = plan({
      prompt: TWO,
      mode: "base",
      scheduler: "euler",
      width: 256,
      height: 256,
      steps: 10,
      guidance_scale: 5,
    });
    const rgb = await rgbOf((await render(p)).png);
    const drawn = drawPicture(onlyPicture(TWO), 256, 256);
    const mean = meanAbsDiff(rgb, drawn);
    assert.ok(mean <= 4, `mean |PNG − drawing| = ${mean}`);
    // Both shapes are there: the circle's centre is red, the star's yellow, the gap between them blue.
    const at = (x: number, y: number) => Array.from(rgb.subarray((y * 256 + x) * 3, (y * 256 + x) * 3 + 3));
    const near = (a: number[], b: readonly number[]) => a.every((v, i) => Math.abs(v - b[i]!) <= 8);
    assert.ok(near(at(77, 128), COLOURS.red), `circle centre ${at(77, 128)}`);
    assert.ok(near(at(179, 130), COLOURS.yellow), `star centre ${at(179, 130)}`);
    assert.ok(near(at(128, 128), COLOURS.blue), `gap ${at(128, 128)}`);
  });

  it("a two-shape prompt with a loose binding matches several pairs, and the seed picks one", async () => {
    const loose = "a red circle and a star on a blue background";
    const candidates = matchingPictures(loose);
    assert.equal(candidates.length, 7); // the star in any of the 7 colours but blue
    assert.ok(candidates.every((c) => c.second?.shape === "star" && c.colour === "red" && c.shape === "circle"));
    const picked = new Set<number>();
    for (const seed of [1, 2, 3]) {
      const p = plan(
        { prompt: loose, mode: "base", scheduler: "euler", width: 128, height: 128, steps: 12, guidance_scale: 1 },
        seed,
      );
      const { latents } = await render(p);
      const errors = candidates.map((c) => maxAbsDiff(latents, pictureLatents(c, 16, 16)));
      const best = errors.indexOf(Math.min(...errors));
      assert.ok(errors[best]! < 2e-3, `seed ${seed}: nearest matching picture is ${errors[best]} away`);
      picked.add(best);
    }
    assert.ok(picked.size >= 2, `three seeds all picked picture ${[...picked]}`);
  });
});
