import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { GPU_PROFILES, type GpuProfile } from "@kiln/gpu-worker";
import { createLogger } from "@kiln/shared/node";

import type { SimulationResult } from "../simulate/simulator.js";
import type { Arrival } from "../simulate/traces.js";
import {
  type MeasuredJob,
  overheadPerStage,
  predict,
  SCENARIO,
  simPercentile,
  startRealStack,
  validationProfile,
  validationTrace,
  workerModel,
  writeProfileFile,
  writeTraceFile,
} from "../simulate/validation.js";
import { fmt, table } from "./stats.js";

/** The worker setups validated: each a `KILN_*` environment for the workers and the traces it runs. */
export const MODES = {
  // The worker before pipelining: CPU work between GPU calls (KILN_WORKER_PIPELINE=false).
  unpipelined: {
    env: { KILN_WORKER_PIPELINE: "false" },
    traces: [
      { name: "poisson", ratePerMinute: 50, seed: 11, label: "Poisson 50/min" },
      { name: "poisson", ratePerMinute: 75, seed: 12, label: "Poisson 75/min" },
    ],
  },
  // The worker as it ships (KILN_WORKER_PIPELINE's default), on the same traces.
  pipelined: {
    env: {},
    traces: [
      { name: "poisson", ratePerMinute: 50, seed: 11, label: "Poisson 50/min" },
      { name: "poisson", ratePerMinute: 75, seed: 12, label: "Poisson 75/min" },
    ],
  },
  // Pipelined with KILN_WORKER_BATCH=4, on bursts that queue several compatible renders at once.
  batched: {
    env: { KILN_WORKER_BATCH: "4" },
    traces: [
      { name: "bursts", ratePerMinute: 12, seed: 21, label: "bursts 12/min × 2–6" },
      { name: "bursts", ratePerMinute: 16, seed: 22, label: "bursts 16/min × 2–6" },
    ],
  },
} as const satisfies Record<
  string,
  {
    env: Record<string, string>;
    traces: readonly { name: string; ratePerMinute: number; seed: number; label: string }[];
  }
>;
export type Mode = keyof typeof MODES;
/** Renders per trace: 30 unpipelined (as first validated); 60 pipelined, whose p50 sits between renders that ran
 * alone and renders whose refine stage waited behind another's first stage, so that it is less of a coin toss. */
const jobsFor = (mode: Mode) => (mode === "unpipelined" ? 30 : 60);
const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

const err = (predicted: number, measured: number) => `${fmt(((predicted - measured) / measured) * 100, 1)} %`;

/** `npm run bench -- simulate-validate`: every mode; `simulate-validate-pipelined` etc.: one. */
export async function run(): Promise<string> {
  const out: string[] = [];
  for (const mode of Object.keys(MODES) as Mode[]) out.push(`### ${mode}\n\n${await runMode(mode)}`);
  return out.join("\n\n");
}

export async function runMode(mode: Mode): Promise<string> {
  const { env, traces } = MODES[mode];
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-simval-"));
  const logger = createLogger({ level: "silent" });
  const profile0 = validationProfile(GPU_PROFILES[SCENARIO.gpu]!, SCENARIO.timeScale, 0);
  const stack = await startRealStack({
    root,
    workers: SCENARIO.workers,
    profile: profile0,
    logger,
    pollSeconds: SCENARIO.pollSeconds,
    env,
  });
  const model = workerModel(stack.config);
  const mix = mode === "batched" ? SCENARIO.burstMix() : SCENARIO.mix();
  const runs: { label: string; jobs: MeasuredJob[]; wall: number; busy: number }[] = [];
  let isolated = NaN;
  try {
    // Warm-up: first runs of each worker's sessions, sharp and the SQLite statements.
    const warm = mix[0]!.shape;
    await stack.run(Array.from({ length: 2 * SCENARIO.workers }, () => ({ t: 0, shape: warm })));
    const alone: MeasuredJob[] = [];
    for (let i = 0; i < 4; i++) alone.push(...(await stack.run([{ t: 0, shape: warm }])).jobs);
    isolated = overheadPerStage(alone);
    for (const t of traces) {
      const arrivals = validationTrace(t.name, { ...t, seconds: 3600, mix, maxJobs: jobsFor(mode) });
      const real = await stack.run(arrivals);
      runs.push({ label: t.label, jobs: real.jobs, wall: real.wallSeconds, busy: real.gpuBusySeconds });
    }
  } finally {
    await stack.stop();
  }

  const cli: string[] = [];
  /** `kiln simulate` on the recorded arrivals, checked against the in-process prediction; its command line. */
  const viaCli = (i: number, arrivals: Arrival[], profile: GpuProfile, expected: SimulationResult) => {
    const traceFile = path.join(root, `trace-${i}.csv`);
    const profileFile = path.join(root, `profile-${i}.json`);
    writeTraceFile(
      traceFile,
      [...arrivals].sort((a, b) => a.t - b.t),
    );
    writeProfileFile(profileFile, profile);
    const args = ["simulate", "--trace", traceFile, "--policy", "fixed", "--max", String(SCENARIO.workers)];
    if (model.pipelined) args.push("--pipelined");
    if (model.maxBatch > 1) args.push("--batch", String(model.maxBatch));
    args.push("--profile", profileFile, "--poll", String(SCENARIO.pollSeconds), "--hours", "1", "--json");
    const kiln = fileURLToPath(new URL("../../bin/kiln.js", import.meta.url));
    const out = JSON.parse(execFileSync(process.execPath, [kiln, ...args], { encoding: "utf8" })) as {
      p50_s: number;
      p95_s: number;
    };
    if (out.p50_s !== expected.p50_s || out.p95_s !== expected.p95_s) {
      throw new Error(`kiln simulate disagrees with the in-process prediction: ${JSON.stringify(out)}`);
    }
    cli.push(`kiln ${args.map((a) => (a.startsWith(root) ? path.basename(a) : a)).join(" ")}`);
  };
  const shapes = mix.map((m) => `${m.weight}× ${m.shape.mode} n = ${m.shape.n}`).join(", ");
  const stackLine = `Real local stack: API, SQLite queue and job store, file blobs, ${SCENARIO.workers} in-process workers (\`kiln worker\`'s, ${
    Object.entries(env)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ") || "default settings"
  }: pipelined ${model.pipelined}, batch ${model.maxBatch}) each on its own simulated GPU (${SCENARIO.gpu} profile, GPU calls ${SCENARIO.timeScale}× as long), tiny text encoders, hand-over, PNG encoding; 256², 30 steps, shapes ${shapes}; workers' idle poll ${SCENARIO.pollSeconds} s. ${jobsFor(mode)} renders per trace. Predicted: \`kiln simulate${model.pipelined ? " --pipelined" : ""}${model.maxBatch > 1 ? ` --batch ${model.maxBatch}` : ""}\` on the arrivals the API recorded, same profile, policy \`fixed\` with ${SCENARIO.workers} instances.`;
  const reproduce = () => ["", "Reproduce a prediction:", "", ...cli.map((c) => `    ${c}`)];

  if (model.pipelined) {
    // The pipelined worker's CPU work per stage is calibrated on isolated renders, where it is all on the
    // render's path (under load its stage start is its claim, ahead of its GPU turn, so a run's renders cannot).
    const rows = runs.map((r, i) => {
      const measured = r.jobs.map((j) => j.timeToImage);
      const [m50, m95] = [simPercentile(measured, 0.5), simPercentile(measured, 0.95)];
      const arrivals = r.jobs.map((j) => ({ t: j.arrival, shape: j.shape }));
      const profile = { ...profile0, stageOverheadSeconds: isolated };
      const p = predict(
        path.join(root, `p-${i}.csv`),
        arrivals,
        profile,
        SCENARIO.workers,
        SCENARIO.pollSeconds,
        model,
      );
      viaCli(i, arrivals, profile, p.result);
      // The model before this validation: CPU work hidden, each render held its GPU from first stage to image.
      const old = predict(path.join(root, `o-${i}.csv`), arrivals, profile0, SCENARIO.workers, SCENARIO.pollSeconds, {
        pipelined: false,
        maxBatch: model.maxBatch,
      });
      const predictedMean = mean(r.jobs.map((j) => p.done[j.index]! - j.arrival));
      return [
        r.label,
        String(r.jobs.length),
        fmt((r.busy / (r.wall * SCENARIO.workers)) * 100, 0) + " %",
        fmt(mean(measured), 2),
        fmt(m50, 2),
        fmt(m95, 2),
        `${fmt(predictedMean, 2)} (${err(predictedMean, mean(measured))})`,
        `${fmt(p.result.p50_s, 2)} (${err(p.result.p50_s, m50)})`,
        `${fmt(p.result.p95_s, 2)} (${err(p.result.p95_s, m95)})`,
        `${fmt(old.result.p50_s, 2)} (${err(old.result.p50_s, m50)})`,
        `${fmt(old.result.p95_s, 2)} (${err(old.result.p95_s, m95)})`,
      ];
    });
    fs.rmSync(root, { recursive: true, force: true });
    return [
      `${stackLine} CPU work per stage, calibrated on isolated renders before the traces: ${fmt(isolated * 1000, 0)} ms.`,
      "",
      table(
        [
          "trace",
          "renders",
          "GPUs busy (of wall)",
          "measured mean (s)",
          "measured p50 (s)",
          "measured p95 (s)",
          "predicted mean",
          "predicted p50",
          "predicted p95",
          "previous model p50",
          "previous model p95",
        ],
        rows,
      ),
      ...reproduce(),
    ].join("\n");
  }

  const rows: string[][] = [];
  const overheads = runs.map((r) => overheadPerStage(r.jobs));
  for (const [i, r] of runs.entries()) {
    const measured = r.jobs.map((j) => j.timeToImage);
    const m50 = simPercentile(measured, 0.5);
    const m95 = simPercentile(measured, 0.95);
    const arrivals = r.jobs.map((j) => ({ t: j.arrival, shape: j.shape }));
    const cross = overheads[(i + 1) % runs.length]!;
    const crossProfile = { ...profile0, stageOverheadSeconds: cross };
    const p = predict(
      path.join(root, `trace-${i}.csv`),
      arrivals,
      crossProfile,
      SCENARIO.workers,
      SCENARIO.pollSeconds,
      model,
    );
    const own = predict(
      path.join(root, `trace-${i}-own.csv`),
      arrivals,
      { ...profile0, stageOverheadSeconds: overheads[i]! },
      SCENARIO.workers,
      SCENARIO.pollSeconds,
      model,
    );
    // The same prediction through the command users run, to show the table is `kiln simulate`'s.
    viaCli(i, arrivals, crossProfile, p.result);
    const waits = r.jobs.map((j) => j.stageTimes[0]![0]);
    rows.push([
      r.label,
      String(r.jobs.length),
      fmt((r.busy / (r.wall * SCENARIO.workers)) * 100, 0) + " %",
      fmt(simPercentile(waits, 0.5), 2),
      fmt(m50, 2),
      fmt(m95, 2),
      `${fmt(p.result.p50_s, 2)} (${err(p.result.p50_s, m50)})`,
      `${fmt(p.result.p95_s, 2)} (${err(p.result.p95_s, m95)})`,
      fmt(cross * 1000, 0),
      `${fmt(own.result.p50_s, 2)} (${err(own.result.p50_s, m50)})`,
      `${fmt(own.result.p95_s, 2)} (${err(own.result.p95_s, m95)})`,
      fmt(overheads[i]! * 1000, 0),
    ]);
  }
  fs.rmSync(root, { recursive: true, force: true });
  return [
    `${stackLine} CPU overhead per stage: isolated renders ${fmt(isolated * 1000, 0)} ms; "cross" = calibrated on the other trace's run, "own" = on the same run (isolates the queueing model).`,
    "",
    table(
      [
        "trace",
        "renders",
        "GPUs busy (of wall)",
        "measured wait p50 (s)",
        "measured p50 (s)",
        "measured p95 (s)",
        "predicted p50, cross",
        "predicted p95, cross",
        "cross overhead (ms/stage)",
        "predicted p50, own",
        "predicted p95, own",
        "own overhead (ms/stage)",
      ],
      rows,
    ),
    ...reproduce(),
  ].join("\n");
}
