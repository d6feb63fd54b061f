import {
  isTerminal,
  type JobRecord,
  KilnError,
  outputSize,
  type Ports,
  randomId,
  type RenderLimits,
  sha256Hex,
} from "@kiln/shared";

import { LimitExceededError } from "../quotas/limit-exceeded.js";
import type { StageTimingBook } from "../renders/eta.js";
import type { RenderAdmission } from "../renders/render-admission.js";
import { cancelRender, submitRender } from "../renders/render-service.js";
import { type BatchEstimate, estimateBatch } from "./estimate.js";
import { type BatchItem, expandManifest, expansionCount } from "./expand.js";
import type { Manifest } from "./manifest.js";
import type { ManifestSchedules } from "./manifest-schedules.js";
import { type BatchChatNotifier, type ChatPlatform, notifyRunEnded } from "./notify.js";
import { type ContactSheetMaker, writeRunOutputs } from "./outputs.js";
import { indexRun, listRunsPage } from "./pages.js";
import {
  batchKeys,
  type BatchRun,
  countRenders,
  readJson,
  type RunRender,
  type RunStatus,
  writeJson,
} from "./run-record.js";

/** What batch runs need from their host. Web-standard; sharp and chat clients come in through interfaces. */
export interface BatchDeps {
  ports: Ports;
  limits: RenderLimits;
  retentionHours: number;
  downloadUrlSeconds: number;
  /** Seconds per denoising step per megapixel when no stage timings have been measured. */
  stepSeconds: number;
  /** Renders of one key that may be in the batch lane (queued or running) at once, over all its runs. */
  window: number;
  book?: StageTimingBook;
  /** The key's quotas for the renders a run submits; absent: none. */
  admission?: (keyId: string) => Promise<RenderAdmission | undefined>;
  contactSheet?: ContactSheetMaker;
  chat?: BatchChatNotifier;
  /**
   * Chat platforms a manifest's `notify` may name (from the bots' configuration); absent: those of
   * `chat`. A host that only accepts manifests (the Lambda API) knows them without a notifier.
   */
  notifyPlatforms?: readonly ChatPlatform[];
  /** Per-manifest schedules outside the process (EventBridge Scheduler on AWS); absent: the in-process tick fires them. */
  schedules?: ManifestSchedules;
  now?: () => Date;
  log?: (level: "info" | "warn" | "error", obj: Record<string, unknown>, msg: string) => void;
}

export interface PlannedRun {
  items: BatchItem[];
  estimate: BatchEstimate;
}

/** At most this many attempts per render across reruns before a run stops creating new ones. */
const MAX_ATTEMPTS = 20;
/** Records that make a scheduled run id (or a notification) happen once live this long. */
const CLAIM_SECONDS = 90 * 86_400;

const now = (deps: BatchDeps) => deps.now?.() ?? new Date();

/** Expands and estimates a manifest, refusing it over its caps, with nothing stored or enqueued. */
export async function planBatch(
  deps: BatchDeps,
  ownerKeyId: string,
  manifest: Manifest,
  locate?: Parameters<typeof expandManifest>[1]["locate"],
): Promise<PlannedRun> {
  const maxImages = manifest.caps?.max_images;
  // A cap refuses a huge cartesian product before it is built.
  const count = expansionCount(manifest);
  if (maxImages !== undefined && count > maxImages * 4) {
    throw capError(`the manifest expands to ${count} renders`, { renders: count }, `caps.max_images is ${maxImages}`);
  }
  const items = await expandManifest(manifest, { ownerKeyId, limits: deps.limits, locate });
  return { items, estimate: estimateBatch(items, { book: deps.book, stepSeconds: deps.stepSeconds }) };
}

function capError(what: string, estimate: Record<string, unknown>, cap: string): KilnError {
  return new KilnError(
    "batch_cap_exceeded",
    `This run would exceed its cap: ${what}, and ${cap}. Raise the cap in the manifest, or render fewer prompts, seeds or sizes.`,
    { status: 422, details: { estimate } },
  );
}

/** Caps apply to what this run would render (renders an earlier run made are skipped, so they cost nothing). */
function checkCaps(manifest: Manifest, estimate: BatchEstimate): void {
  const caps = manifest.caps;
  if (caps?.max_images !== undefined && estimate.images > caps.max_images) {
    throw capError(
      `it would render ${estimate.images} images`,
      { ...estimate },
      `caps.max_images is ${caps.max_images}`,
    );
  }
  if (caps?.max_gpu_seconds !== undefined && estimate.gpu_seconds > caps.max_gpu_seconds) {
    throw capError(
      `its estimate is ${estimate.gpu_seconds} GPU seconds (${estimate.source === "measured" ? "from measured stage timings" : "from KILN_BATCH_STEP_SECONDS"})`,
      { ...estimate },
      `caps.max_gpu_seconds is ${caps.max_gpu_seconds}`,
    );
  }
}

/** `run_s<hex>`: one id per owner, manifest and scheduled time, so a double fire makes one run. */
export async function scheduledRunId(ownerKeyId: string, manifestId: string, scheduledFor: Date): Promise<string> {
  return `run_s${(await sha256Hex(`${ownerKeyId}\n${manifestId}\n${scheduledFor.toISOString()}`)).slice(0, 24)}`;
}

/**
 * Where each render stands before this run: made already (skipped), in flight in another run
 * (followed, not duplicated), or missing/failed (this run makes it, as the next attempt's job id).
 */
async function resolveRender(ports: Ports, item: BatchItem): Promise<RunRender> {
  const base = {
    key: item.key,
    prompt: item.prompt,
    seed: item.seed,
    width: item.width,
    height: item.height,
    mode: item.mode,
  };
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const jobId = attempt === 1 ? item.key : `${item.key}_r${attempt}`;
    const job = await ports.jobs.get(jobId);
    if (!job) return { ...base, jobId, state: "pending" };
    if (job.status === "succeeded") return { ...base, jobId, state: "skipped", status: job.status };
    if (!isTerminal(job.status)) return { ...base, jobId, state: "submitted", status: job.status };
  }
  return {
    ...base,
    jobId: `${item.key}_r${MAX_ATTEMPTS}`,
    state: "submitted",
    status: "failed",
    error: `failed ${MAX_ATTEMPTS} times; change its parameters to try again`,
  };
}

export interface StartRunInput {
  ownerKeyId: string;
  manifest: Manifest;
  trigger: "manual" | "schedule";
  scheduledFor?: Date;
  locate?: Parameters<typeof expandManifest>[1]["locate"];
}

/**
 * Starts a run: expands the manifest, sees which renders exist, checks caps on what is left, stores
 * the run and feeds its first renders to the batch lane. A scheduled fire's run id derives from
 * the manifest and the fire time and is claimed conditionally: a second fire returns the first run.
 */
export async function startRun(deps: BatchDeps, input: StartRunInput): Promise<{ run: BatchRun; created: boolean }> {
  const { ports } = deps;
  const at = now(deps);
  const runId =
    input.trigger === "schedule" && input.scheduledFor
      ? await scheduledRunId(input.ownerKeyId, input.manifest.id, input.scheduledFor)
      : `run_${randomId(16)}`;
  if (input.trigger === "schedule") {
    const existing = await readJson<BatchRun>(ports.blobs, batchKeys.run(input.ownerKeyId, runId));
    if (existing) return { run: existing, created: false };
  }
  const planned = await planBatch(deps, input.ownerKeyId, input.manifest, input.locate);
  const renders: RunRender[] = [];
  for (const item of planned.items) renders.push(await resolveRender(ports, item));
  const toMake = planned.items.filter((_, i) => renders[i]!.state === "pending");
  const estimate = estimateBatch(toMake, { book: deps.book, stepSeconds: deps.stepSeconds });
  checkCaps(input.manifest, estimate);

  if (input.trigger === "schedule") {
    // The claim is a conditional create on both families (SQLite insert, DynamoDB condition).
    const claim = await ports.keys.putIdempotency(
      {
        id: `batch-run:${input.ownerKeyId}:${runId}`,
        fingerprint: runId,
        state: "completed",
        token: randomId(8),
        lockedUntil: 0,
        expiresAt: Math.floor(at.getTime() / 1000) + CLAIM_SECONDS,
        createdAt: at.toISOString(),
      },
      at.getTime(),
    );
    if (claim) {
      // Another process claimed this fire a moment ago and is writing the run: wait for it briefly.
      for (let i = 0; i < 30; i++) {
        const existing = await readJson<BatchRun>(ports.blobs, batchKeys.run(input.ownerKeyId, runId));
        if (existing) return { run: existing, created: false };
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      throw new KilnError(
        "batch_run_starting",
        `Run ${runId} is being started by another process; read it again shortly.`,
        {
          status: 409,
          retryable: true,
        },
      );
    }
  }
  const prefix = input.manifest.output?.prefix ?? input.manifest.id;
  const run: BatchRun = {
    v: 1,
    id: runId,
    ownerKeyId: input.ownerKeyId,
    manifestId: input.manifest.id,
    manifest: input.manifest,
    trigger: input.trigger,
    ...(input.scheduledFor ? { scheduledFor: input.scheduledFor.toISOString() } : {}),
    createdAt: at.toISOString(),
    updatedAt: at.toISOString(),
    status: "queued",
    renders,
    counts: countRenders(renders),
    estimate,
    outputPrefix: `outputs/${input.ownerKeyId}/${prefix.replace(/\/+$/, "")}/`,
  };
  await writeJson(ports.blobs, batchKeys.run(run.ownerKeyId, run.id), run);
  await indexRun(deps, run);
  await ports.blobs.put(batchKeys.active(run.ownerKeyId, run.id), new Uint8Array(0));
  deps.log?.("info", { runId, manifestId: run.manifestId, counts: run.counts, estimate }, "batch run started");
  await pumpKey(deps, run.ownerKeyId);
  return { run: (await getRun(deps, run.ownerKeyId, run.id)) ?? run, created: true };
}

export async function getRun(deps: BatchDeps, ownerKeyId: string, runId: string): Promise<BatchRun | null> {
  return readJson<BatchRun>(deps.ports.blobs, batchKeys.run(ownerKeyId, runId));
}

/** The newest `limit` runs of a key (the first page of `GET /v1/batches`). */
export async function listRuns(deps: BatchDeps, ownerKeyId: string, limit = 50): Promise<BatchRun[]> {
  return (await listRunsPage(deps, ownerKeyId, { limit })).items;
}

/** Cancels what has not finished: pending renders are never submitted, queued and running jobs are canceled. */
export async function cancelRun(deps: BatchDeps, ownerKeyId: string, runId: string): Promise<BatchRun | null> {
  const run = await getRun(deps, ownerKeyId, runId);
  if (!run) return null;
  if (isRunEnded(run.status)) return run;
  run.cancelRequested = true;
  await writeJson(deps.ports.blobs, batchKeys.run(ownerKeyId, runId), run);
  for (const render of run.renders) {
    if (render.state !== "submitted" || (render.status && isTerminal(render.status))) continue;
    const job = await deps.ports.jobs.get(render.jobId);
    if (job) await cancelRender(deps.ports, job, { now: now(deps), log: deps.log });
  }
  await pumpKey(deps, ownerKeyId);
  return getRun(deps, ownerKeyId, runId);
}

export const isRunEnded = (s: RunStatus): boolean => s === "succeeded" || s === "failed" || s === "canceled";

/** Every unfinished run, grouped by key: what a pump tick walks. */
export async function activeRunsByKey(deps: BatchDeps): Promise<Map<string, string[]>> {
  const byKey = new Map<string, string[]>();
  for (const key of await deps.ports.blobs.list(batchKeys.allActive())) {
    const [, keyId, runId] = key.split("/");
    if (!keyId || !runId) continue;
    byKey.set(keyId, [...(byKey.get(keyId) ?? []), runId]);
  }
  return byKey;
}

/** One pump over every key with unfinished runs (the scheduler tick and the AWS trigger call this). */
export async function pumpAll(deps: BatchDeps): Promise<void> {
  for (const keyId of (await activeRunsByKey(deps)).keys()) {
    try {
      await pumpKey(deps, keyId);
    } catch (e) {
      deps.log?.("error", { err: String(e), keyId }, "batch pump failed for a key; the next tick tries again");
    }
  }
}

/**
 * Advances one key's unfinished runs: reads the jobs they follow, copies finished images under the
 * output prefix, feeds pending renders into the batch lane up to the key's window (higher priority
 * first, round-robin among runs of equal priority — the per-key fair share), and finishes runs whose
 * renders have all ended (outputs, notification). Every step is idempotent: two pumps at once
 * submit each render once (conditional create) and write the same records.
 */
export async function pumpKey(deps: BatchDeps, keyId: string): Promise<void> {
  const { ports } = deps;
  const runIds = (await activeRunsByKey(deps)).get(keyId) ?? [];
  const runs: BatchRun[] = [];
  for (const runId of runIds) {
    const run = await getRun(deps, keyId, runId);
    if (!run || isRunEnded(run.status)) {
      await ports.blobs.delete(batchKeys.active(keyId, runId));
      continue;
    }
    await refresh(deps, run);
    runs.push(run);
  }
  let inFlight = runs.reduce(
    (n, r) => n + r.renders.filter((x) => x.state === "submitted" && x.status && !isTerminal(x.status)).length,
    0,
  );
  const feeding = runs
    .filter((r) => !r.cancelRequested)
    .sort((a, b) => b.manifest.priority - a.manifest.priority || a.createdAt.localeCompare(b.createdAt));
  const admission = deps.admission ? await deps.admission(keyId) : undefined;
  let blocked = false;
  for (const priority of [...new Set(feeding.map((r) => r.manifest.priority))]) {
    const group = feeding.filter((r) => r.manifest.priority === priority);
    const queues = group.map((r) => r.renders.filter((x) => x.state === "pending"));
    for (let turn = 0; inFlight < deps.window && !blocked && queues.some((q) => q.length > 0); turn++) {
      const i = turn % group.length;
      const render = queues[i]!.shift();
      if (!render) continue;
      const run = group[i]!;
      try {
        const item = await itemFor(deps, run, render);
        const job = await submitRender(ports, {
          ownerKeyId: keyId,
          request: item.request,
          now: now(deps),
          retentionHours: deps.retentionHours,
          admission,
          jobId: render.jobId,
          lane: "batch",
          // Resolution buckets: batch renders are mapped, never refused mid-run (a strict refusal belongs at upload).
          buckets: deps.limits.buckets && { ...deps.limits.buckets, strict: false },
        });
        render.state = "submitted";
        render.status = job.status;
        inFlight++;
      } catch (e) {
        // A quota (images per day, concurrent jobs) holds the rest back until the next tick.
        if (e instanceof LimitExceededError) blocked = true;
        else throw e;
      }
    }
  }
  for (const run of runs) await settle(deps, run);
}

/** Items are rebuilt from the stored manifest on demand: the run record stays small. */
const itemCache = new WeakMap<BatchRun, Map<string, BatchItem>>();
async function itemFor(deps: BatchDeps, run: BatchRun, render: RunRender): Promise<BatchItem> {
  let items = itemCache.get(run);
  if (!items) {
    const expanded = await expandManifest(run.manifest, { ownerKeyId: run.ownerKeyId, limits: deps.limits });
    items = new Map(expanded.map((i) => [i.key, i]));
    itemCache.set(run, items);
  }
  const item = items.get(render.key);
  if (!item)
    throw new KilnError("batch_item_missing", `Render ${render.key} is not in manifest ${run.manifestId} any more.`);
  return item;
}

/**
 * The run with its counts re-read from the jobs it has in flight (at most the key's window), so a
 * reader between two pumps sees progress. Nothing is written: the pump owns the record.
 */
export async function withLiveCounts(deps: BatchDeps, run: BatchRun): Promise<BatchRun> {
  if (isRunEnded(run.status)) return run;
  const renders = await Promise.all(
    run.renders.map(async (r) => {
      if (r.state !== "submitted" || (r.status && isTerminal(r.status))) return r;
      const job = await deps.ports.jobs.get(r.jobId);
      return job ? { ...r, status: job.status } : r;
    }),
  );
  const counts = countRenders(renders);
  return {
    ...run,
    renders,
    counts,
    status: run.status === "queued" && counts.running + counts.succeeded + counts.failed > 0 ? "running" : run.status,
  };
}

/** Reads the jobs of submitted, unfinished renders and copies newly succeeded images under the prefix. */
async function refresh(deps: BatchDeps, run: BatchRun): Promise<void> {
  const { ports } = deps;
  for (const render of run.renders) {
    if (render.state === "pending") continue;
    if (render.status && isTerminal(render.status) && (render.status !== "succeeded" || render.outputs)) continue;
    const job = await ports.jobs.get(render.jobId);
    if (!job) continue;
    render.status = job.status;
    if (job.error && job.status !== "succeeded") render.error = job.error.message;
    if (job.status === "succeeded" && !render.outputs) render.outputs = await copyImages(deps, run, render, job);
  }
}

function slug(text: string): string {
  return (
    text
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, "-")
      .replace(/^-+|-+$/g, "")
      .slice(0, 40) || "render"
  );
}

/** `<prefix><prompt-slug>-<seed>-<W>x<H>-<mode>[-i].<ext>`: readable, and the same name in every run. */
async function copyImages(deps: BatchDeps, run: BatchRun, render: RunRender, job: JobRecord): Promise<string[]> {
  const keys: string[] = [];
  const size = outputSize(job.plan);
  for (const image of job.images) {
    const ext = image.key.slice(image.key.lastIndexOf(".") + 1);
    const suffix = job.images.length > 1 ? `-${image.index}` : "";
    const key = `${run.outputPrefix}${slug(render.prompt)}-${render.seed}-${size.width}x${size.height}-${render.mode}${suffix}.${ext}`;
    const bytes = await deps.ports.blobs.get(image.key);
    if (!bytes) continue;
    await deps.ports.blobs.put(key, bytes, { contentType: `image/${ext === "jpg" ? "jpeg" : ext}` });
    keys.push(key);
  }
  return keys;
}

/** Stores the run's counts and, once every render has ended, its outputs, summary and notification. */
async function settle(deps: BatchDeps, run: BatchRun): Promise<void> {
  const { ports } = deps;
  run.counts = countRenders(run.renders);
  const at = now(deps);
  run.updatedAt = at.toISOString();
  const c = run.counts;
  const pending = run.renders.filter((r) => r.state === "pending").length;
  const inFlight = run.renders.filter((r) => r.state === "submitted" && !(r.status && isTerminal(r.status))).length;
  if (inFlight > 0 || (pending > 0 && !run.cancelRequested)) {
    run.status = c.running > 0 || c.succeeded + c.failed > 0 ? "running" : "queued";
    await writeJson(ports.blobs, batchKeys.run(run.ownerKeyId, run.id), run);
    return;
  }
  run.status = run.cancelRequested ? "canceled" : c.failed > 0 ? "failed" : "succeeded";
  run.finishedAt = at.toISOString();
  run.summary =
    `${c.succeeded} of ${c.new} new renders succeeded, ${c.failed} failed, ${c.skipped} skipped (made by an earlier run)` +
    (run.status === "canceled" ? "; canceled before the rest were made" : "") +
    (c.failed > 0 ? "; run the manifest again to retry only the failed ones" : "") +
    ".";
  try {
    await writeRunOutputs(deps.ports.blobs, run, { contactSheet: deps.contactSheet, log: deps.log });
  } catch (e) {
    deps.log?.("error", { err: String(e), runId: run.id }, "batch outputs could not be written");
  }
  await writeJson(ports.blobs, batchKeys.run(run.ownerKeyId, run.id), run);
  await ports.blobs.delete(batchKeys.active(run.ownerKeyId, run.id));
  deps.log?.("info", { runId: run.id, status: run.status, counts: run.counts }, "batch run ended");
  await notifyRunEnded(deps, run);
}

export { CLAIM_SECONDS };
