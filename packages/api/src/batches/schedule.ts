import { KilnError, randomId } from "@kiln/shared";
import { Cron } from "croner";

import { type BatchDeps, pumpAll, startRun } from "./batch-service.js";
import { type Manifest, manifestSchema } from "./manifest.js";
import { batchKeys, readJson } from "./run-record.js";
import { clearWarmups, emitWarmup, type WarmupResult } from "./warmup.js";

/** A manifest as stored per key (`PUT /v1/manifests/{id}`). */
export interface StoredManifest {
  ownerKeyId: string;
  manifest: Manifest;
  /** The text as sent (YAML or JSON), returned by GET so comments survive. */
  source: string;
  format: "yaml" | "json";
  updatedAt: string;
}

/** Checks a cron expression and time zone, as a manifest error would name them. */
export function validateSchedule(schedule: NonNullable<Manifest["schedule"]>): string | undefined {
  try {
    new Intl.DateTimeFormat("en", { timeZone: schedule.timezone });
  } catch {
    return `schedule.timezone ${JSON.stringify(schedule.timezone)} is not an IANA time zone (e.g. "Europe/Berlin", "UTC")`;
  }
  try {
    new Cron(schedule.cron, { timezone: schedule.timezone, paused: true });
  } catch (e) {
    return `schedule.cron ${JSON.stringify(schedule.cron)} is not a cron expression: ${(e as Error).message}`;
  }
  return undefined;
}

/** The next `count` fire times after `from`, in the schedule's zone (croner handles DST gaps and repeats). */
export function nextFires(schedule: NonNullable<Manifest["schedule"]>, from: Date, count: number): Date[] {
  return new Cron(schedule.cron, { timezone: schedule.timezone, paused: true }).nextRuns(count, from);
}

/** Fire times in (after, until]: what a tick must start. */
export function firesBetween(schedule: NonNullable<Manifest["schedule"]>, after: Date, until: Date): Date[] {
  const out: Date[] = [];
  let from = after;
  // Bounded: a tick looks back minutes, not years.
  for (let i = 0; i < 1000; i++) {
    const [next] = nextFires(schedule, from, 1);
    if (!next || next.getTime() > until.getTime()) break;
    out.push(next);
    from = next;
  }
  return out;
}

export async function listStoredManifests(deps: BatchDeps, ownerKeyId?: string): Promise<StoredManifest[]> {
  const prefix = ownerKeyId ? batchKeys.manifests(ownerKeyId) : batchKeys.allManifests();
  const keys = (await deps.ports.blobs.list(prefix)).filter((k) => /\/manifests\/[^/]+\.json$/.test(k));
  const stored = await Promise.all(keys.map((k) => readJson<StoredManifest>(deps.ports.blobs, k)));
  return stored.filter((s): s is StoredManifest => s !== null);
}

export interface FireResult {
  ownerKeyId: string;
  manifestId: string;
  scheduledFor: string;
  runId?: string;
  created?: boolean;
  error?: string;
}

/**
 * Starts the run of one scheduled fire. The run id derives from key, manifest and fire time, so
 * however many processes or retried triggers call this for the same fire, one run exists.
 */
export async function fireManifest(
  deps: BatchDeps,
  ownerKeyId: string,
  manifestId: string,
  scheduledFor: Date,
): Promise<FireResult> {
  const result: FireResult = { ownerKeyId, manifestId, scheduledFor: scheduledFor.toISOString() };
  const stored = await readJson<StoredManifest>(deps.ports.blobs, batchKeys.manifest(ownerKeyId, manifestId));
  if (!stored) return { ...result, error: "the manifest was deleted" };
  const key = await deps.ports.keys.get(ownerKeyId);
  if (!key || key.revokedAt) return { ...result, error: "the key that stored the manifest is revoked or gone" };
  try {
    const manifest = manifestSchema.parse(stored.manifest);
    const { run, created } = await startRun(deps, { ownerKeyId, manifest, trigger: "schedule", scheduledFor });
    // Batch warm-up: the run's own stages take over from its warm-up messages.
    if (manifest.schedule?.warmup_minutes) await clearWarmups(deps, scheduledFor);
    return { ...result, runId: run.id, created };
  } catch (e) {
    deps.log?.("warn", { err: String(e), ownerKeyId, manifestId }, "scheduled batch run did not start");
    return { ...result, error: e instanceof KilnError ? e.message : String(e) };
  }
}

/** How far back a tick looks for fires it may have missed (a restart, a slow tick, a lost lease). */
const LOOKBACK_MS = 10 * 60_000;

/**
 * One scheduler tick: fire every stored manifest whose schedule had a fire in the look-back
 * window (never before the manifest was stored), then pump unfinished runs. Safe to run in several
 * processes at once; `BatchScheduler` still takes a lease so only one does the work per tick.
 */
export async function schedulerTick(deps: BatchDeps, nowAt = deps.now?.() ?? new Date()): Promise<FireResult[]> {
  const results: FireResult[] = [];
  for (const stored of await listStoredManifests(deps)) {
    const schedule = stored.manifest.schedule;
    if (!schedule) continue;
    const after = new Date(Math.max(nowAt.getTime() - LOOKBACK_MS, Date.parse(stored.updatedAt)));
    await tickWarmups(deps, stored, after, nowAt);
    for (const at of firesBetween(schedule, after, nowAt)) {
      results.push(await fireManifest(deps, stored.ownerKeyId, stored.manifest.id, at));
    }
  }
  await pumpAll(deps);
  return results;
}

/**
 * Batch warm-up on the embedded trigger: a fire F whose warm-up time F − warmup_minutes fell in
 * (after, now], and which has not come yet, gets its warm-up now.
 */
async function tickWarmups(deps: BatchDeps, stored: StoredManifest, after: Date, nowAt: Date): Promise<WarmupResult[]> {
  const schedule = stored.manifest.schedule;
  const minutes = schedule?.warmup_minutes;
  if (!schedule || !minutes) return [];
  const ms = minutes * 60_000;
  const fires = firesBetween(schedule, new Date(after.getTime() + ms), new Date(nowAt.getTime() + ms));
  const sent: WarmupResult[] = [];
  for (const fire of fires.filter((f) => f.getTime() > nowAt.getTime())) {
    sent.push(await emitWarmup(deps, stored.ownerKeyId, stored.manifest.id, fire));
  }
  return sent;
}

/**
 * Takes the tick lease for the slot containing `at`: a conditional create in the key store (SQLite
 * insert / DynamoDB condition), so of several API processes exactly one runs each tick.
 */
export async function takeTickLease(deps: BatchDeps, at: Date, tickSeconds: number): Promise<boolean> {
  const slot = Math.floor(at.getTime() / 1000 / tickSeconds);
  const taken = await deps.ports.keys.putIdempotency(
    {
      id: `batch-tick:${slot}`,
      fingerprint: String(slot),
      state: "completed",
      token: randomId(8),
      lockedUntil: 0,
      expiresAt: Math.floor(at.getTime() / 1000) + tickSeconds * 4,
      createdAt: at.toISOString(),
    },
    at.getTime(),
  );
  return taken === null;
}

/**
 * The embedded trigger: croner ticks every `tickSeconds` in the API process; the process that takes
 * the tick's lease fires due manifests and pumps runs. On AWS the same tick runs from EventBridge
 * Scheduler through `entry/batch-trigger.ts`.
 */
export class BatchScheduler {
  private job?: Cron;
  private running: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly deps: BatchDeps,
    private readonly tickSeconds = 30,
  ) {}

  start(): void {
    const pattern =
      this.tickSeconds % 60 === 0 ? `0 */${this.tickSeconds / 60} * * * *` : `*/${this.tickSeconds} * * * * *`;
    this.job = new Cron(pattern, { protect: true, unref: true }, () => this.tick());
  }

  async tick(at = this.deps.now?.() ?? new Date()): Promise<void> {
    this.running = (async () => {
      if (!(await takeTickLease(this.deps, at, this.tickSeconds))) return;
      const fired = await schedulerTick(this.deps, at);
      for (const f of fired.filter((f) => f.created)) this.deps.log?.("info", { ...f }, "scheduled batch run started");
    })().catch((e) =>
      this.deps.log?.("error", { err: String(e) }, "batch scheduler tick failed; the next tick retries"),
    );
    await this.running;
  }

  async stop(): Promise<void> {
    this.job?.stop();
    await this.running;
  }
}
