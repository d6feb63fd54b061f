import type { JobRecord } from "@kiln/shared";
import type { Context } from "hono";

import { type ApiDeps, type ApiEnv, type ApiTiming, DEFAULT_TIMING } from "./deps.js";
import { fail } from "./http/problem.js";
import { estimateEta, StageTimingBook } from "./renders/eta.js";
import { expireIfOverdue, type JobMoveOptions } from "./renders/render-service.js";
import { type JobInsight, type JobView, jobView } from "./renders/render-view.js";
import { waitingReason, waitingStage } from "./renders/waiting-reason.js";

/**
 * What the routes share within one app: the deps, the timing knobs with their defaults, and the
 * book of recent stage timings the ETA comes from (per process: a Lambda instance starts empty).
 */
export class ApiRuntime {
  readonly timing: ApiTiming;
  readonly book = new StageTimingBook();
  /** Owners whose recent renders were read to seed the book, with when (at most once a minute each). */
  private readonly seeded = new Map<string, number>();

  constructor(readonly deps: ApiDeps) {
    this.timing = { ...DEFAULT_TIMING, ...deps.timing };
  }

  now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  moveOptions(): JobMoveOptions {
    return { now: this.now(), events: this.deps.events, log: this.deps.log };
  }

  /** Links point at KILN_PUBLIC_URL, or at the origin the request came to when none is configured. */
  base(c: Context): string {
    return (this.deps.publicUrl || new URL(c.req.url).origin).replace(/\/+$/, "");
  }

  /** The caller's job, with an overdue deadline applied; a 404 problem for a missing job or another key's. */
  async ownJob(c: Context<ApiEnv>, id: string): Promise<JobRecord> {
    const job = await this.deps.ports.jobs.get(id);
    // Another key's job is indistinguishable from a missing one.
    if (!job || job.ownerKeyId !== c.get("key").id) fail(404, "not_found", `No render ${id} for this API key.`);
    return this.settle(job);
  }

  /** Applies the API-side deadline check and feeds finished jobs to the ETA book. */
  async settle(job: JobRecord): Promise<JobRecord> {
    const settled = await expireIfOverdue(this.deps.ports, job, this.moveOptions());
    this.book.observe(settled);
    return settled;
  }

  view(c: Context, job: JobRecord, insight?: JobInsight): Promise<JobView> {
    return jobView(
      job,
      { blobs: this.deps.ports.blobs, base: this.base(c), urlSeconds: this.deps.downloadUrlSeconds },
      insight,
    );
  }

  /** Queue position, waiting reason and ETA: a few reads, so only for views of one job. */
  async insight(job: JobRecord): Promise<JobInsight> {
    const waiting = waitingStage(job);
    if (!waiting && job.status !== "running") return {};
    const now = this.now();
    await this.seedBook(job);
    const queuePosition = job.status === "queued" ? await this.deps.ports.jobs.countQueuedBefore(job) : undefined;
    let live: number | undefined;
    let reason: JobInsight["waitingReason"];
    if (waiting) {
      const found = await waitingReason(this.deps.ports.workers, waiting.kind, queuePosition ?? 0, now.getTime());
      reason = found.reason;
      live = found.liveWorkers;
    }
    const eta = estimateEta(this.book, { job, now, queuePosition, workersForFirstStage: live }) ?? null;
    return { queuePosition, waitingReason: reason, eta };
  }

  /** With nothing in the book for a stage this job needs, read the owner's recent finished renders once. */
  private async seedBook(job: JobRecord): Promise<void> {
    if (job.plan.stages.every((s) => this.book.sampleCount(s.kind) > 0)) return;
    const last = this.seeded.get(job.ownerKeyId);
    const nowMs = this.now().getTime();
    if (last !== undefined && nowMs - last < 60_000) return;
    this.seeded.set(job.ownerKeyId, nowMs);
    if (this.seeded.size > 1000) this.seeded.delete(this.seeded.keys().next().value!);
    const page = await this.deps.ports.jobs.listByOwner(job.ownerKeyId, { limit: 20, status: "succeeded" });
    for (const done of page.jobs) this.book.observe(done);
  }
}
