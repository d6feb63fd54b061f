import { z } from "@hono/zod-openapi";
import type { Context } from "hono";

import type { ApiDeps, ApiEnv } from "../deps.js";
import { apiRouter, problems } from "../http/openapi.js";
import { problem } from "../http/problem.js";
import { renderAdmission } from "../renders/render-admission.js";
import type { ApiRuntime } from "../runtime.js";
import { type BatchDeps, cancelRun, getRun, planBatch, startRun, withLiveCounts } from "./batch-service.js";
import { ManifestError, manifestFormat, manifestSchema, type ParsedManifest, parseManifest } from "./manifest.js";
import { checkNotifyTargets } from "./notify.js";
import { cursorOrFail, listManifestsPage, listRunsPage, pageQuery, readPageQuery } from "./pages.js";
import { batchKeys, type BatchRun, readJson, RUN_STATUSES, writeJson } from "./run-record.js";
import { nextFires, type StoredManifest, validateSchedule } from "./schedule.js";

/** Batch settings a host may pass; the rest of BatchDeps comes from the API's own deps. */
export type BatchOptions = Partial<
  Pick<BatchDeps, "stepSeconds" | "window" | "contactSheet" | "chat" | "notifyPlatforms" | "schedules">
>;

export const DEFAULT_BATCH_STEP_SECONDS = 0.12;
export const DEFAULT_BATCH_WINDOW = 200;

/** BatchDeps from the API's deps (quotas through the same admission as `POST /v1/renders`). */
export function batchDepsFrom(deps: ApiDeps, options: BatchOptions = {}, book?: BatchDeps["book"]): BatchDeps {
  return {
    ports: deps.ports,
    limits: deps.limits,
    retentionHours: deps.retentionHours,
    downloadUrlSeconds: deps.downloadUrlSeconds,
    stepSeconds: options.stepSeconds ?? DEFAULT_BATCH_STEP_SECONDS,
    window: options.window ?? DEFAULT_BATCH_WINDOW,
    book,
    admission: async (keyId) => {
      const key = await deps.ports.keys.get(keyId);
      return key ? renderAdmission(key, deps) : undefined;
    },
    contactSheet: options.contactSheet,
    chat: options.chat,
    notifyPlatforms: options.notifyPlatforms,
    schedules: options.schedules,
    now: deps.now,
    log: deps.log,
  };
}

const countsSchema = z.object({
  total: z.number().int(),
  new: z.number().int(),
  skipped: z.number().int(),
  queued: z.number().int(),
  running: z.number().int(),
  succeeded: z.number().int(),
  failed: z.number().int(),
});
const estimateSchema = z.object({
  images: z.number().int(),
  gpu_seconds: z.number(),
  source: z.enum(["measured", "config"]),
  seconds_per_step_megapixel: z.number(),
});
const link = z.object({ url: z.string() }).nullable();
const renderRow = z.object({
  id: z.string(),
  prompt: z.string(),
  seed: z.number().int(),
  width: z.number().int(),
  height: z.number().int(),
  mode: z.string(),
  state: z.enum(["skipped", "pending", "submitted"]),
  status: z.string().optional(),
  error: z.string().optional(),
});
export const batchRunSchema = z
  .object({
    id: z.string(),
    manifest_id: z.string(),
    status: z.enum(RUN_STATUSES),
    trigger: z.enum(["manual", "schedule"]),
    scheduled_for: z.string().optional(),
    created_at: z.string(),
    finished_at: z.string().optional(),
    counts: countsSchema,
    estimate: estimateSchema,
    summary: z.string().optional(),
    contact_sheet: link,
    index: link,
    gallery: link,
    renders: z.array(renderRow).optional(),
  })
  .openapi("BatchRun");

const pageLinks = z.object({ next: z.string().optional() });
const runListSchema = z
  .object({ data: z.array(batchRunSchema), next_cursor: z.string().optional(), links: pageLinks })
  .openapi("BatchRunList");
const storedManifestSchema = z
  .object({
    id: z.string(),
    manifest: manifestSchema,
    updated_at: z.string(),
    next_fires: z.array(z.string()),
  })
  .openapi("StoredManifest");
const manifestListSchema = z
  .object({ data: z.array(storedManifestSchema), next_cursor: z.string().optional(), links: pageLinks })
  .openapi("ManifestList");

async function runView(deps: ApiDeps, run: BatchRun, withRenders: boolean) {
  const url = async (key?: string) =>
    key ? { url: await deps.ports.blobs.downloadUrl(key, { expiresSeconds: deps.downloadUrlSeconds }) } : null;
  return {
    id: run.id,
    manifest_id: run.manifestId,
    status: run.status,
    trigger: run.trigger,
    ...(run.scheduledFor ? { scheduled_for: run.scheduledFor } : {}),
    created_at: run.createdAt,
    ...(run.finishedAt ? { finished_at: run.finishedAt } : {}),
    counts: run.counts,
    estimate: run.estimate,
    ...(run.summary ? { summary: run.summary } : {}),
    contact_sheet: await url(run.contactSheetKey),
    index: await url(run.indexKey),
    gallery: await url(run.galleryKey),
    ...(withRenders
      ? {
          renders: run.renders.map((r) => ({
            id: r.jobId,
            prompt: r.prompt,
            seed: r.seed,
            width: r.width,
            height: r.height,
            mode: r.mode,
            state: r.state,
            ...(r.status ? { status: r.status } : {}),
            ...(r.error ? { error: r.error } : {}),
          })),
        }
      : {}),
  };
}

/** Reads a manifest body: YAML (`application/yaml`, `text/yaml`) or JSON, errors with positions. */
async function readManifest(c: Context<ApiEnv>): Promise<ParsedManifest & { source: string; format: "yaml" | "json" }> {
  const source = await c.req.text();
  if (source.trim() === "") {
    throw new ManifestError([{ field: "$", message: "the body is empty; send a manifest as YAML or JSON" }]);
  }
  const format = manifestFormat(c.req.header("content-type"), source);
  const parsed = parseManifest(source, format);
  if (parsed.manifest.schedule) {
    const wrong = validateSchedule(parsed.manifest.schedule);
    if (wrong) {
      const field = wrong.startsWith("schedule.timezone") ? "timezone" : "cron";
      throw new ManifestError([
        { field: `$.schedule.${field}`, message: wrong, ...parsed.locate(["schedule", field]) },
      ]);
    }
  }
  return { ...parsed, source, format };
}

const MANIFEST_BODY = {
  required: true,
  content: {
    "application/json": { schema: manifestSchema },
    "application/yaml": { schema: manifestSchema },
  },
};
const security = [{ bearer: [] }];
const idParam = (example: string) =>
  z.object({ id: z.string().openapi({ param: { name: "id", in: "path" }, example }) });
const runJson = { content: { "application/json": { schema: batchRunSchema } } };

/**
 * `/v1/batches` (runs) and `/v1/manifests` (stored manifests, which is where schedules live). A
 * manifest body is YAML or JSON, read and validated here (not by the JSON validator) so errors can
 * name lines; the OpenAPI entries are registered by hand for the same reason.
 */
export function batchRoutes(rt: ApiRuntime, options: BatchOptions = {}) {
  const { deps } = rt;
  const batch = batchDepsFrom(deps, options, rt.book);
  const app = apiRouter();
  const manifests = apiRouter();
  const key = (c: Context<ApiEnv>) => c.get("key").id;
  const notifyPlatforms = batch.notifyPlatforms ?? batch.chat?.platforms ?? [];

  app.post("/v1/batches", async (c) => {
    const dryRun = c.req.query("dry_run") === "true";
    const storedId = c.req.query("manifest_id");
    let parsed: Pick<ParsedManifest, "manifest" | "locate">;
    if (storedId) {
      const stored = await readJson<StoredManifest>(deps.ports.blobs, batchKeys.manifest(key(c), storedId));
      if (!stored)
        return problem(
          404,
          "not_found",
          `No stored manifest ${storedId} for this API key; PUT it to /v1/manifests/${storedId} first.`,
        );
      parsed = { manifest: manifestSchema.parse(stored.manifest), locate: () => undefined };
    } else {
      parsed = await readManifest(c);
    }
    checkNotifyTargets(parsed.manifest, notifyPlatforms, parsed.locate);
    if (dryRun) {
      const planned = await planBatch(batch, key(c), parsed.manifest, parsed.locate);
      const estimate = planned.estimate;
      const caps = parsed.manifest.caps;
      const overCap =
        (caps?.max_images !== undefined && estimate.images > caps.max_images) ||
        (caps?.max_gpu_seconds !== undefined && estimate.gpu_seconds > caps.max_gpu_seconds);
      return c.json({
        dry_run: true,
        manifest_id: parsed.manifest.id,
        renders: planned.items.map((i) => ({
          id: i.key,
          prompt: i.prompt,
          seed: i.seed,
          width: i.width,
          height: i.height,
          mode: i.mode,
        })),
        count: planned.items.length,
        estimate,
        within_caps: !overCap,
        ...(parsed.manifest.schedule ? { next_fires: nextFires(parsed.manifest.schedule, rt.now(), 5) } : {}),
      });
    }
    const { run } = await startRun(batch, {
      ownerKeyId: key(c),
      manifest: parsed.manifest,
      trigger: "manual",
      locate: parsed.locate,
    });
    return c.json(await runView(deps, run, false), 202, { Location: `${rt.base(c)}/v1/batches/${run.id}` });
  });

  /** `{data, next_cursor, links: {next}}`, as `GET /v1/renders` answers. */
  const pageBody = <T>(c: Context<ApiEnv>, path: string, limit: number, data: T[], nextCursor?: string) => ({
    data,
    next_cursor: nextCursor,
    links: {
      next: nextCursor
        ? `${rt.base(c)}${path}?${new URLSearchParams({ limit: String(limit), cursor: nextCursor })}`
        : undefined,
    },
  });

  app.get("/v1/batches", async (c) => {
    const { limit, cursor } = readPageQuery(c.req.query());
    const page = await listRunsPage(batch, key(c), { limit, after: cursorOrFail(cursor) });
    const data = await Promise.all(page.items.map((r) => runView(deps, r, false)));
    return c.json(pageBody(c, "/v1/batches", limit, data, page.nextCursor));
  });

  app.get("/v1/batches/:id", async (c) => {
    const run = await getRun(batch, key(c), c.req.param("id"));
    if (!run) return problem(404, "not_found", `No batch run ${c.req.param("id")} for this API key.`);
    return c.json(await runView(deps, await withLiveCounts(batch, run), c.req.query("renders") === "true"));
  });

  app.delete("/v1/batches/:id", async (c) => {
    const run = await cancelRun(batch, key(c), c.req.param("id"));
    if (!run) return problem(404, "not_found", `No batch run ${c.req.param("id")} for this API key.`);
    return c.json(await runView(deps, run, false));
  });

  manifests.put("/v1/manifests/:id", async (c) => {
    const id = c.req.param("id");
    const parsed = await readManifest(c);
    if (parsed.manifest.id !== id) {
      throw new ManifestError([
        {
          field: "$.id",
          message: `the manifest's id (${parsed.manifest.id}) must match the path (/v1/manifests/${id})`,
          ...parsed.locate(["id"]),
        },
      ]);
    }
    checkNotifyTargets(parsed.manifest, notifyPlatforms, parsed.locate);
    // Per-manifest schedules (EventBridge on AWS): what they cannot express is refused here.
    const unschedulable = batch.schedules?.check(parsed.manifest);
    if (unschedulable) {
      const path = unschedulable.field.replace(/^\$\./, "").split(".");
      throw new ManifestError([{ ...unschedulable, ...parsed.locate(path) }]);
    }
    // Expanding now reports bad render fields at PUT, not at 02:00 in a log.
    await planBatch(batch, key(c), parsed.manifest, parsed.locate);
    const existed = (await deps.ports.blobs.head(batchKeys.manifest(key(c), id))) !== null;
    // The schedule first: if the scheduler refuses, nothing new is stored and the PUT can be repeated.
    await batch.schedules?.sync(key(c), parsed.manifest);
    const stored: StoredManifest = {
      ownerKeyId: key(c),
      manifest: parsed.manifest,
      source: parsed.source,
      format: parsed.format,
      updatedAt: rt.now().toISOString(),
    };
    await writeJson(deps.ports.blobs, batchKeys.manifest(key(c), id), stored);
    return c.json(manifestView(stored, rt.now()), existed ? 200 : 201);
  });

  manifests.get("/v1/manifests", async (c) => {
    const { limit, cursor } = readPageQuery(c.req.query());
    const page = await listManifestsPage(batch, key(c), { limit, after: cursorOrFail(cursor) });
    const data = page.items.map((s) => manifestView(s, rt.now()));
    return c.json(pageBody(c, "/v1/manifests", limit, data, page.nextCursor));
  });

  manifests.get("/v1/manifests/:id", async (c) => {
    const stored = await readJson<StoredManifest>(deps.ports.blobs, batchKeys.manifest(key(c), c.req.param("id")));
    if (!stored) return problem(404, "not_found", `No stored manifest ${c.req.param("id")} for this API key.`);
    return c.json({ ...manifestView(stored, rt.now()), source: stored.source, format: stored.format });
  });

  manifests.delete("/v1/manifests/:id", async (c) => {
    const blobKey = batchKeys.manifest(key(c), c.req.param("id"));
    if (!(await deps.ports.blobs.head(blobKey))) {
      return problem(404, "not_found", `No stored manifest ${c.req.param("id")} for this API key.`);
    }
    await deps.ports.blobs.delete(blobKey);
    // A schedule left behind by a failure here removes itself at its next fire (batches/trigger.ts).
    await batch.schedules?.remove(key(c), c.req.param("id"));
    return c.body(null, 204);
  });

  registerDocs(app);
  return { runs: app, manifests };
}

function manifestView(stored: StoredManifest, now: Date) {
  const schedule = stored.manifest.schedule;
  return {
    id: stored.manifest.id,
    manifest: stored.manifest,
    updated_at: stored.updatedAt,
    next_fires: schedule ? nextFires(schedule, now, 3).map((d) => d.toISOString()) : [],
  };
}

function registerDocs(app: ReturnType<typeof apiRouter>) {
  const r = app.openAPIRegistry;
  r.register("BatchManifest", manifestSchema);
  r.registerPath({
    method: "post",
    path: "/v1/batches",
    operationId: "runBatch",
    summary: "Run a batch manifest",
    description:
      "Body: a manifest as YAML (`application/yaml`) or JSON. Expands it, skips renders an earlier run made, refuses it over its caps (422 `batch_cap_exceeded` with the estimate), and feeds the rest to the batch lane. `dry_run=true` returns the expansion and estimate without storing anything; `manifest_id=ID` runs a stored manifest instead of the body. Invalid manifests are 400 `manifest_invalid` with `errors[]` naming the JSON path and, for YAML, line and column.",
    security,
    request: {
      query: z.object({
        dry_run: z.enum(["true", "false"]).optional(),
        manifest_id: z.string().optional(),
      }),
      body: MANIFEST_BODY,
    },
    responses: {
      202: { description: "The run, started", ...runJson },
      200: { description: "Dry run: the renders it would make and the estimate" },
      ...problems(400, 401, 403, 404, 413, 415, 429),
    },
  });
  r.registerPath({
    method: "get",
    path: "/v1/batches",
    operationId: "listBatches",
    summary: "List your batch runs",
    description:
      "Newest first, a page at a time: follow `links.next` (or pass `next_cursor` as `cursor`) until it is absent.",
    security,
    request: { query: pageQuery },
    responses: {
      200: { description: "A page of runs, newest first", content: { "application/json": { schema: runListSchema } } },
      ...problems(400, 401, 403, 429),
    },
  });
  r.registerPath({
    method: "get",
    path: "/v1/batches/{id}",
    operationId: "getBatch",
    summary: "A batch run: status, counts, estimate and output links",
    description: "`renders=true` adds every render with its state.",
    security,
    request: { params: idParam("run_0123456789abcdef") },
    responses: { 200: { description: "The run", ...runJson }, ...problems(401, 403, 404, 429) },
  });
  r.registerPath({
    method: "delete",
    path: "/v1/batches/{id}",
    operationId: "cancelBatch",
    summary: "Cancel what a run has not finished",
    security,
    request: { params: idParam("run_0123456789abcdef") },
    responses: { 200: { description: "The run after cancelling", ...runJson }, ...problems(401, 403, 404, 429) },
  });
  r.registerPath({
    method: "put",
    path: "/v1/manifests/{id}",
    operationId: "putManifest",
    summary: "Store a manifest (its schedule fires from then on)",
    security,
    request: { params: idParam("nightly-catalogue"), body: MANIFEST_BODY },
    responses: {
      201: { description: "Stored" },
      200: { description: "Replaced" },
      ...problems(400, 401, 403, 413, 415, 429),
    },
  });
  r.registerPath({
    method: "get",
    path: "/v1/manifests",
    operationId: "listManifests",
    summary: "List your stored manifests with their next fire times",
    description: "By id, a page at a time: follow `links.next` (or pass `next_cursor` as `cursor`) until it is absent.",
    security,
    request: { query: pageQuery },
    responses: {
      200: {
        description: "A page of stored manifests, by id",
        content: { "application/json": { schema: manifestListSchema } },
      },
      ...problems(400, 401, 403, 429),
    },
  });
  r.registerPath({
    method: "get",
    path: "/v1/manifests/{id}",
    operationId: "getManifest",
    summary: "A stored manifest, its source text and next fire times",
    security,
    request: { params: idParam("nightly-catalogue") },
    responses: { 200: { description: "The manifest" }, ...problems(401, 403, 404, 429) },
  });
  r.registerPath({
    method: "delete",
    path: "/v1/manifests/{id}",
    operationId: "deleteManifest",
    summary: "Delete a stored manifest (its schedule stops)",
    security,
    request: { params: idParam("nightly-catalogue") },
    responses: { 204: { description: "Deleted" }, ...problems(401, 403, 404, 429) },
  });
}
