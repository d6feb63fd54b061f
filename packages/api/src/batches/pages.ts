import { KilnError } from "@kiln/shared";

import { type PageQuery, pageQuery } from "../http/page-query.js";
import { fail } from "../http/problem.js";
import type { BatchDeps } from "./batch-service.js";
import { batchKeys, type BatchRun, readJson } from "./run-record.js";
import type { StoredManifest } from "./schedule.js";

/**
 * Pages of a key's runs and manifests, in the style of `GET /v1/renders`: `limit` (1–100, default
 * 20), an opaque `cursor` (the previous page's `next_cursor`), and `{data, next_cursor, links.next}`.
 * Both lists are read from sorted blob listings, so a page reads only its own records: runs through
 * an index of markers whose names sort newest first, manifests by id.
 */
export { pageQuery, type PageQuery } from "../http/page-query.js";

/** Reads `limit` and `cursor` as the renders list does: a bad one is a 400 naming the parameter. */
export function readPageQuery(query: Record<string, string | undefined>): PageQuery {
  const parsed = pageQuery.safeParse({ limit: query.limit, cursor: query.cursor });
  if (!parsed.success) {
    const errors = parsed.error.issues.map((i) => ({ field: i.path.join("."), message: i.message }));
    fail(
      400,
      "invalid_request",
      `The request query is invalid — ${errors.map((e) => `${e.field}: ${e.message}`).join("; ")}.`,
      { errors },
    );
  }
  return parsed.data;
}

const CURSOR_TAG = "b1";

export function encodePageCursor(after: string): string {
  const bytes = new TextEncoder().encode(JSON.stringify([CURSOR_TAG, after]));
  return btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

export function decodePageCursor(cursor: string): string {
  try {
    const b64 = cursor.replace(/-/g, "+").replace(/_/g, "/");
    const text = new TextDecoder().decode(Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0)));
    const value: unknown = JSON.parse(text);
    if (Array.isArray(value) && value[0] === CURSOR_TAG && typeof value[1] === "string") return value[1];
  } catch {
    // Falls through to the error below.
  }
  throw new KilnError(
    "cursor_invalid",
    "The page cursor is not one this server issued; start again without a cursor.",
    { status: 400 },
  );
}

/** A page's cursor as the 400 the renders list answers. */
export function cursorOrFail(cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined;
  try {
    return decodePageCursor(cursor);
  } catch (e) {
    const message = (e as Error).message;
    return fail(400, "invalid_request", `The request query is invalid — cursor: ${message}`, {
      errors: [{ field: "cursor", message }],
    });
  }
}

/** Milliseconds counted down from the year 2286, zero-padded: names that sort newest first. */
export function runIndexName(createdAt: string, runId: string): string {
  const inverted = 9_999_999_999_999 - Date.parse(createdAt);
  return `${String(inverted).padStart(13, "0")}_${runId}`;
}

/** Records a run in its key's time index (called when the run is stored). */
export async function indexRun(deps: Pick<BatchDeps, "ports">, run: Pick<BatchRun, "ownerKeyId" | "createdAt" | "id">) {
  await deps.ports.blobs.put(
    batchKeys.runIndex(run.ownerKeyId, runIndexName(run.createdAt, run.id)),
    new Uint8Array(0),
  );
}

/**
 * Runs stored before the index existed are indexed once, on a first page, so they keep their
 * place in the list (newest first) instead of vanishing from it.
 */
async function indexUnindexedRuns(deps: BatchDeps, keyId: string, indexed: string[]): Promise<boolean> {
  const have = new Set(indexed.map((k) => k.slice(k.indexOf("_") + 1)));
  const runKeys = await deps.ports.blobs.list(batchKeys.runs(keyId));
  const missing = runKeys.filter((k) => {
    const id = /\/runs\/([^/]+)\.json$/.exec(k)?.[1];
    return id !== undefined && !have.has(id);
  });
  for (const key of missing) {
    const run = await readJson<BatchRun>(deps.ports.blobs, key);
    if (run) await indexRun(deps, run);
  }
  return missing.length > 0;
}

export interface Page<T> {
  items: T[];
  nextCursor?: string;
}

/** A page of a key's runs, newest first. */
export async function listRunsPage(deps: BatchDeps, keyId: string, page: { limit: number; after?: string }) {
  const prefix = batchKeys.runIndexes(keyId);
  const names = async () => (await deps.ports.blobs.list(prefix)).map((k) => k.slice(prefix.length));
  let all = await names();
  if (page.after === undefined && (await indexUnindexedRuns(deps, keyId, all))) all = await names();
  const after = page.after;
  const rest = after === undefined ? all : all.filter((n) => n > after);
  const chosen = rest.slice(0, page.limit);
  const runs = await Promise.all(
    chosen.map((n) => readJson<BatchRun>(deps.ports.blobs, batchKeys.run(keyId, n.slice(n.indexOf("_") + 1)))),
  );
  return {
    items: runs.filter((r): r is BatchRun => r !== null),
    nextCursor: rest.length > page.limit ? encodePageCursor(chosen[chosen.length - 1]!) : undefined,
  } satisfies Page<BatchRun>;
}

/** A page of a key's stored manifests, by id. */
export async function listManifestsPage(deps: BatchDeps, keyId: string, page: { limit: number; after?: string }) {
  const prefix = batchKeys.manifests(keyId);
  const ids = (await deps.ports.blobs.list(prefix))
    .map((k) => /^([^/]+)\.json$/.exec(k.slice(prefix.length))?.[1])
    .filter((id): id is string => id !== undefined);
  const after = page.after;
  const rest = after === undefined ? ids : ids.filter((id) => id > after);
  const chosen = rest.slice(0, page.limit);
  const stored = await Promise.all(
    chosen.map((id) => readJson<StoredManifest>(deps.ports.blobs, batchKeys.manifest(keyId, id))),
  );
  return {
    items: stored.filter((s): s is StoredManifest => s !== null),
    nextCursor: rest.length > page.limit ? encodePageCursor(chosen[chosen.length - 1]!) : undefined,
  } satisfies Page<StoredManifest>;
}
