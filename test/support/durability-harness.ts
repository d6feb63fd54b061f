/**
 * Fault tests' harness: isolated namespaces of either family of ports, real `kiln worker` child
 * processes on them, and the observations the tests make — the job record, the blob store, the
 * workers' event logs (KILN_EVENT_LOG) and their /metrics — none of it mocked.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";

import type { EventLogLine } from "@kiln/gpu-worker";
import { runPipelineStage, sdxlExecutor } from "@kiln/gpu-worker";
import {
  blobKeys,
  createQueuedJob,
  decodeLatents,
  DEFAULT_RENDER_LIMITS,
  encodeLatents,
  enqueueStage,
  type JobRecord,
  type Latents,
  planRender,
  type Ports,
  queueForStage,
  QUEUES,
  renderRequestSchema,
  stageMessage,
} from "@kiln/shared";
import { openLocalPorts } from "@kiln/shared/local";

import {
  type AwsStandins,
  openStandinPorts,
  startAwsStandins,
} from "../../packages/shared/test/support/aws-standins.js";
import { loadTinyModels, tinyModelDirs } from "./local-stack.js";
import { startTcpProxy, type TcpProxy } from "./tcp-proxy.js";

export type FamilyName = "local" | "aws";

const ROOT = path.resolve(import.meta.dirname, "../..");
const KILN_BIN = path.join(ROOT, "packages/cli/bin/kiln.js");
/** The chaos run: `kiln` as one prebuilt bundle (see kiln-bundle.ts), which starts in a fraction of the time. */
let kilnBin = KILN_BIN;
export function useKilnBin(file: string | undefined): void {
  kilnBin = file ?? KILN_BIN;
}
/** Tiny models loaded once per test process, for references and in-process stages. */
let tinyModels: ReturnType<typeof loadTinyModels> | undefined;

export interface NamespaceOptions {
  visibilitySeconds: number;
  maxReceives?: number;
  /** AWS family: child workers reach the stand-ins through TCP proxies the test can pause. */
  proxied?: boolean;
}

/** One isolated set of queues and stores: a data dir (local) or a queue prefix, bucket and table (aws). */
export interface Namespace {
  family: FamilyName;
  /** The test's own view, direct to the stores (never through the proxies). */
  ports: Ports;
  /** KILN_* settings that put a child worker on this namespace. */
  env: Record<string, string>;
  /** Every worker of the namespace appends its transitions here. */
  eventLog: string;
  visibilitySeconds: number;
  /** Local family: the SQLite file the workers share. */
  databaseFile?: string;
  proxies?: TcpProxy[];
  close(): Promise<void>;
}

export interface Family {
  name: FamilyName;
  open(options: NamespaceOptions): Promise<Namespace>;
  stop(): Promise<void>;
}

let namespaces = 0;

export async function startFamily(name: FamilyName): Promise<Family> {
  const standins: AwsStandins | undefined = name === "aws" ? await startAwsStandins() : undefined;
  const open = async (options: NamespaceOptions): Promise<Namespace> => {
    const n = ++namespaces;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `kiln-durability-${name}-`));
    const eventLog = path.join(dir, "events.jsonl");
    const maxReceives = options.maxReceives ?? 5;
    const common = {
      KILN_VISIBILITY_SECONDS: String(options.visibilitySeconds),
      KILN_MAX_RECEIVES: String(maxReceives),
      KILN_EVENT_LOG: eventLog,
    };
    if (!standins) {
      const dataDir = path.join(dir, "data");
      const ports = openLocalPorts({
        dataDir,
        publicBaseUrl: "http://127.0.0.1:9",
        urlSecret: "durability-test-secret-0123456789",
        maxReceives,
      });
      return {
        family: name,
        ports,
        env: { ...common, KILN_BACKEND: "local", KILN_DATA_DIR: dataDir },
        eventLog,
        visibilitySeconds: options.visibilitySeconds,
        databaseFile: path.join(dataDir, "kiln.db"),
        async close() {
          await ports.close();
          fs.rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    const names = { bucket: `kiln-ns${n}`, table: `kiln-ns${n}`, queuePrefix: `ns${n}-` };
    const { ports } = await openStandinPorts(standins, {
      queues: QUEUES.map((q) => q.name),
      maxReceives,
      visibilitySeconds: options.visibilitySeconds,
      ...names,
    });
    const proxies = options.proxied
      ? [await startTcpProxy(standins.sqsEndpoint), await startTcpProxy(standins.dynamoEndpoint)]
      : undefined;
    const sqs = proxies ? proxies[0]!.url : standins.sqsEndpoint;
    return {
      family: name,
      ports,
      env: {
        ...common,
        KILN_BACKEND: "aws",
        KILN_AWS_REGION: standins.region,
        KILN_SQS_ENDPOINT: sqs,
        KILN_S3_ENDPOINT: sqs,
        KILN_DYNAMO_ENDPOINT: proxies ? proxies[1]!.url : standins.dynamoEndpoint,
        KILN_BUCKET: names.bucket,
        KILN_TABLE: names.table,
        KILN_QUEUE_PREFIX: names.queuePrefix,
        AWS_ACCESS_KEY_ID: standins.credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: standins.credentials.secretAccessKey,
      },
      eventLog,
      visibilitySeconds: options.visibilitySeconds,
      proxies,
      async close() {
        await ports.close();
        for (const p of proxies ?? []) await p.close();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  };
  return { name, open, stop: async () => standins?.stop() };
}

export interface ChildWorker {
  pid: number;
  /** Worker ids of this process start with this (`<host>-<pid>-`). */
  idPrefix: string;
  healthUrl: string;
  logs: Record<string, unknown>[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  alive(): boolean;
  signal(signal: NodeJS.Signals): void;
  metrics(): Promise<string>;
  /** Kills it if still running. */
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();

/** Kills every worker this process started and has not seen exit. */
export async function killAllWorkers(): Promise<void> {
  const exits = [...children].map(
    (child) =>
      new Promise((resolve) =>
        child.exitCode !== null || child.signalCode !== null ? resolve(null) : child.once("exit", resolve),
      ),
  );
  for (const child of children) child.kill("SIGKILL");
  await Promise.all(exits);
}
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** Starts `kiln worker` as a real child process on the namespace and waits until it polls. */
export async function spawnWorker(ns: Pick<Namespace, "env">, env: Record<string, string> = {}): Promise<ChildWorker> {
  const child = await spawnKiln("worker", { ...ns.env, ...env }, "worker polling");
  return { ...child, healthUrl: String(child.ready.health).replace(/\/healthz$/, "") };
}

export interface ChildKiln extends Omit<ChildWorker, "healthUrl"> {
  /** The log line that said the process is ready. */
  ready: Record<string, unknown>;
}

/** Runs `kiln <command>` as a child process with only the given KILN_/AWS_/SST_ settings, until it logs `readyMessage`. */
export async function spawnKiln(
  command: string,
  env: Record<string, string>,
  readyMessage: string,
): Promise<ChildKiln> {
  const models = tinyModelDirs();
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => !k.startsWith("KILN_") && !k.startsWith("AWS_") && !k.startsWith("SST_"),
    ),
  );
  const child = spawn(process.execPath, [kilnBin, command], {
    cwd: ROOT,
    env: {
      ...inherited,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
      KILN_LOG_LEVEL: "info",
      KILN_HOST: "127.0.0.1",
      KILN_WORKER_PORT: "0",
      KILN_MODEL_DIR: models.base,
      KILN_REFINER_DIR: models.refiner,
      KILN_DRAIN_SECONDS: "25",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  // The logger writes JSON lines to stderr; anything else there is kept for error messages.
  const logs: Record<string, unknown>[] = [];
  const other: string[] = [];
  let ready: Record<string, unknown>;
  try {
    ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `kiln ${command} (${child.pid}) did not log "${readyMessage}" within 90 s; output: ${other.join("\n")}`,
            ),
          ),
        90_000,
      );
      void exited.then(({ code, signal }) =>
        reject(
          new Error(
            `kiln ${command} (${child.pid}) exited (${code ?? signal}) before "${readyMessage}"; output: ${other.join("\n")}`,
          ),
        ),
      );
      for (const stream of [child.stdout!, child.stderr!]) {
        readline.createInterface({ input: stream }).on("line", (line) => {
          let entry: Record<string, unknown>;
          try {
            entry = JSON.parse(line) as Record<string, unknown>;
          } catch {
            other.push(line);
            return;
          }
          logs.push(entry);
          if (entry.msg === readyMessage) {
            clearTimeout(timer);
            resolve(entry);
          }
        });
      }
    });
  } catch (e) {
    child.kill("SIGKILL");
    throw e;
  }
  const alive = () => child.exitCode === null && child.signalCode === null;
  const healthUrl = String(ready.health ?? "").replace(/\/healthz$/, "");
  return {
    pid: child.pid!,
    idPrefix: `${os.hostname()}-${child.pid}-`,
    ready,
    logs,
    exited,
    alive,
    signal: (signal) => void child.kill(signal),
    metrics: async () => (await fetch(`${healthUrl}/metrics`)).text(),
    async stop() {
      if (alive()) child.kill("SIGKILL");
      await exited;
    },
  };
}

/**
 * Writes a job and its first stage message through the submit outbox, as the API's submit does: marked enqueued,
 * so a worker's reconciling sweep does not re-send stage 0 when the worker starts more than its grace later.
 */
export async function submitJob(ports: Ports, body: Record<string, unknown>): Promise<JobRecord> {
  return submitBuilt(ports, await buildJob(ports, body));
}

async function submitBuilt(ports: Ports, job: JobRecord): Promise<JobRecord> {
  const now = new Date();
  if (!(await createQueuedJob(ports, job, { now }))) throw new Error(`job ${job.id} already exists`);
  return (await ports.jobs.get(job.id)) ?? job;
}

/**
 * Plays a base worker whose hand-over blob is damaged on its way to the store: runs stage 0 in this
 * process, stores `spoil(blob)` under the stage's key, records the hand-over and enqueues stage 1,
 * as the runtime does.
 */
export async function handOverDamaged(
  ports: Ports,
  body: Record<string, unknown>,
  spoil: (blob: Uint8Array) => Uint8Array,
): Promise<JobRecord> {
  const job = await createJob(ports, body);
  const models = await (tinyModels ??= loadTinyModels());
  const stage = job.plan.stages[0]!;
  const result = await runPipelineStage(models.base!, { jobId: job.id, plan: job.plan, stage }, undefined);
  if (result.kind !== "latents") throw new Error("stage 0 of this body does not hand over");
  await ports.blobs.put(blobKeys.latents(job.id, 0), spoil(await encodeLatents(result.latents)));
  const at = new Date().toISOString();
  const running = await ports.jobs.update(
    job.id,
    { version: job.version },
    {
      status: "running",
      startedAt: at,
      progress: { stage: 0, stageKind: stage.kind, step: result.steps, steps: result.steps },
      stageTimings: [{ stage: 0, kind: stage.kind, worker: "test-producer", startedAt: at, finishedAt: at }],
    },
  );
  await enqueueStage(ports.queue, stageMessage(job.id, job.plan, 1));
  return running!;
}

/** Writes a queued job with no stage message (a test then plays the stages itself). */
async function createJob(ports: Ports, body: Record<string, unknown>): Promise<JobRecord> {
  const job = await buildJob(ports, body);
  await ports.jobs.create(job);
  return job;
}

/** A new job's record for `body` (its picture, if any, stored under it first, as the API's submit does). */
async function buildJob(
  ports: Ports,
  body: Record<string, unknown>,
  picture?: { bytes: Uint8Array; width: number; height: number },
): Promise<JobRecord> {
  // The schema asks an image mode for its picture; the API has already taken it out of the body by here.
  const request = renderRequestSchema(DEFAULT_RENDER_LIMITS).parse(
    picture ? { ...body, image: Buffer.from(picture.bytes).toString("base64") } : body,
  );
  const id = `job_${Math.random().toString(36).slice(2, 12)}`;
  // Image inputs: stored under the job before it exists, as the API's submit does.
  const image = picture && { key: blobKeys.input(id, "image", "png"), width: picture.width, height: picture.height };
  if (image) await ports.blobs.put(image.key, picture.bytes, { contentType: "image/png" });
  const plan = planRender(request, request.seed ?? 1, image && { image });
  const now = new Date().toISOString();
  const job: JobRecord = {
    id,
    ownerKeyId: "durability",
    status: "queued",
    version: 1,
    createdAt: now,
    updatedAt: now,
    plan,
    images: [],
    stageTimings: [],
  };
  return job;
}

/** Image inputs: writes a PNG picture under a new job, the job and its first stage message, as the API's submit does. */
export async function submitImageJob(
  ports: Ports,
  body: Record<string, unknown>,
  picture: { bytes: Uint8Array; width: number; height: number },
): Promise<JobRecord> {
  return submitBuilt(ports, await buildJob(ports, body, picture));
}

/**
 * Image inputs: the images a job's plan gives when its stages run back to back in this process on the
 * job's stored picture (same codec, no queue, no faults).
 */
export async function referenceImagesOf(ports: Ports, job: JobRecord): Promise<Buffer[]> {
  const models = await (tinyModels ??= loadTinyModels());
  const execute = sdxlExecutor(models, { blobs: ports.blobs });
  let input: Latents | undefined;
  for (const stage of job.plan.stages) {
    const result = await execute(job, stage, input, {});
    if (result.kind === "images") return result.images.map((i) => Buffer.from(i.bytes));
    input = await decodeLatents(await encodeLatents({ ...result.latents, meta: { ...result.latents.meta } }));
  }
  throw new Error("the plan has no image stage");
}

const references = new Map<string, Promise<Buffer[]>>();

/**
 * The images the same request gives when its stages run back to back in this process (same codec,
 * no queue, no faults). Images do not depend on the job id, so one reference serves every job of a body.
 */
export function referenceImages(body: Record<string, unknown>): Promise<Buffer[]> {
  const key = JSON.stringify(body);
  let images = references.get(key);
  if (!images) references.set(key, (images = renderInProcess(body)));
  return images;
}

async function renderInProcess(body: Record<string, unknown>): Promise<Buffer[]> {
  const models = await (tinyModels ??= loadTinyModels());
  const request = renderRequestSchema(DEFAULT_RENDER_LIMITS).parse(body);
  const plan = planRender(request, request.seed ?? 1);
  let input: Latents | undefined;
  for (const stage of plan.stages) {
    const model = stage.model === "refiner" ? models.refiner! : models.base!;
    const result = await runPipelineStage(model, { jobId: "reference", plan, stage }, input);
    if (result.kind === "images") return result.images.map((i) => Buffer.from(i.bytes));
    input = await decodeLatents(await encodeLatents({ ...result.latents, meta: { ...result.latents.meta } }));
  }
  throw new Error("the plan has no image stage");
}

export async function storedImages(ports: Ports, job: JobRecord): Promise<Buffer[]> {
  const keys = await ports.blobs.list(`jobs/${job.id}/images/`);
  return Promise.all(keys.map(async (k) => Buffer.from((await ports.blobs.get(k))!)));
}

export function eventLog(ns: Namespace): EventLogLine[] {
  if (!fs.existsSync(ns.eventLog)) return [];
  return fs
    .readFileSync(ns.eventLog, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as EventLogLine);
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | null | false>,
  timeoutMs = 60_000,
  intervalMs = 20,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Both stage queues drained, nothing in flight or delayed; a dead-lettered stage message fails the test at once. */
export const waitForQueuesEmpty = (ns: Namespace) =>
  waitFor(
    "the queues to empty",
    async () => {
      for (const kind of ["base", "refine"] as const) {
        const depth = await ns.ports.queue.depth(queueForStage(kind));
        if (depth.visible + depth.inFlight + depth.delayed > 0) return false;
        if ((await ns.ports.queue.peekDeadLetters(queueForStage(kind))).length > 0)
          throw new Error(`a ${kind} message was dead-lettered`);
      }
      return true;
    },
    30_000,
    100,
  );

export const waitForJob = (
  ns: Namespace,
  id: string,
  until: (job: JobRecord) => boolean,
  what: string,
  timeoutMs = 60_000,
) =>
  waitFor(
    what,
    async () => {
      const job = await ns.ports.jobs.get(id);
      return job && until(job) ? job : undefined;
    },
    timeoutMs,
  );

export const isEnded = (job: JobRecord) => ["succeeded", "failed", "canceled", "expired"].includes(job.status);

/**
 * The job ends `succeeded` with exactly one `succeeded` transition and the images of a fault-free run of `body`.
 * Events are at least once (a redelivered finishing message tells the sink again), so a transition is a distinct
 * version: a second `succeeded` transition would have a new one. `queuesEmpty`: also wait until nothing is left
 * on the stage queues (when no other job is still running).
 */
export async function assertOneResult(
  ns: Namespace,
  job: JobRecord,
  body: Record<string, unknown>,
  options: { queuesEmpty?: boolean } = {},
): Promise<JobRecord> {
  const done = await waitForJob(ns, job.id, isEnded, `job ${job.id} to end`, 180_000);
  assert.equal(done.status, "succeeded", JSON.stringify(done.error));
  const transitions = (type: string) =>
    new Set(
      eventLog(ns)
        .filter((e) => e.jobId === job.id && e.type === type)
        .map((e) => e.version),
    );
  await waitFor("the succeeded event", async () => transitions("succeeded").size > 0, 10_000);
  const reference = await referenceImages(body);
  const stored = await storedImages(ns.ports, done);
  assert.equal(stored.length, reference.length, "one set of images");
  assert.equal(done.images.length, reference.length);
  stored.forEach((image, i) =>
    assert.ok(image.equals(reference[i]!), `image ${i} is byte-identical to a fault-free render`),
  );
  if (options.queuesEmpty) await waitForQueuesEmpty(ns);
  assert.deepEqual([...transitions("succeeded")], [done.version], "one succeeded transition");
  return done;
}

/** A Prometheus counter's value summed over the series matching every given label. */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => (match[2] ?? "").includes(`${k}="${v}"`))) sum += Number(match[3]);
  }
  return sum;
}
