import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { GPU_PROFILES } from "@kiln/gpu-worker";
import { createLogger } from "@kiln/shared/node";

import {
  type MeasuredJob,
  overheadPerStage,
  predict,
  SCENARIO,
  simPercentile,
  startRealStack,
  validationProfile,
  validationTrace,
  writeProfileFile,
  writeTraceFile,
} from "../simulate/validation.js";
import { fmt, table } from "./stats.js";

const TRACES = [
  { name: "poisson", ratePerMinute: 50, seed: 11, label: "Poisson 50/min" },
  { name: "poisson", ratePerMinute: 75, seed: 12, label: "Poisson 75/min" },
];
const JOBS = 30;

const err = (predicted: number, measured: number) => `${fmt(((predicted - measured) / measured) * 100, 1)} %`;

/**
 * Issue 15's validation table: the real local stack (API, SQLite queue and stores, two in-process
 * workers each on its own simulated GPU, tiny text encoders, hand-over, PNG encoding) under two
 * time-compressed traces, against `kiln simulate` on the same arrivals, profile and `fixed` policy.
 * The simulator's one CPU parameter (seconds per stage the GPU waits for) is calibrated from the
 * other trace's measured runs (cross-calibrated), and, to separate the queueing model from the
 * overhead figure, also from the same run.
 */
export async function run(): Promise<string> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "kiln-bench-simval-"));
  const logger = createLogger({ level: "silent" });
  const profile0 = validationProfile(GPU_PROFILES[SCENARIO.gpu]!, SCENARIO.timeScale, 0);
  const stack = await startRealStack({
    root,
    workers: SCENARIO.workers,
    profile: profile0,
    logger,
    pollSeconds: SCENARIO.pollSeconds,
  });
  const runs: { label: string; jobs: MeasuredJob[]; wall: number; busy: number }[] = [];
  let isolated = NaN;
  try {
    // Warm-up: first runs of each worker's sessions, sharp and the SQLite statements.
    const warm = SCENARIO.mix()[0]!.shape;
    await stack.run(Array.from({ length: 2 * SCENARIO.workers }, () => ({ t: 0, shape: warm })));
    const alone: MeasuredJob[] = [];
    for (let i = 0; i < 4; i++) alone.push(...(await stack.run([{ t: 0, shape: warm }])).jobs);
    isolated = overheadPerStage(alone);
    for (const t of TRACES) {
      const arrivals = validationTrace(t.name, { ...t, seconds: 3600, mix: SCENARIO.mix(), maxJobs: JOBS });
      const real = await stack.run(arrivals);
      runs.push({ label: t.label, jobs: real.jobs, wall: real.wallSeconds, busy: real.gpuBusySeconds });
    }
  } finally {
    await stack.stop();
  }

  const rows: string[][] = [];
  const cli: string[] = [];
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
    );
    const own = predict(
      path.join(root, `trace-${i}-own.csv`),
      arrivals,
      { ...profile0, stageOverheadSeconds: overheads[i]! },
      SCENARIO.workers,
      SCENARIO.pollSeconds,
    );
    // The same prediction through the command users run, to show the table is `kiln simulate`'s.
    const traceFile = path.join(root, `trace-${i}.csv`);
    const profileFile = path.join(root, `profile-${i}.json`);
    writeTraceFile(
      traceFile,
      [...arrivals].sort((a, b) => a.t - b.t),
    );
    writeProfileFile(profileFile, crossProfile);
    const args = ["simulate", "--trace", traceFile, "--policy", "fixed", "--max", String(SCENARIO.workers)];
    args.push("--profile", profileFile, "--poll", String(SCENARIO.pollSeconds), "--hours", "1", "--json");
    const kiln = fileURLToPath(new URL("../../bin/kiln.js", import.meta.url));
    const out = JSON.parse(execFileSync(process.execPath, [kiln, ...args], { encoding: "utf8" })) as {
      p50_s: number;
      p95_s: number;
    };
    if (out.p50_s !== p.result.p50_s || out.p95_s !== p.result.p95_s) {
      throw new Error(`kiln simulate disagrees with the in-process prediction: ${JSON.stringify(out)}`);
    }
    cli.push(`kiln ${args.map((a) => (a.startsWith(root) ? path.basename(a) : a)).join(" ")}`);
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
  const shapes = SCENARIO.mix()
    .map((m) => `${m.weight}× ${m.shape.mode} n = ${m.shape.n}`)
    .join(", ");
  return [
    `Real local stack: API, SQLite queue and job store, file blobs, ${SCENARIO.workers} in-process workers each on its own simulated GPU (${SCENARIO.gpu} profile, GPU calls ${SCENARIO.timeScale}× as long), tiny text encoders, hand-over, PNG encoding; 256², 30 steps, shapes ${shapes}; workers' idle poll ${SCENARIO.pollSeconds} s. ${JOBS} renders per trace. Predicted: \`kiln simulate\` on the arrivals the API recorded, same profile, policy \`fixed\` with ${SCENARIO.workers} instances. CPU overhead per stage: isolated renders ${fmt(isolated * 1000, 0)} ms; "cross" = calibrated on the other trace's run, "own" = on the same run (isolates the queueing model).`,
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
    "",
    "Reproduce a prediction:",
    "",
    ...cli.map((c) => `    ${c}`),
  ].join("\n");
}
