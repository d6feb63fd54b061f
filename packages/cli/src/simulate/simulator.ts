import { type GpuProfile, renderSeconds, type RenderShape, stageSeconds, stageSteps } from "@kiln/gpu-worker";

import { EventHeap } from "./heap.js";
import type { ScalingPolicy } from "./policies.js";
import { exponential, seededRandom } from "./random.js";
import type { Arrival, Trace } from "./traces.js";

/**
 * Kiln's capacity simulator: a discrete-event model of the fleet — renders arriving into two lanes
 * (interactive first, batch when no interactive work waits), GPU instances that boot, load models,
 * take compatible renders in one UNet batch, drain on a spot notice and stop when the policy says so.
 * It is a model: its validation against the real runtime is in docs/scaling.md.
 */
export interface SimulationOptions {
  profile: GpuProfile;
  policy: ScalingPolicy;
  /** Compatible renders in one UNet batch (1 = no batching). */
  maxBatch: number;
  /** Share of instances that are spot (0–1); the rest are on-demand. */
  spotShare: number;
  seed: number;
  /** Points in the time-series plot. */
  samples?: number;
  /** Simulated duration; arrivals after it are ignored, work in flight is finished. */
  hours: number;
  /** Scale in only after the policy has wanted fewer instances this long (AWS target tracking: ~5 min). */
  scaleInAfterSeconds?: number;
  /**
   * The worker's model. Unpipelined (`KILN_WORKER_PIPELINE=false`): a render holds its instance from claim to
   * image, its CPU work (`stageOverheadSeconds` per stage) between GPU calls. Pipelined (the worker's default),
   * stage by stage as the runtime does it: the GPU runs one stage at a time; an instance with a stage on the
   * GPU claims one more (its prefetch slot) — its own hand-over's refine stage, else the head of the queue —
   * at each change of its pipeline and every `busyPollSeconds`; a stage's CPU work follows its GPU work off
   * the GPU (hand-over, or image encoding and records), so it delays the render, not the GPU. A refine stage
   * handed over while another render's first stage waits in the prefetch slot runs after that stage.
   */
  pipelined?: boolean;
  /** Pipelined: a busy worker's poll of its queues between pipeline changes (the runtime's BUSY_POLL_MS). */
  busyPollSeconds?: number;
  /**
   * How an idle worker notices batch work: 0 = at once; W > 0 = Kiln's worker loop, which long-polls the
   * interactive base queue for W seconds and checks the other queues between polls, so an idle worker
   * sees a batch render at the next multiple of W after it went idle (an interactive render wakes its
   * long poll at once; a worker that just finished a stage checks every queue at once).
   */
  idlePollSeconds?: number;
  /** Called as each render completes (the validation compares per-job times with the real stack's). */
  onDone?: (arrival: Arrival, doneAt: number) => void;
}

export interface Sample {
  t: number;
  queued: number;
  instances: number;
  p95: number;
}

export interface SimulationResult {
  jobs: number;
  images: number;
  p50_s: number;
  p95_s: number;
  p99_s: number;
  max_s: number;
  gpu_hours: number;
  busy_gpu_hours: number;
  cost_usd: number;
  cost_per_1000_images: number;
  scale_events: number;
  spot_interruptions: number;
  max_instances: number;
  samples: Sample[];
}

interface Job {
  arrival: number;
  source: Arrival;
  shape: RenderShape;
  batch: boolean;
  /** Pipelined model: the stage this job is at (0 = the first). */
  stage: number;
}

interface Instance {
  id: number;
  launchedAt: number;
  readyAt: number;
  spot: boolean;
  busy: boolean;
  /** When it last went idle with nothing to take: its idle polls fall at multiples of the poll time after. */
  idleSince: number;
  /** A poll event pending for it (see idlePollSeconds). */
  pollAt?: number;
  /** No new work: terminating (scale-in) or on a spot notice. */
  draining: boolean;
  terminatedAt?: number;
  /** Pipelined model: stages claimed and waiting for the GPU (the prefetch slot). */
  waiting?: Job[];
  /** Pipelined model: claimed stage groups not yet ended (waiting, on the GPU, handing over or finishing). */
  inFlight: number;
  /** Pipelined model: when its pipeline last changed; a busy worker polls at multiples of busyPollSeconds after. */
  changedAt: number;
}

type Event =
  | { t: number; kind: "arrival"; arrival: Arrival }
  | { t: number; kind: "ready"; instance: Instance }
  | { t: number; kind: "done"; instance: Instance; jobs: Job[] }
  | { t: number; kind: "evaluate" }
  | { t: number; kind: "poll"; instance: Instance }
  | { t: number; kind: "interrupt"; instance: Instance }
  | { t: number; kind: "reclaim"; instance: Instance }
  | { t: number; kind: "stage-end"; instance: Instance; jobs: Job[] }
  | { t: number; kind: "stage-after"; instance: Instance; jobs: Job[] };

/** A FIFO of jobs with O(1) shift, for queues that grow to millions. */
class Lane {
  private items: Job[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(job: Job): void {
    this.items.push(job);
  }
  unshift(job: Job): void {
    if (this.head > 0) this.items[--this.head] = job;
    else this.items.unshift(job);
  }
  peek(): Job | undefined {
    return this.items[this.head];
  }
  shift(): Job | undefined {
    const job = this.items[this.head];
    if (job === undefined) return undefined;
    this.head++;
    if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return job;
  }
}

const compatible = (a: RenderShape, b: RenderShape) =>
  a.width === b.width && a.height === b.height && a.steps === b.steps && a.mode === b.mode && a.n === b.n;

export function simulate(trace: Trace, o: SimulationOptions): SimulationResult {
  const random = seededRandom(o.seed ^ 0x5eed);
  const end = o.hours * 3600;
  const events = new EventHeap<Event>();
  const interactive = new Lane();
  const batchLane = new Lane();
  const instances = new Set<Instance>();
  let nextId = 0;
  let inService = 0;
  let lastWorkAt = 0;
  let scaleEvents = 0;
  let interruptions = 0;
  let maxInstances = 0;
  let instanceSeconds = 0;
  let busySeconds = 0;
  let images = 0;
  let spotSeconds = 0;
  let latencies = new Float64Array(1 << 16);
  let done = 0;

  const bucketSeconds = Math.max(60, end / (o.samples ?? 400));
  const samples: Sample[] = [];
  let bucketLatencies: number[] = [];
  let bucketQueued = 0;
  let bucketInstances = 0;
  let bucketStart = 0;

  const arrivals = trace[Symbol.iterator]();
  const scheduleNextArrival = () => {
    const next = arrivals.next();
    if (!next.done && next.value.t < end) events.push({ t: next.value.t, kind: "arrival", arrival: next.value });
  };
  scheduleNextArrival();
  events.push({ t: 0, kind: "evaluate" });

  const live = () => [...instances].filter((i) => !i.draining);
  const retire = (inst: Instance, t: number) => {
    inst.terminatedAt = t;
    instances.delete(inst);
    const seconds = t - inst.launchedAt;
    instanceSeconds += seconds;
    if (inst.spot) spotSeconds += seconds;
  };

  const takeWork = (only?: Lane): Job[] => {
    const lane = only ?? (interactive.length > 0 ? interactive : batchLane);
    const first = lane.shift();
    if (!first) return [];
    const jobs = [first];
    while (jobs.length < o.maxBatch && lane.peek() && compatible(lane.peek()!.shape, first.shape))
      jobs.push(lane.shift()!);
    return jobs;
  };

  const pollSeconds = o.idlePollSeconds ?? 0;
  const free = (inst: Instance, t: number) => !inst.busy && !inst.draining && inst.readyAt <= t;
  /** One instance checks the queues now; with nothing to take it goes (or stays) idle. */
  const serve = (inst: Instance, t: number, only?: Lane): boolean => {
    const jobs = takeWork(only);
    if (jobs.length === 0) return false;
    inst.busy = true;
    inst.pollAt = undefined;
    inService += jobs.length;
    const gpu = renderSeconds(o.profile, jobs[0]!.shape, jobs.length, false);
    const cpu = o.profile.stageOverheadSeconds * stageSteps(jobs[0]!.shape).length;
    busySeconds += gpu;
    events.push({ t: t + gpu + cpu, kind: "done", instance: inst, jobs });
    return true;
  };
  /** A render arrived: which idle instance notices it, and when (see idlePollSeconds). */
  const notice = (t: number, job: Job) => {
    if (pollSeconds === 0) return dispatch(t);
    let first: Instance | undefined;
    let firstAt = Infinity;
    for (const inst of instances) {
      if (!free(inst, t)) continue;
      // An interactive render wakes an idle worker's long poll at once, and that worker takes it.
      if (!job.batch) {
        serve(inst, t);
        return;
      }
      if (inst.pollAt !== undefined) continue;
      const at = inst.idleSince + Math.ceil((t - inst.idleSince) / pollSeconds) * pollSeconds;
      if (at < firstAt) [first, firstAt] = [inst, at];
    }
    // One poll per arrival, by the idle instance that polls soonest; others keep their phase.
    if (first) {
      first.pollAt = firstAt;
      events.push({ t: firstAt, kind: "poll", instance: first });
    }
  };
  const dispatch = (t: number) => {
    for (const inst of instances) {
      if (!free(inst, t)) continue;
      if (!serve(inst, t)) return;
    }
  };
  /** An instance became free (ready, or done): it checks every queue at once, else goes idle. */
  const freed = (inst: Instance, t: number) => {
    if (pollSeconds === 0) return dispatch(t);
    if (!serve(inst, t)) inst.idleSince = t;
  };
  // The pipelined worker, stage by stage (see SimulationOptions.pipelined).
  const refineInteractive = new Lane();
  const refineBatch = new Lane();
  const busyPoll = o.busyPollSeconds ?? 0.25;
  /** The worker's claim order: refine before first stages, interactive before batch. */
  const claimOrder = [refineInteractive, interactive, refineBatch, batchLane];
  const stageKey = (j: Job) =>
    `${j.shape.width}x${j.shape.height}|${j.shape.steps}|${j.shape.mode}|${j.shape.highNoiseFrac}|${j.shape.strength}|${j.stage}`;
  /** GPU seconds of stages claimed together: compatible ones share a UNet batch, the others run after it. */
  const groupSeconds = (jobs: Job[]) => {
    const groups = new Map<string, { job: Job; images: number }>();
    for (const j of jobs) {
      const g = groups.get(stageKey(j));
      if (g) g.images += j.shape.n;
      else groups.set(stageKey(j), { job: j, images: j.shape.n });
    }
    let seconds = 0;
    for (const g of groups.values())
      seconds += stageSeconds(o.profile, { ...g.job.shape, n: 1 }, g.job.stage, g.images);
    return seconds;
  };
  const startStages = (inst: Instance, jobs: Job[], t: number) => {
    inst.busy = true;
    const gpu = groupSeconds(jobs);
    busySeconds += gpu;
    events.push({ t: t + gpu, kind: "stage-end", instance: inst, jobs });
  };
  /** One poll of the queues: up to `maxBatch` stages of the first queue holding any, onto the GPU or into the prefetch slot. */
  const claimStages = (inst: Instance, t: number): boolean => {
    if (inst.draining || inst.readyAt > t || inst.waiting) return false;
    const lane = claimOrder.find((l) => l.length > 0);
    if (!lane) return false;
    const jobs: Job[] = [];
    while (jobs.length < o.maxBatch && lane.length > 0) jobs.push(lane.shift()!);
    for (const j of jobs) if (j.stage === 0) inService++;
    inst.inFlight++;
    inst.pollAt = undefined;
    if (inst.busy) inst.waiting = jobs;
    else startStages(inst, jobs, t);
    return true;
  };
  /** Its pipeline changed: the worker polls at once, claiming while it has room. */
  const pipelineChanged = (inst: Instance, t: number) => {
    inst.changedAt = t;
    if (!instances.has(inst)) return;
    while (claimStages(inst, t));
    if (inst.inFlight === 0) inst.idleSince = t;
  };
  /** Stages are queued: the worker that polls first claims them (idle: its long poll or next cycle; busy: next poll). */
  const offerStages = (t: number) => {
    for (;;) {
      const lane = claimOrder.find((l) => l.length > 0);
      if (!lane) return;
      const head = lane.peek()!;
      let first: Instance | undefined;
      let firstAt = Infinity;
      for (const inst of instances) {
        if (inst.draining || inst.readyAt > t || inst.waiting) continue;
        let at: number;
        if (inst.inFlight === 0) {
          // An idle worker's long poll on the interactive first-stage queue returns at once; other queues wait a cycle.
          const wakes = pollSeconds === 0 || (!head.batch && head.stage === 0);
          at = wakes ? t : inst.idleSince + Math.ceil((t - inst.idleSince) / pollSeconds) * pollSeconds;
        } else {
          at = busyPoll === 0 ? t : inst.changedAt + Math.ceil((t - inst.changedAt) / busyPoll) * busyPoll;
        }
        if (at < firstAt) [first, firstAt] = [inst, at];
      }
      if (!first) return;
      if (firstAt > t) {
        if (first.pollAt === undefined || first.pollAt > firstAt) {
          first.pollAt = firstAt;
          events.push({ t: firstAt, kind: "poll", instance: first });
        }
        return;
      }
      if (!claimStages(first, t)) return;
      while (claimStages(first, t));
    }
  };
  /** A draining worker releases the stages waiting in its prefetch slot to the queues' heads. */
  const releaseWaiting = (inst: Instance) => {
    if (!inst.waiting) return;
    for (const j of [...inst.waiting].reverse()) {
      if (j.stage === 0) inService--;
      (j.stage === 0 ? (j.batch ? batchLane : interactive) : j.batch ? refineBatch : refineInteractive).unshift(j);
    }
    inst.waiting = undefined;
    inst.inFlight--;
  };

  const launch = (t: number) => {
    const spot = random() < o.spotShare;
    const inst: Instance = {
      id: nextId++,
      launchedAt: t,
      readyAt: t + o.profile.bootSeconds + o.profile.modelLoadSeconds,
      spot,
      busy: false,
      idleSince: t + o.profile.bootSeconds + o.profile.modelLoadSeconds,
      draining: false,
      inFlight: 0,
      changedAt: t + o.profile.bootSeconds + o.profile.modelLoadSeconds,
    };
    instances.add(inst);
    events.push({ t: inst.readyAt, kind: "ready", instance: inst });
    if (spot && o.profile.spotInterruptionsPerHour > 0) {
      events.push({
        t: t + exponential(random, o.profile.spotInterruptionsPerHour / 3600),
        kind: "interrupt",
        instance: inst,
      });
    }
  };

  const flushBuckets = (t: number) => {
    while (t >= bucketStart + bucketSeconds) {
      bucketLatencies.sort((a, b) => a - b);
      samples.push({
        t: bucketStart,
        queued: bucketQueued,
        instances: bucketInstances,
        p95: bucketLatencies.length ? bucketLatencies[Math.floor(bucketLatencies.length * 0.95)]! : 0,
      });
      bucketLatencies = [];
      bucketQueued = interactive.length + batchLane.length;
      bucketInstances = instances.size;
      bucketStart += bucketSeconds;
    }
  };

  const complete = (job: Job, t: number) => {
    const latency = t - job.arrival;
    if (done === latencies.length) {
      const grown = new Float64Array(latencies.length * 2);
      grown.set(latencies);
      latencies = grown;
    }
    latencies[done++] = latency;
    images += job.shape.n;
    bucketLatencies.push(latency);
    o.onDone?.(job.source, t);
  };

  let lastT = 0;
  let wantsFewerSince: number | undefined;
  const scaleInAfter = o.scaleInAfterSeconds ?? 300;
  for (let ev = events.pop(); ev; ev = events.pop()) {
    const t = ev.t;
    lastT = t;
    flushBuckets(t);
    switch (ev.kind) {
      case "arrival": {
        const job = {
          arrival: t,
          source: ev.arrival,
          shape: ev.arrival.shape,
          batch: ev.arrival.batch === true,
          stage: 0,
        };
        (job.batch ? batchLane : interactive).push(job);
        lastWorkAt = t;
        scheduleNextArrival();
        if (o.pipelined) offerStages(t);
        else notice(t, job);
        break;
      }
      case "ready":
        if (!instances.has(ev.instance)) break;
        if (o.pipelined) {
          pipelineChanged(ev.instance, t);
          offerStages(t);
        } else freed(ev.instance, t);
        break;
      case "poll": {
        const inst = ev.instance;
        if (inst.pollAt !== t) break;
        inst.pollAt = undefined;
        if (o.pipelined) {
          if (instances.has(inst)) while (claimStages(inst, t));
          offerStages(t);
        } else if (instances.has(inst) && free(inst, t)) serve(inst, t);
        break;
      }
      case "stage-end": {
        // The stages' GPU work is done: their CPU work follows off the GPU, and the stage waiting takes the GPU.
        const inst = ev.instance;
        inst.busy = false;
        events.push({ t: t + o.profile.stageOverheadSeconds, kind: "stage-after", instance: inst, jobs: ev.jobs });
        if (inst.waiting) {
          const next = inst.waiting;
          inst.waiting = undefined;
          startStages(inst, next, t);
        }
        if (inst.draining) {
          if (!inst.busy && inst.terminatedAt === undefined) retire(inst, t);
        } else pipelineChanged(inst, t);
        offerStages(t);
        break;
      }
      case "stage-after": {
        // Handed over (the next stage is queued) or finished (images stored, recorded, acknowledged).
        const inst = ev.instance;
        inst.inFlight--;
        lastWorkAt = t;
        for (const job of ev.jobs) {
          if (job.stage + 1 < stageSteps(job.shape).length) {
            job.stage++;
            (job.batch ? refineBatch : refineInteractive).push(job);
          } else {
            inService--;
            complete(job, t);
          }
        }
        if (!inst.draining) pipelineChanged(inst, t);
        offerStages(t);
        break;
      }
      case "done": {
        const inst = ev.instance;
        inst.busy = false;
        inService -= ev.jobs.length;
        lastWorkAt = t;
        for (const job of ev.jobs) complete(job, t);
        if (inst.draining) {
          if (inst.terminatedAt === undefined) retire(inst, t);
        } else freed(inst, t);
        break;
      }
      case "interrupt": {
        const inst = ev.instance;
        if (!instances.has(inst) || inst.draining) break;
        // The two-minute notice: the worker drains (SIGTERM), finishes its render, takes no more.
        interruptions++;
        inst.draining = true;
        releaseWaiting(inst);
        events.push({ t: t + 120, kind: "reclaim", instance: inst });
        if (!inst.busy) retire(inst, t);
        break;
      }
      case "reclaim":
        if (instances.has(ev.instance)) retire(ev.instance, t);
        break;
      case "evaluate": {
        const queued = interactive.length + batchLane.length;
        const working = queued + inService > 0;
        if (t >= end && !working) {
          // The trace is over and every render is done: the fleet stops here.
          for (const inst of [...instances]) retire(inst, t);
          break;
        }
        const current = live();
        const desired = o.policy.desired({
          now: t,
          queued,
          inService,
          instances: current.length,
          idleFor: working ? 0 : t - lastWorkAt,
        });
        if (desired > current.length) {
          scaleEvents++;
          for (let i = current.length; i < desired; i++) launch(t);
          wantsFewerSince = undefined;
        } else if (desired >= current.length) {
          wantsFewerSince = undefined;
        } else if (wantsFewerSince === undefined || t - wantsFewerSince < scaleInAfter) {
          wantsFewerSince ??= t;
        } else {
          wantsFewerSince = undefined;
          // Scale in idle instances first; busy ones finish their render, then stop.
          const victims = current.sort((a, b) => Number(a.busy) - Number(b.busy)).slice(0, current.length - desired);
          scaleEvents++;
          for (const inst of victims) {
            inst.draining = true;
            releaseWaiting(inst);
            if (!inst.busy) retire(inst, t);
          }
        }
        maxInstances = Math.max(maxInstances, instances.size);
        bucketInstances = Math.max(bucketInstances, instances.size);
        bucketQueued = Math.max(bucketQueued, queued);
        events.push({ t: t + o.policy.evalSeconds, kind: "evaluate" });
        break;
      }
    }
  }
  flushBuckets(lastT + bucketSeconds);

  const sorted = latencies.subarray(0, done).sort();
  const pct = (p: number) => (done ? sorted[Math.min(done - 1, Math.floor(done * p))]! : 0);
  const onDemandSeconds = instanceSeconds - spotSeconds;
  const cost = (onDemandSeconds * o.profile.pricePerHour + spotSeconds * o.profile.spotPricePerHour) / 3600;
  return {
    jobs: done,
    images,
    p50_s: round(pct(0.5)),
    p95_s: round(pct(0.95)),
    p99_s: round(pct(0.99)),
    max_s: round(done ? sorted[done - 1]! : 0),
    gpu_hours: round(instanceSeconds / 3600),
    busy_gpu_hours: round(busySeconds / 3600),
    cost_usd: round(cost),
    cost_per_1000_images: round(images ? (cost / images) * 1000 : 0),
    scale_events: scaleEvents,
    spot_interruptions: interruptions,
    max_instances: maxInstances,
    samples,
  };
}

const round = (x: number) => Math.round(x * 1000) / 1000;
