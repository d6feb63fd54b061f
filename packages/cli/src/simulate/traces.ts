import fs from "node:fs";

import { DEFAULT_SHAPE, type RenderShape } from "@kiln/gpu-worker";

import { exponential, seededRandom } from "./random.js";

/** One arrival: when (seconds from the start) and what it asks for. */
export interface Arrival {
  t: number;
  shape: RenderShape;
  /** Part of a scheduled batch (goes to the batch lane). */
  batch?: boolean;
}

export interface TraceOptions {
  /** Mean arrivals per minute (peak-to-mean shapes keep this mean). */
  ratePerMinute: number;
  hours: number;
  seed: number;
  shape?: RenderShape;
}

/** Arrivals in time order, generated lazily so a year-long trace needs no memory. */
export type Trace = Iterable<Arrival>;

export const TRACE_NAMES = ["poisson", "diurnal", "bursty", "batch"] as const;

export function makeTrace(name: string, options: TraceOptions): Trace {
  switch (name) {
    case "poisson":
      return poisson(options);
    case "diurnal":
      return diurnal(options);
    case "bursty":
      return bursty(options);
    case "batch":
      return scheduledBatches(options);
    default:
      return fileTrace(name, options);
  }
}

/** Homogeneous Poisson arrivals. */
function* poisson({ ratePerMinute, hours, seed, shape = DEFAULT_SHAPE }: TraceOptions): Generator<Arrival> {
  const random = seededRandom(seed);
  const end = hours * 3600;
  const rate = ratePerMinute / 60;
  for (let t = exponential(random, rate); t < end; t += exponential(random, rate)) yield { t, shape };
}

/**
 * A day-shaped rate: low at night, peak in the afternoon (mean = the given rate, peak ≈ 1.8× it),
 * drawn by thinning a Poisson process at the peak rate.
 */
export function diurnalRate(ratePerMinute: number, t: number): number {
  const hour = (t / 3600) % 24;
  return (ratePerMinute / 60) * (1 + 0.8 * Math.sin((2 * Math.PI * (hour - 9)) / 24));
}

function* diurnal({ ratePerMinute, hours, seed, shape = DEFAULT_SHAPE }: TraceOptions): Generator<Arrival> {
  const random = seededRandom(seed);
  const end = hours * 3600;
  const peak = (ratePerMinute / 60) * 1.8;
  for (let t = exponential(random, peak); t < end; t += exponential(random, peak)) {
    if (random() * peak <= diurnalRate(ratePerMinute, t)) yield { t, shape };
  }
}

/**
 * Bursts: a quiet base rate with a 5-minute burst at 10× the base every hour on average, scaled so the
 * mean stays the given rate (a Slack channel discovering the bot, a launch).
 */
function* bursty({ ratePerMinute, hours, seed, shape = DEFAULT_SHAPE }: TraceOptions): Generator<Arrival> {
  const random = seededRandom(seed);
  const end = hours * 3600;
  const burstShare = (5 * 10) / (55 + 5 * 10); // burst minutes × factor over an hour's weighted minutes
  const base = ((ratePerMinute / 60) * (1 - burstShare) * 60) / 55;
  const burst = base * 10;
  let t = 0;
  let nextBurst = exponential(random, 1 / 3600);
  while (t < end) {
    const inBurst = t >= nextBurst && t < nextBurst + 300;
    if (t >= nextBurst + 300) {
      nextBurst = t + exponential(random, 1 / 3600);
      continue;
    }
    const rate = inBurst ? burst : base;
    const dt = exponential(random, rate);
    const boundary = inBurst ? nextBurst + 300 : nextBurst;
    if (t + dt >= boundary) {
      t = boundary; // memoryless: restart the draw at the rate change
      continue;
    }
    t += dt;
    if (t < end) yield { t, shape };
  }
}

/** Interactive Poisson traffic at the given rate plus a nightly batch of 600 renders at 02:00. */
function* scheduledBatches(options: TraceOptions): Generator<Arrival> {
  const batchSize = 600;
  const interactive = poisson(options)[Symbol.iterator]();
  let next = interactive.next();
  for (let day = 0; day * 86_400 < options.hours * 3600; day++) {
    const at = day * 86_400 + 2 * 3600;
    while (!next.done && next.value.t < at) {
      yield next.value;
      next = interactive.next();
    }
    if (at < options.hours * 3600) {
      for (let i = 0; i < batchSize; i++) yield { t: at, shape: options.shape ?? DEFAULT_SHAPE, batch: true };
    }
  }
  while (!next.done) {
    yield next.value;
    next = interactive.next();
  }
}

/**
 * A file of arrivals: one per line, `seconds[,WIDTHxHEIGHT[,mode[,steps[,n]]]]` (CSV) or JSON lines
 * `{"t":…, "width":…, "height":…, "mode":…, "steps":…, "n":…, "batch":…}`; `#` starts a comment.
 */
export function fileTrace(file: string, options: Partial<TraceOptions> = {}): Trace {
  if (!fs.existsSync(file)) {
    throw new Error(`--trace ${file}: no such trace (use poisson, diurnal, bursty, batch or a file of arrivals)`);
  }
  const base = options.shape ?? DEFAULT_SHAPE;
  const arrivals: Arrival[] = [];
  fs.readFileSync(file, "utf8")
    .split("\n")
    .forEach((raw, i) => {
      const line = raw.replace(/#.*/, "").trim();
      if (!line) return;
      const where = `${file}:${i + 1}`;
      if (line.startsWith("{")) {
        const o = JSON.parse(line) as Partial<RenderShape> & { t: number; batch?: boolean };
        if (!(o.t >= 0)) throw new Error(`${where}: "t" must be seconds ≥ 0`);
        arrivals.push({ t: o.t, shape: { ...base, ...o }, batch: o.batch });
        return;
      }
      const [t, size, mode, steps, n] = line.split(",").map((x) => x.trim());
      const seconds = Number(t);
      if (!(seconds >= 0)) throw new Error(`${where}: the first column must be seconds ≥ 0, got "${t}"`);
      const shape = { ...base };
      if (size) {
        const m = /^(\d+)x(\d+)$/.exec(size);
        if (!m) throw new Error(`${where}: size must be WIDTHxHEIGHT, got "${size}"`);
        shape.width = Number(m[1]);
        shape.height = Number(m[2]);
      }
      if (mode) {
        if (mode !== "base" && mode !== "ensemble" && mode !== "sdedit")
          throw new Error(`${where}: mode must be base, ensemble or sdedit, got "${mode}"`);
        shape.mode = mode;
      }
      if (steps) shape.steps = Number(steps);
      if (n) shape.n = Number(n);
      arrivals.push({ t: seconds, shape });
    });
  arrivals.sort((a, b) => a.t - b.t);
  return arrivals;
}
