import fs from "node:fs";
import { parseArgs } from "node:util";

import { GPU_PROFILES, type GpuProfile } from "@kiln/gpu-worker";

import { makePolicy, POLICY_NAMES } from "../simulate/policies.js";
import { simulate } from "../simulate/simulator.js";
import { plotSvg } from "../simulate/svg-plot.js";
import { makeTrace, TRACE_NAMES } from "../simulate/traces.js";

const USAGE = `Usage: kiln simulate --trace ${TRACE_NAMES.join("|")}|FILE [options]

Simulates a Kiln GPU fleet under an arrival trace and a scaling policy, and reports time to image,
GPU-hours, cost and scale events (see docs/scaling.md).

  --trace NAME|FILE   arrival pattern, or a file of arrivals (seconds[,WxH[,mode[,steps[,n]]]] per line)
  --rate PER_MIN      mean renders per minute (default 10)
  --hours H           simulated hours (default 24)
  --policy NAME       ${POLICY_NAMES.join(", ")} (default target-backlog)
  --gpu NAME          ${Object.keys(GPU_PROFILES).join(", ")} (default a10)
  --profile FILE      JSON GPU profile fields over --gpu's (stepSeconds, vaeSeconds, stageOverheadSeconds,
                      batchMarginal, bootSeconds, modelLoadSeconds, pricePerHour, …; see docs/scaling.md)
  --poll SECONDS      an idle worker's poll cycle, which delays batch work (default 1, as the worker does;
                      interactive work wakes its long poll at once; 0 = it notices every render at once)
  --price USD         on-demand price per GPU-hour (default: the profile's)
  --target N          backlog per instance for target tracking (default 4)
  --max N             most instances (default 50; the fixed policy runs exactly this many)
  --idle SECONDS      idle time before scaling to zero (default 600)
  --batch N           compatible renders per UNet batch (default 1)
  --spot SHARE        share of spot instances, 0–1 (default 0)
  --pipelined         model the pipelined worker (KILN_WORKER_PIPELINE, the worker's default) stage by
                      stage: CPU work off the GPU, the next stage claimed ahead (docs/scaling.md)
  --seed N            random seed (default 1)
  --svg FILE          write a plot of queue depth, instances and latency
  --json              print one JSON object (p50_s, p95_s, p99_s, gpu_hours, cost_usd, scale_events, …)`;

function number(name: string, value: string | undefined, fallback: number, min = 0, max = Infinity): number {
  if (value === undefined) return fallback;
  const x = Number(value);
  if (!Number.isFinite(x) || x < min || x > max) {
    throw new UsageError(`--${name} must be a number from ${min} to ${max}, got "${value}"`);
  }
  return x;
}

export class UsageError extends Error {}

const PROFILE_NUMBERS = [
  "stepSeconds",
  "vaeSeconds",
  "stageOverheadSeconds",
  "batchMarginal",
  "bootSeconds",
  "modelLoadSeconds",
  "pricePerHour",
  "spotPricePerHour",
  "spotInterruptionsPerHour",
] as const;

/** A GPU profile file: a JSON object of GpuProfile fields (numbers ≥ 0, and `name`). */
function readProfile(file: string): Partial<GpuProfile> {
  let o: unknown;
  try {
    o = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new UsageError(`--profile ${file}: ${(e as Error).message}`);
  }
  if (typeof o !== "object" || o === null || Array.isArray(o))
    throw new UsageError(`--profile ${file}: expected a JSON object of GPU profile fields`);
  const out: Partial<GpuProfile> = {};
  for (const [k, v] of Object.entries(o)) {
    if (k === "name" && typeof v === "string") out.name = v;
    else if ((PROFILE_NUMBERS as readonly string[]).includes(k) && typeof v === "number" && v >= 0)
      out[k as (typeof PROFILE_NUMBERS)[number]] = v;
    else
      throw new UsageError(
        `--profile ${file}: "${k}" must be one of name, ${PROFILE_NUMBERS.join(", ")} (numbers ≥ 0), got ${JSON.stringify(v)}`,
      );
  }
  return out;
}

export async function run(argv: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        trace: { type: "string" },
        rate: { type: "string" },
        hours: { type: "string" },
        policy: { type: "string", default: "target-backlog" },
        gpu: { type: "string", default: "a10" },
        profile: { type: "string" },
        poll: { type: "string" },
        price: { type: "string" },
        target: { type: "string" },
        max: { type: "string" },
        idle: { type: "string" },
        batch: { type: "string" },
        spot: { type: "string" },
        pipelined: { type: "boolean", default: false },
        seed: { type: "string" },
        svg: { type: "string" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    console.error(`kiln simulate: ${(e as Error).message}\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (values.help) {
    console.log(USAGE);
    return;
  }
  try {
    if (!values.trace) throw new UsageError("--trace is required");
    const base = GPU_PROFILES[values.gpu!];
    if (!base) throw new UsageError(`--gpu must be one of ${Object.keys(GPU_PROFILES).join(", ")}`);
    const custom = values.profile ? readProfile(values.profile) : {};
    const withFile = { ...base, ...custom };
    const profile = { ...withFile, pricePerHour: number("price", values.price, withFile.pricePerHour, 0) };
    const hours = number("hours", values.hours, 24, 0.01, 24 * 366);
    const rate = number("rate", values.rate, 10, 0.001, 100_000);
    const seed = number("seed", values.seed, 1, 0);
    const maxInstances = number("max", values.max, 50, 1, 10_000);
    const batchDays = Array.from({ length: Math.ceil(hours / 24) }, (_, d) => d * 86_400 + 2 * 3600);
    const policy = makePolicy(values.policy!, {
      targetBacklog: number("target", values.target, 4, 0.1),
      maxInstances,
      idleSeconds: number("idle", values.idle, 600, 0),
      warmups: {
        at: batchDays,
        leadSeconds: profile.bootSeconds + profile.modelLoadSeconds + 120,
        instances: maxInstances,
      },
    });
    const trace = makeTrace(values.trace, { ratePerMinute: rate, hours, seed });
    const started = performance.now();
    const result = simulate(trace, {
      profile,
      policy,
      hours,
      seed,
      maxBatch: number("batch", values.batch, 1, 1, 16),
      spotShare: number("spot", values.spot, 0, 0, 1),
      pipelined: values.pipelined,
      idlePollSeconds: number("poll", values.poll, 1, 0, 20),
    });
    const wallSeconds = (performance.now() - started) / 1000;
    if (values.svg) {
      fs.writeFileSync(
        values.svg,
        plotSvg(result.samples, `kiln simulate: ${values.trace}, ${rate}/min, ${policy.name}, ${profile.name}`),
      );
    }
    const { samples: _samples, ...figures } = result;
    const summary = {
      trace: values.trace,
      rate_per_min: rate,
      hours,
      policy: policy.name,
      gpu: profile.name,
      ...figures,
    };
    if (values.json) {
      console.log(JSON.stringify(summary));
      return;
    }
    console.log(
      [
        `trace ${values.trace} at ${rate}/min for ${hours} h, policy ${policy.name}, ${profile.name}:`,
        `  renders ${result.jobs} (${result.images} images) simulated in ${wallSeconds.toFixed(2)} s`,
        `  time to image p50 ${result.p50_s} s, p95 ${result.p95_s} s, p99 ${result.p99_s} s, max ${result.max_s} s`,
        `  GPU-hours ${result.gpu_hours} (busy ${result.busy_gpu_hours}), cost $${result.cost_usd}, $${result.cost_per_1000_images} per 1,000 images`,
        `  scale events ${result.scale_events}, most instances ${result.max_instances}, spot interruptions ${result.spot_interruptions}`,
      ].join("\n"),
    );
  } catch (e) {
    if (e instanceof UsageError || (e instanceof Error && /--|trace|\.txt|\.csv|:\d+:/.test(e.message))) {
      console.error(`kiln simulate: ${e.message}`);
      process.exitCode = 2;
      return;
    }
    throw e;
  }
}
