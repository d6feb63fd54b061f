/**
 * Kiln's one DynamoDB table (single-table design), shared by the JobStore and the KeyStore.
 * The constants here are the schema: infra (SST) builds the same table from them.
 *
 * | item          | pk                   | sk          | gsi1pk / gsi1sk                   | gsi2pk / gsi2sk                     |
 * |---------------|----------------------|-------------|-----------------------------------|-------------------------------------|
 * | job           | `JOB#<id>`           | `JOB`       | `OWNER#<keyId>` / `<createdAt>#<id>` | `QUEUED` while queued / `<createdAt>#<id>` |
 * | API key       | `KEY#<id>`           | `KEY`       | `KEYS` / `<createdAt>#<id>`       | –                                   |
 * | key prefix    | `KEYPREFIX#<prefix>` | `KEYPREFIX` | –                                 | –                                   |
 * | usage counter | `COUNTER#<name>`     | `COUNTER`   | –                                 | –                                   |
 * | rate bucket   | `RATE#<bucket>`      | `RATE`      | –                                 | –                                   |
 * | idempotency   | `IDEMPOTENCY#<id>`   | `IDEMPOTENCY` | –                               | –                                   |
 * | worker beat   | `WORKERS`            | `WORKER#<id>` | –                               | –                                   |
 */
import {
  CreateTableCommand,
  DescribeTableCommand,
  type DynamoDBClient,
  UpdateTimeToLiveCommand,
} from "@aws-sdk/client-dynamodb";

import { KilnError } from "../../errors.js";

export const TABLE_KEY = { partitionKey: "pk", sortKey: "sk" } as const;

/** Jobs by owner, newest first (and every API key, under the `KEYS` partition). Projects all attributes. */
export const GSI_BY_OWNER = { name: "gsi1", partitionKey: "gsi1pk", sortKey: "gsi1sk" } as const;

/**
 * Sparse index of queued jobs in creation order: `gsi2pk` exists only while a job is queued, so a
 * COUNT query for the queue position reads only queued jobs (keys only, ~100 bytes each).
 * One partition holds every queued job; at GPU-bound submission rates that is far below a
 * partition's write limit.
 */
export const GSI_QUEUED = { name: "gsi2", partitionKey: "gsi2pk", sortKey: "gsi2sk" } as const;

/** Epoch seconds; DynamoDB TTL deletes the item some time (up to days) after it passes. */
export const TTL_ATTRIBUTE = "expiresAt";

/** Attributes that belong to the table layout, not to the records stored in it. */
export const LAYOUT_ATTRIBUTES: readonly string[] = [
  TABLE_KEY.partitionKey,
  TABLE_KEY.sortKey,
  GSI_BY_OWNER.partitionKey,
  GSI_BY_OWNER.sortKey,
  GSI_QUEUED.partitionKey,
  GSI_QUEUED.sortKey,
];

export const QUEUED_PARTITION = "QUEUED";
export const KEYS_PARTITION = "KEYS";

export const jobKey = (id: string) => ({ pk: `JOB#${id}`, sk: "JOB" });
export const apiKeyKey = (id: string) => ({ pk: `KEY#${id}`, sk: "KEY" });
export const keyPrefixKey = (prefix: string) => ({ pk: `KEYPREFIX#${prefix}`, sk: "KEYPREFIX" });
export const counterKey = (name: string) => ({ pk: `COUNTER#${name}`, sk: "COUNTER" });
export const rateBucketKey = (bucket: string) => ({ pk: `RATE#${bucket}`, sk: "RATE" });
export const idempotencyKey = (id: string) => ({ pk: `IDEMPOTENCY#${id}`, sk: "IDEMPOTENCY" });
/** Every worker's last beat in one partition: one Query lists the fleet (a few writes per worker per minute). */
export const WORKERS_PARTITION = "WORKERS";
export const workerBeatKey = (workerId: string) => ({ pk: WORKERS_PARTITION, sk: `WORKER#${workerId}` });
export const ownerPartition = (keyId: string) => `OWNER#${keyId}`;
/**
 * Sort key for "created at, then id". The time is normalised to `toISOString()` form (fixed
 * width, UTC, milliseconds) so that string order is time order whatever ISO form was stored.
 */
export function createdSortKey(createdAt: string, id: string): string {
  const ms = Date.parse(createdAt);
  if (Number.isNaN(ms)) {
    throw new KilnError("job_invalid", `createdAt must be an ISO 8601 time (got ${JSON.stringify(createdAt)}).`);
  }
  return `${new Date(ms).toISOString()}#${id}`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Creates the table with both GSIs (on-demand billing) and turns TTL on, then waits until the
 * table and its indexes are ACTIVE. Idempotent. For tests and dev setups; SST owns production.
 */
export async function ensureTable(
  client: DynamoDBClient,
  tableName: string,
  options: { timeoutMs?: number } = {},
): Promise<void> {
  const index = (gsi: { name: string; partitionKey: string; sortKey: string }, projection: "ALL" | "KEYS_ONLY") => ({
    IndexName: gsi.name,
    KeySchema: [
      { AttributeName: gsi.partitionKey, KeyType: "HASH" as const },
      { AttributeName: gsi.sortKey, KeyType: "RANGE" as const },
    ],
    Projection: { ProjectionType: projection },
  });
  try {
    await client.send(
      new CreateTableCommand({
        TableName: tableName,
        BillingMode: "PAY_PER_REQUEST",
        AttributeDefinitions: [...LAYOUT_ATTRIBUTES].map((name) => ({
          AttributeName: name,
          AttributeType: "S" as const,
        })),
        KeySchema: [
          { AttributeName: TABLE_KEY.partitionKey, KeyType: "HASH" },
          { AttributeName: TABLE_KEY.sortKey, KeyType: "RANGE" },
        ],
        GlobalSecondaryIndexes: [index(GSI_BY_OWNER, "ALL"), index(GSI_QUEUED, "KEYS_ONLY")],
      }),
    );
  } catch (e) {
    if ((e as { name?: string }).name !== "ResourceInUseException") throw e;
  }
  await waitUntilActive(client, tableName, options.timeoutMs ?? 60_000);
  try {
    await client.send(
      new UpdateTimeToLiveCommand({
        TableName: tableName,
        TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
      }),
    );
  } catch (e) {
    const name = (e as { name?: string }).name;
    // dynalite has no UpdateTimeToLive: on the test stand-in nothing expires, which no test needs.
    // A second call on real DynamoDB reports TTL as already enabled.
    if (
      name !== "UnknownOperationException" &&
      !(name === "ValidationException" && /already enabled/i.test(String((e as Error).message)))
    ) {
      throw e;
    }
  }
}

async function waitUntilActive(client: DynamoDBClient, tableName: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    const { Table } = await client.send(new DescribeTableCommand({ TableName: tableName }));
    const indexesActive = (Table?.GlobalSecondaryIndexes ?? []).every((i) => i.IndexStatus === "ACTIVE");
    if (Table?.TableStatus === "ACTIVE" && indexesActive) return;
    if (Date.now() > deadline) {
      throw new KilnError(
        "table_not_ready",
        `DynamoDB table "${tableName}" did not become ACTIVE within ${Math.round(timeoutMs / 1000)} s (status ${Table?.TableStatus}). Check the table in the AWS console and try again.`,
        { retryable: true },
      );
    }
    await sleep(Math.min(1000, 50 * 2 ** attempt));
  }
}

/** A ConditionExpression did not hold: the caller's precondition failed, not the request. */
export const isConditionalCheckFailed = (e: unknown): boolean =>
  (e as { name?: string } | null)?.name === "ConditionalCheckFailedException";

/** The stored item without the table-layout attributes, i.e. the record as written. */
export function stripLayout<T>(item: Record<string, unknown>): T {
  const record: Record<string, unknown> = { ...item };
  for (const attribute of LAYOUT_ATTRIBUTES) delete record[attribute];
  return record as T;
}
