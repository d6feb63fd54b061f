/**
 * JobStore on DynamoDB. A job is one item whose attributes are the JobRecord's fields (so
 * conditions and updates address `status` and `version` directly), plus the layout keys from
 * dynamo-table.ts. Every transition is one conditional UpdateItem: no read-modify-write.
 *
 * Consistency: `get` reads strongly; `listByOwner` and `countQueuedBefore` read GSIs, which on
 * real DynamoDB are eventually consistent (a job created a moment ago may be missing for a
 * fraction of a second). dynalite's indexes are immediate.
 */
import {
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  paginateQuery,
  paginateScan,
  PutCommand,
  QueryCommand,
  UpdateCommand,
} from "@aws-sdk/lib-dynamodb";

import { KilnError } from "../../errors.js";
import type { JobCondition, JobPage, JobPatch, JobStore, ListJobsOptions } from "../../ports/job-store.js";
import type { JobProgress, JobRecord } from "../../schemas/job.js";
import type { JobEventType } from "../../schemas/job-event.js";
import {
  createdSortKey,
  GSI_BY_OWNER,
  GSI_QUEUED,
  isConditionalCheckFailed,
  jobKey,
  ownerPartition,
  QUEUED_PARTITION,
  stripLayout,
} from "./dynamo-table.js";

/** Fixed at creation (the index keys derive from them) or set by the store itself. */
const IMMUTABLE_FIELDS = new Set(["id", "version", "ownerKeyId", "createdAt", "updatedAt"]);
/** Fields every record has; `undefined` for one of these in a patch means "leave as is". */
const REQUIRED_FIELDS = new Set(["status", "plan", "images", "stageTimings"]);
const MAX_PAGE = 1000;

export interface DynamoJobStoreOptions {
  /** Epoch ms; stamps `updatedAt`. */
  now?: () => number;
}

export class DynamoJobStore implements JobStore {
  private readonly now: () => number;

  constructor(
    private readonly doc: DynamoDBDocumentClient,
    private readonly table: string,
    options: DynamoJobStoreOptions = {},
  ) {
    this.now = options.now ?? Date.now;
  }

  async create(job: JobRecord): Promise<boolean> {
    const sortKey = createdSortKey(job.createdAt, job.id);
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.table,
          Item: {
            ...job,
            ...jobKey(job.id),
            [GSI_BY_OWNER.partitionKey]: ownerPartition(job.ownerKeyId),
            [GSI_BY_OWNER.sortKey]: sortKey,
            [GSI_QUEUED.sortKey]: sortKey,
            ...(job.status === "queued" ? { [GSI_QUEUED.partitionKey]: QUEUED_PARTITION } : {}),
          },
          ConditionExpression: "attribute_not_exists(pk)",
        }),
      );
      return true;
    } catch (e) {
      if (isConditionalCheckFailed(e)) return false;
      throw e;
    }
  }

  async get(id: string): Promise<JobRecord | null> {
    const { Item } = await this.doc.send(
      new GetCommand({ TableName: this.table, Key: jobKey(id), ConsistentRead: true }),
    );
    return Item ? jobOf(Item) : null;
  }

  async update(id: string, condition: JobCondition, patch: JobPatch): Promise<JobRecord | null> {
    // "status is one of none" can never hold.
    if (condition.status && condition.status.length === 0) return null;

    const names: Record<string, string> = { "#version": "version", "#updatedAt": "updatedAt" };
    const values: Record<string, unknown> = { ":one": 1, ":updatedAt": new Date(this.now()).toISOString() };
    const sets = ["#version = #version + :one", "#updatedAt = :updatedAt"];
    const removes: string[] = [];

    let n = 0;
    for (const [field, value] of Object.entries(patch)) {
      if (IMMUTABLE_FIELDS.has(field) || (value === undefined && REQUIRED_FIELDS.has(field))) continue;
      if (field === "eventsDue") {
        // The event outbox is appended to inside this conditional write (see JobStore.update); an event
        // that was already due appears twice in the stored list, once in every record read (`jobOf`).
        if (!Array.isArray(value) || value.length === 0) continue;
        names["#due"] = "eventsDue";
        values[":due"] = value;
        values[":none"] = [];
        sets.push("#due = list_append(if_not_exists(#due, :none), :due)");
        continue;
      }
      const name = `#f${n}`;
      names[name] = field;
      // An optional field present with the value undefined is cleared (`{ error: undefined }`).
      if (value === undefined) removes.push(name);
      else {
        values[`:f${n}`] = value;
        sets.push(`${name} = :f${n}`);
      }
      n++;
    }
    if (patch.status !== undefined) {
      names["#queued"] = GSI_QUEUED.partitionKey;
      if (patch.status === "queued") {
        values[":queued"] = QUEUED_PARTITION;
        sets.push("#queued = :queued");
      } else removes.push("#queued");
    }

    const conditions = ["attribute_exists(pk)"];
    if (condition.version !== undefined) {
      values[":expectedVersion"] = condition.version;
      conditions.push("#version = :expectedVersion");
    }
    if (condition.status) {
      names["#status"] = "status";
      const placeholders = condition.status.map((status, i) => {
        values[`:s${i}`] = status;
        return `:s${i}`;
      });
      conditions.push(`#status IN (${placeholders.join(", ")})`);
    }

    try {
      const { Attributes } = await this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: jobKey(id),
          UpdateExpression: `SET ${sets.join(", ")}${removes.length ? ` REMOVE ${removes.join(", ")}` : ""}`,
          ConditionExpression: conditions.join(" AND "),
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
          ReturnValues: "ALL_NEW",
        }),
      );
      return Attributes ? jobOf(Attributes) : null;
    } catch (e) {
      if (isConditionalCheckFailed(e)) return null;
      throw e;
    }
  }

  async setProgress(id: string, progress: JobProgress): Promise<void> {
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: jobKey(id),
          UpdateExpression: "SET #progress = :progress",
          ConditionExpression: "attribute_exists(pk) AND #status = :running",
          ExpressionAttributeNames: { "#progress": "progress", "#status": "status" },
          ExpressionAttributeValues: { ":progress": progress, ":running": "running" },
        }),
      );
    } catch (e) {
      // Progress for a job that is no longer running is stale news, not an error.
      if (!isConditionalCheckFailed(e)) throw e;
    }
  }

  /**
   * Newest first. The cursor is the last returned job's index sort key, so a page resumes with
   * `gsi1sk < cursor`. A `status` filter is applied after DynamoDB reads the items, so it costs a
   * read of every job of the owner between two matches (fine for per-key histories).
   */
  async listByOwner(ownerKeyId: string, options: ListJobsOptions): Promise<JobPage> {
    if (!Number.isInteger(options.limit) || options.limit < 1 || options.limit > MAX_PAGE) {
      throw new KilnError(
        "list_limit_invalid",
        `limit must be a whole number from 1 to ${MAX_PAGE} (got ${options.limit}).`,
        { status: 400 },
      );
    }
    const before = options.cursor === undefined ? undefined : decodeCursor(options.cursor);
    const names: Record<string, string> = { "#pk": GSI_BY_OWNER.partitionKey };
    const values: Record<string, unknown> = { ":owner": ownerPartition(ownerKeyId) };
    let keyCondition = "#pk = :owner";
    if (before !== undefined) {
      names["#sk"] = GSI_BY_OWNER.sortKey;
      values[":before"] = before;
      keyCondition += " AND #sk < :before";
    }
    let filter: string | undefined;
    if (options.status) {
      names["#status"] = "status";
      values[":status"] = options.status;
      filter = "#status = :status";
    }

    const items: Record<string, unknown>[] = [];
    // One item past the page tells whether another page exists.
    const pages = paginateQuery(
      { client: this.doc },
      {
        TableName: this.table,
        IndexName: GSI_BY_OWNER.name,
        KeyConditionExpression: keyCondition,
        FilterExpression: filter,
        ExpressionAttributeNames: names,
        ExpressionAttributeValues: values,
        ScanIndexForward: false,
        Limit: options.limit + 1,
      },
    );
    for await (const page of pages) {
      items.push(...(page.Items ?? []));
      if (items.length > options.limit) break;
    }

    const jobs = items.slice(0, options.limit);
    const last = jobs.at(-1);
    return {
      jobs: jobs.map((item) => jobOf(item)),
      nextCursor: items.length > options.limit && last ? encodeCursor(String(last[GSI_BY_OWNER.sortKey])) : undefined,
    };
  }

  /**
   * One COUNT query on the sparse queued-jobs index. It still reads every queued job ahead
   * (keys only, ~100 bytes each): about 0.5 read units per 40 jobs ahead, paged every 1 MB.
   */
  async countQueuedBefore(job: Pick<JobRecord, "id" | "createdAt">): Promise<number> {
    let count = 0;
    const pages = paginateQuery(
      { client: this.doc },
      {
        TableName: this.table,
        IndexName: GSI_QUEUED.name,
        KeyConditionExpression: "#pk = :queued AND #sk < :before",
        ExpressionAttributeNames: { "#pk": GSI_QUEUED.partitionKey, "#sk": GSI_QUEUED.sortKey },
        ExpressionAttributeValues: { ":queued": QUEUED_PARTITION, ":before": createdSortKey(job.createdAt, job.id) },
        Select: "COUNT",
      },
    );
    for await (const page of pages) count += page.Count ?? 0;
    return count;
  }

  /** The queued index holds keys only; each job is then read strongly. */
  async listQueued(createdBefore: string, limit: number): Promise<JobRecord[]> {
    const page = await this.doc.send(
      new QueryCommand({
        TableName: this.table,
        IndexName: GSI_QUEUED.name,
        KeyConditionExpression: "#pk = :queued AND #sk < :before",
        ExpressionAttributeNames: { "#pk": GSI_QUEUED.partitionKey, "#sk": GSI_QUEUED.sortKey },
        ExpressionAttributeValues: { ":queued": QUEUED_PARTITION, ":before": createdSortKey(createdBefore, "") },
        Limit: limit,
      }),
    );
    const jobs = await Promise.all((page.Items ?? []).map((item) => this.get(String(item.pk).replace(/^JOB#/, ""))));
    return jobs.filter((j): j is JobRecord => j !== null && j.status === "queued");
  }

  /**
   * A filtered Scan of the whole table, so it is meant for a periodic sweep, not a request path.
   * TTL deletes the records by itself; the sweep exists for the blobs, which TTL does not touch.
   */
  async listExpired(nowSeconds: number, limit: number): Promise<JobRecord[]> {
    const items: Record<string, unknown>[] = [];
    const pages = paginateScan(
      { client: this.doc },
      {
        TableName: this.table,
        FilterExpression: "begins_with(#pk, :job) AND #expiresAt < :now AND #status IN (:s0, :s1, :s2, :s3)",
        ExpressionAttributeNames: { "#pk": "pk", "#expiresAt": "expiresAt", "#status": "status" },
        ExpressionAttributeValues: {
          ":job": "JOB#",
          ":now": nowSeconds,
          ":s0": "succeeded",
          ":s1": "failed",
          ":s2": "canceled",
          ":s3": "expired",
        },
      },
    );
    for await (const page of pages) {
      items.push(...(page.Items ?? []));
      if (items.length >= limit) break;
    }
    return items.slice(0, limit).map((item) => jobOf(item));
  }

  /**
   * Event outbox: read, then write the rest conditional on the version read (a transition in
   * between bumps it, and may have added an event: read again). No version bump of its own.
   */
  async clearEventsDue(id: string, told: readonly JobEventType[]): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const job = await this.get(id);
      const due = job?.eventsDue;
      if (!job || !due) return;
      const rest = due.filter((e) => !told.includes(e));
      if (rest.length === due.length) return;
      try {
        await this.doc.send(
          new UpdateCommand({
            TableName: this.table,
            Key: jobKey(id),
            UpdateExpression: rest.length ? "SET #due = :rest" : "REMOVE #due",
            ConditionExpression: "#version = :version",
            ExpressionAttributeNames: { "#due": "eventsDue", "#version": "version" },
            ExpressionAttributeValues: { ":version": job.version, ...(rest.length ? { ":rest": rest } : {}) },
          }),
        );
        return;
      } catch (e) {
        if (!isConditionalCheckFailed(e)) throw e;
      }
    }
    // Still contended: the events stay due and the sweep tells them again (receivers dedupe by webhook-id).
  }

  /** A filtered Scan, like `listExpired`: for the periodic event-outbox sweep, not a request path. */
  async listEventsDue(updatedBefore: string, limit: number): Promise<JobRecord[]> {
    const items: Record<string, unknown>[] = [];
    const pages = paginateScan(
      { client: this.doc },
      {
        TableName: this.table,
        FilterExpression: "begins_with(#pk, :job) AND attribute_exists(#due) AND #updatedAt < :before",
        ExpressionAttributeNames: { "#pk": "pk", "#due": "eventsDue", "#updatedAt": "updatedAt" },
        ExpressionAttributeValues: { ":job": "JOB#", ":before": updatedBefore },
      },
    );
    for await (const page of pages) {
      items.push(...(page.Items ?? []));
      if (items.length >= limit) break;
    }
    return items.slice(0, limit).map((item) => jobOf(item));
  }

  async delete(id: string): Promise<void> {
    await this.doc.send(new DeleteCommand({ TableName: this.table, Key: jobKey(id) }));
  }
}

/** A stored item as a JobRecord: without the layout keys, each due event once (`update` appends). */
function jobOf(item: Record<string, unknown>): JobRecord {
  const job = stripLayout<JobRecord>(item);
  if (job.eventsDue) job.eventsDue = [...new Set(job.eventsDue)];
  return job;
}

// base64url with Web-standard calls (no Buffer), so the family also runs on edge runtimes.
const encodeCursor = (sortKey: string): string =>
  btoa(String.fromCharCode(...new TextEncoder().encode(sortKey)))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");

function decodeCursor(cursor: string): string {
  let sortKey = "";
  try {
    const binary = atob(cursor.replace(/-/g, "+").replace(/_/g, "/"));
    sortKey = new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
  } catch {
    // Not base64url or not UTF-8: refused below like any cursor this server did not issue.
  }
  if (!sortKey.includes("#") || encodeCursor(sortKey) !== cursor) {
    throw new KilnError(
      "cursor_invalid",
      "The page cursor is not one this server issued; start again without a cursor.",
      { status: 400 },
    );
  }
  return sortKey;
}
