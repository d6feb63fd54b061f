/**
 * KeyStore on DynamoDB. A key is two items: the record under `KEY#<id>` and a pointer under
 * `KEYPREFIX#<prefix>` that makes the prefix unique and lookups by prefix a GetItem.
 *
 * The pair is written as two conditional puts, prefix first, rather than one TransactWriteItems:
 * dynalite (the test stand-in) has no transactions, and the order keeps the invariant that
 * matters: a key record is only ever stored after its prefix was claimed. A crash in between
 * leaves a pointer to nothing, which lookups treat as "no such key".
 */
import {
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  paginateQuery,
  PutCommand,
  UpdateCommand,
} from "@aws-sdk/lib-dynamodb";

import { KilnError } from "../../errors.js";
import { isLiveIdempotency } from "../../idempotency-record.js";
import type { IdempotencyRecord, KeyRecord, KeyStore, TokenResult } from "../../ports/key-store.js";
import { allowedResult, bucketWindow, deniedResult } from "../../token-bucket.js";
import {
  apiKeyKey,
  counterKey,
  createdSortKey,
  GSI_BY_OWNER,
  idempotencyKey,
  isConditionalCheckFailed,
  keyPrefixKey,
  KEYS_PARTITION,
  rateBucketKey,
  stripLayout,
  TTL_ATTRIBUTE,
} from "./dynamo-table.js";

/** A bucket item outlives its last refill by this long before TTL may delete it (a full bucket is no item). */
const BUCKET_GRACE_SECONDS = 60;
/** Writes that lose a race re-read and retry; this many rounds means something else keeps changing the item. */
const MAX_ROUNDS = 5;

export interface DynamoKeyStoreOptions {
  /** Epoch ms; decides when counters have expired. */
  now?: () => number;
}

export class DynamoKeyStore implements KeyStore {
  private readonly now: () => number;

  constructor(
    private readonly doc: DynamoDBDocumentClient,
    private readonly table: string,
    options: DynamoKeyStoreOptions = {},
  ) {
    this.now = options.now ?? Date.now;
  }

  async insert(record: KeyRecord): Promise<void> {
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.table,
          Item: { ...keyPrefixKey(record.prefix), keyId: record.id },
          ConditionExpression: "attribute_not_exists(pk)",
        }),
      );
    } catch (e) {
      if (!isConditionalCheckFailed(e)) throw e;
      throw new KilnError("key_exists", `An API key with prefix ${record.prefix} already exists; generate a new key.`, {
        status: 409,
        cause: e,
      });
    }
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.table,
          Item: {
            ...record,
            ...apiKeyKey(record.id),
            [GSI_BY_OWNER.partitionKey]: KEYS_PARTITION,
            [GSI_BY_OWNER.sortKey]: createdSortKey(record.createdAt, record.id),
          },
          ConditionExpression: "attribute_not_exists(pk)",
        }),
      );
    } catch (e) {
      await this.doc.send(
        new DeleteCommand({
          TableName: this.table,
          Key: keyPrefixKey(record.prefix),
          ConditionExpression: "keyId = :id",
          ExpressionAttributeValues: { ":id": record.id },
        }),
      );
      if (!isConditionalCheckFailed(e)) throw e;
      throw new KilnError("key_exists", `An API key with id ${record.id} already exists; generate a new key.`, {
        status: 409,
        cause: e,
      });
    }
  }

  async getByPrefix(prefix: string): Promise<KeyRecord | null> {
    const { Item } = await this.doc.send(
      new GetCommand({ TableName: this.table, Key: keyPrefixKey(prefix), ConsistentRead: true }),
    );
    if (!Item) return null;
    const key = await this.get(String(Item.keyId));
    return key && key.prefix === prefix ? key : null;
  }

  async get(id: string): Promise<KeyRecord | null> {
    const { Item } = await this.doc.send(
      new GetCommand({ TableName: this.table, Key: apiKeyKey(id), ConsistentRead: true }),
    );
    return Item ? stripLayout<KeyRecord>(Item) : null;
  }

  /** Oldest first. Reads the key index, which on real DynamoDB is eventually consistent. */
  async list(): Promise<KeyRecord[]> {
    const keys: KeyRecord[] = [];
    const pages = paginateQuery(
      { client: this.doc },
      {
        TableName: this.table,
        IndexName: GSI_BY_OWNER.name,
        KeyConditionExpression: "#pk = :keys",
        ExpressionAttributeNames: { "#pk": GSI_BY_OWNER.partitionKey },
        ExpressionAttributeValues: { ":keys": KEYS_PARTITION },
      },
    );
    for await (const page of pages) keys.push(...(page.Items ?? []).map((item) => stripLayout<KeyRecord>(item)));
    return keys;
  }

  /** False when the key does not exist or was already revoked (the first revocation time stands). */
  async revoke(id: string, at: string): Promise<boolean> {
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: apiKeyKey(id),
          UpdateExpression: "SET revokedAt = :at",
          ConditionExpression: "attribute_exists(pk) AND attribute_not_exists(revokedAt)",
          ExpressionAttributeValues: { ":at": at },
        }),
      );
      return true;
    } catch (e) {
      if (isConditionalCheckFailed(e)) return false;
      throw e;
    }
  }

  /**
   * `ADD` is atomic on DynamoDB's side. A counter keeps the expiry (epoch seconds) it was created
   * with. TTL deletes expired items lazily (up to days late), so a counter whose `expiresAt` has
   * passed is treated as gone: the next increment starts it afresh.
   */
  async incrementCounter(name: string, by: number, expiresAt?: number): Promise<number> {
    if (!Number.isFinite(by)) {
      throw new KilnError("counter_invalid", `A counter can only be increased by a finite number (got ${by}).`);
    }
    for (;;) {
      const now = Math.floor(this.now() / 1000);
      const names: Record<string, string> = { "#count": "count", "#expiresAt": TTL_ATTRIBUTE };
      const values: Record<string, unknown> = { ":by": by, ":now": now };
      let expression = "ADD #count :by";
      if (expiresAt !== undefined) {
        values[":expiresAt"] = expiresAt;
        expression += " SET #expiresAt = if_not_exists(#expiresAt, :expiresAt)";
      }
      try {
        const { Attributes } = await this.doc.send(
          new UpdateCommand({
            TableName: this.table,
            Key: counterKey(name),
            UpdateExpression: expression,
            ConditionExpression: "attribute_not_exists(#expiresAt) OR #expiresAt > :now",
            ExpressionAttributeNames: names,
            ExpressionAttributeValues: values,
            ReturnValues: "UPDATED_NEW",
          }),
        );
        return Number(Attributes?.count);
      } catch (e) {
        if (!isConditionalCheckFailed(e)) throw e;
      }
      try {
        await this.doc.send(
          new PutCommand({
            TableName: this.table,
            Item: {
              ...counterKey(name),
              count: by,
              ...(expiresAt !== undefined ? { [TTL_ATTRIBUTE]: expiresAt } : {}),
            },
            ConditionExpression: "#expiresAt <= :now",
            ExpressionAttributeNames: { "#expiresAt": TTL_ATTRIBUTE },
            ExpressionAttributeValues: { ":now": now },
          }),
        );
        return by;
      } catch (e) {
        // Another increment restarted the counter first: add to its new value.
        if (!isConditionalCheckFailed(e)) throw e;
      }
    }
  }

  /**
   * GCRA in at most two conditional writes and no read on the allowed path: an idle bucket is
   * (re)started with SET, a bucket in use moves its TAT by one interval with ADD as long as that
   * stays within the burst. Only a denial reads the item, to say when to retry.
   */
  async takeToken(bucket: string, ratePerSecond: number, burst: number, nowMs: number): Promise<TokenResult> {
    const w = bucketWindow(ratePerSecond, burst, nowMs);
    const names = { "#tat": "tat", "#expiresAt": TTL_ATTRIBUTE };
    const expiresAt = Math.ceil(w.ceilingUs / 1e6) + BUCKET_GRACE_SECONDS;
    for (let round = 0; round < MAX_ROUNDS; round++) {
      try {
        await this.doc.send(
          new UpdateCommand({
            TableName: this.table,
            Key: rateBucketKey(bucket),
            UpdateExpression: "SET #tat = :start, #expiresAt = :expiresAt",
            ConditionExpression: "attribute_not_exists(#tat) OR #tat <= :now",
            ExpressionAttributeNames: names,
            ExpressionAttributeValues: { ":start": w.nowUs + w.intervalUs, ":now": w.nowUs, ":expiresAt": expiresAt },
          }),
        );
        return allowedResult(w, w.nowUs + w.intervalUs);
      } catch (e) {
        if (!isConditionalCheckFailed(e)) throw e;
      }
      try {
        const { Attributes } = await this.doc.send(
          new UpdateCommand({
            TableName: this.table,
            Key: rateBucketKey(bucket),
            UpdateExpression: "ADD #tat :interval SET #expiresAt = :expiresAt",
            ConditionExpression: "#tat > :now AND #tat <= :last",
            ExpressionAttributeNames: names,
            ExpressionAttributeValues: {
              ":interval": w.intervalUs,
              ":now": w.nowUs,
              ":last": w.ceilingUs - w.intervalUs,
              ":expiresAt": expiresAt,
            },
            ReturnValues: "UPDATED_NEW",
          }),
        );
        return allowedResult(w, Number(Attributes?.tat));
      } catch (e) {
        if (!isConditionalCheckFailed(e)) throw e;
      }
      const { Item } = await this.doc.send(
        new GetCommand({ TableName: this.table, Key: rateBucketKey(bucket), ConsistentRead: true }),
      );
      const tat = Item?.tat === undefined ? undefined : Number(Item.tat);
      if (tat !== undefined && tat > w.ceilingUs - w.intervalUs) return deniedResult(w, tat);
      // The bucket moved between the writes and the read; decide again.
    }
    throw new KilnError(
      "rate_limit_contended",
      `The rate bucket ${bucket} kept changing under this request; retry it.`,
      { status: 503, retryable: true },
    );
  }

  async putIdempotency(record: IdempotencyRecord, nowMs: number): Promise<IdempotencyRecord | null> {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      try {
        await this.doc.send(
          new PutCommand({
            TableName: this.table,
            Item: { ...record, ...idempotencyKey(record.id) },
            ConditionExpression:
              "attribute_not_exists(pk) OR #expiresAt <= :nowS OR (#state = :pending AND #lockedUntil <= :nowMs)",
            ExpressionAttributeNames: { "#expiresAt": TTL_ATTRIBUTE, "#state": "state", "#lockedUntil": "lockedUntil" },
            ExpressionAttributeValues: { ":nowS": Math.floor(nowMs / 1000), ":pending": "pending", ":nowMs": nowMs },
          }),
        );
        return null;
      } catch (e) {
        if (!isConditionalCheckFailed(e)) throw e;
      }
      const existing = await this.getIdempotency(record.id, nowMs);
      if (existing) return existing;
      // Released or lapsed between the write and the read: claim again.
    }
    throw new KilnError(
      "idempotency_contended",
      "The Idempotency-Key record kept changing under this request; retry it.",
      { status: 409, retryable: true },
    );
  }

  async getIdempotency(id: string, nowMs: number): Promise<IdempotencyRecord | null> {
    const { Item } = await this.doc.send(
      new GetCommand({ TableName: this.table, Key: idempotencyKey(id), ConsistentRead: true }),
    );
    if (!Item) return null;
    const record = stripLayout<IdempotencyRecord>(Item);
    return isLiveIdempotency(record, nowMs) ? record : null;
  }

  async completeIdempotency(
    id: string,
    token: string,
    result: Pick<IdempotencyRecord, "response" | "jobId">,
  ): Promise<boolean> {
    const names: Record<string, string> = { "#state": "state", "#token": "token" };
    const values: Record<string, unknown> = { ":completed": "completed", ":pending": "pending", ":token": token };
    const sets = ["#state = :completed"];
    for (const field of ["response", "jobId"] as const) {
      if (result[field] === undefined) continue;
      names[`#${field}`] = field;
      values[`:${field}`] = result[field];
      sets.push(`#${field} = :${field}`);
    }
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: idempotencyKey(id),
          UpdateExpression: `SET ${sets.join(", ")}`,
          ConditionExpression: "#token = :token AND #state = :pending",
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
        }),
      );
      return true;
    } catch (e) {
      if (isConditionalCheckFailed(e)) return false;
      throw e;
    }
  }

  async renewIdempotency(id: string, token: string, lockedUntil: number): Promise<boolean> {
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: idempotencyKey(id),
          UpdateExpression: "SET #lockedUntil = :until",
          ConditionExpression: "#token = :token AND #state = :pending",
          ExpressionAttributeNames: { "#state": "state", "#token": "token", "#lockedUntil": "lockedUntil" },
          ExpressionAttributeValues: { ":token": token, ":pending": "pending", ":until": lockedUntil },
        }),
      );
      return true;
    } catch (e) {
      if (isConditionalCheckFailed(e)) return false;
      throw e;
    }
  }

  async releaseIdempotency(id: string, token: string): Promise<boolean> {
    try {
      await this.doc.send(
        new DeleteCommand({
          TableName: this.table,
          Key: idempotencyKey(id),
          ConditionExpression: "#token = :token AND #state = :pending",
          ExpressionAttributeNames: { "#state": "state", "#token": "token" },
          ExpressionAttributeValues: { ":token": token, ":pending": "pending" },
        }),
      );
      return true;
    } catch (e) {
      if (isConditionalCheckFailed(e)) return false;
      throw e;
    }
  }
}
