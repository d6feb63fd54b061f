import type { JobRecord, RenderPlan, StageKind, StagePlan } from "@kiln/shared";

/**
 * Work a stage does, in "step-megapixel-images": denoising steps × output megapixels × images.
 * Stage step counts are approximated from the plan (diffusers' exact split depends on the
 * scheduler's timesteps; this is within a step of it), which is plenty for an estimate.
 */
export function stageWork(plan: RenderPlan, stage: StagePlan): number {
  let steps = plan.steps;
  if (stage.denoisingEnd !== undefined) steps = Math.max(1, Math.round(plan.steps * stage.denoisingEnd));
  else if (stage.denoisingStart !== undefined)
    steps = Math.max(1, plan.steps - Math.round(plan.steps * stage.denoisingStart));
  else if (stage.strength !== undefined) steps = Math.max(1, Math.floor(plan.steps * stage.strength));
  const scale = stage.hiresScale ?? 1;
  return steps * ((plan.width * scale * plan.height * scale) / 1e6) * plan.n;
}

const SAMPLES_PER_KIND = 50;

/**
 * Seconds per unit of stage work, from stages the API has seen finish (in this process). The
 * estimate is the median of recent samples: honest about being a rough guide, robust to one
 * slow cold start. With no samples for a stage kind there is no estimate.
 */
export class StageTimingBook {
  private readonly samples: Record<StageKind, number[]> = { base: [], refine: [] };
  private readonly seen = new Set<string>();

  /** Records the stage timings of a succeeded job, once per job. */
  observe(job: JobRecord): void {
    if (job.status !== "succeeded" || this.seen.has(job.id)) return;
    this.seen.add(job.id);
    if (this.seen.size > 4 * SAMPLES_PER_KIND) this.seen.delete(this.seen.values().next().value!);
    for (const timing of job.stageTimings) {
      const stage = job.plan.stages[timing.stage];
      if (!stage || timing.seconds === undefined || !(timing.seconds > 0)) continue;
      const list = this.samples[stage.kind];
      list.push(timing.seconds / stageWork(job.plan, stage));
      if (list.length > SAMPLES_PER_KIND) list.shift();
    }
  }

  sampleCount(kind: StageKind): number {
    return this.samples[kind].length;
  }

  /** Estimated seconds for a stage of this plan, or undefined without samples for its kind. */
  stageSeconds(plan: RenderPlan, stage: StagePlan): number | undefined {
    const list = this.samples[stage.kind];
    if (list.length === 0) return undefined;
    const sorted = [...list].sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
    return median * stageWork(plan, stage);
  }
}

export interface EtaInput {
  job: JobRecord;
  now: Date;
  /** Jobs ahead in the queue (queued jobs only). */
  queuePosition?: number;
  /** Workers polling for the job's first stage, if known; the queue ahead is shared among them. */
  workersForFirstStage?: number;
}

/**
 * Seconds until the job finishes: the jobs ahead (assumed to be like this one, shared among the
 * live workers), then each remaining stage. A running stage with progress extrapolates its own
 * pace; other stages use the book. Undefined when some needed stage has no estimate.
 */
export function estimateEta(
  book: StageTimingBook,
  input: EtaInput,
): { seconds: number; at: string; basis: string } | undefined {
  const { job, now } = input;
  const stages = job.plan.stages;
  let seconds = 0;
  const basis: string[] = [];
  let from = 0;
  if (job.status === "running") {
    const current = job.progress?.stage ?? 0;
    const timing = job.stageTimings.find((t) => t.stage === current);
    from = current + 1;
    // A finished stage whose successor has not started is a hand-over: only later stages remain.
    if (!timing?.finishedAt) {
      const p = job.progress;
      const elapsed = timing ? Math.max(0, (now.getTime() - Date.parse(timing.startedAt)) / 1000) : 0;
      if (p && p.step > 0 && p.steps > 0) {
        seconds += (elapsed / p.step) * (p.steps - p.step);
        basis.push(`the running stage's own pace (${p.step}/${p.steps} steps)`);
      } else {
        const whole = book.stageSeconds(job.plan, stages[current]!);
        if (whole === undefined) return undefined;
        seconds += Math.max(0, whole - elapsed);
      }
    }
  } else if (job.status !== "queued") {
    return undefined;
  }
  for (let i = from; i < stages.length; i++) {
    const s = book.stageSeconds(job.plan, stages[i]!);
    if (s === undefined) return undefined;
    seconds += s;
  }
  if (job.status === "queued" && input.queuePosition) {
    const own = book.stageSeconds(job.plan, stages[0]!)!;
    const workers = Math.max(1, input.workersForFirstStage ?? 1);
    seconds += (input.queuePosition * own) / workers;
    basis.push(`${input.queuePosition} job(s) ahead assumed like this one, shared by ${workers} worker(s)`);
  }
  const kinds = [...new Set(stages.slice(from).map((s) => s.kind))];
  if (kinds.length)
    basis.push(`median pace of ${kinds.map((k) => `${book.sampleCount(k)} recent ${k} stage(s)`).join(" and ")}`);
  seconds = Math.round(seconds * 10) / 10;
  return { seconds, at: new Date(now.getTime() + seconds * 1000).toISOString(), basis: basis.join("; ") };
}
