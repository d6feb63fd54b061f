/**
 * KeyStore on DynamoDB. A key is two items: the record under `KEY#<id>` and a pointer under
 * `KEYPREFIX#<prefix>` that makes the prefix unique and lookups by prefix a GetItem.
 *
 * The pair is written as two conditional puts, prefix first, rather than one TransactWriteItems:
 * dynalite (the test stand-in) has no transactions, and the order keeps the invariant that
 * matters: a key record is only ever stored after its prefix was claimed. A crash in between
 * leaves a pointer to nothing, which lookups treat as "no such key".
 */
import { DeleteCommand, GetCommand, PutCommand, QueryCommand, UpdateCommand, type DynamoDBDocumentClient } from "@aws-sdk/lib-dynamodb";
import { KilnError } from "../../errors.js";
import type { KeyRecord, KeyStore } from "../../ports/key-store.js";
import {
  GSI_BY_OWNER,
  KEYS_PARTITION,
  TTL_ATTRIBUTE,
  apiKeyKey,
  counterKey,
  createdSortKey,
  isConditionalCheckFailed,
  keyPrefixKey,
  stripLayout,
} from "./dynamo-table.js";

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
      throw new KilnError("key_exists", `An API key with prefix ${record.prefix} already exists; generate a new key.`, { status: 409, cause: e });
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
      throw new KilnError("key_exists", `An API key with id ${record.id} already exists; generate a new key.`, { status: 409, cause: e });
    }
  }

  async getByPrefix(prefix: string): Promise<KeyRecord | null> {
    const { Item } = await this.doc.send(new GetCommand({ TableName: this.table, Key: keyPrefixKey(prefix), ConsistentRead: true }));
    if (!Item) return null;
    const key = await this.get(String(Item.keyId));
    return key && key.prefix === prefix ? key : null;
  }

  async get(id: string): Promise<KeyRecord | null> {
    const { Item } = await this.doc.send(new GetCommand({ TableName: this.table, Key: apiKeyKey(id), ConsistentRead: true }));
    return Item ? stripLayout<KeyRecord>(Item) : null;
  }

  /** Oldest first. Reads the key index, which on real DynamoDB is eventually consistent. */
  async list(): Promise<KeyRecord[]> {
    const keys: KeyRecord[] = [];
    let startKey: Record<string, unknown> | undefined;
    do {
      const page = await this.doc.send(
        new QueryCommand({
          TableName: this.table,
          IndexName: GSI_BY_OWNER.name,
          KeyConditionExpression: "#pk = :keys",
          ExpressionAttributeNames: { "#pk": GSI_BY_OWNER.partitionKey },
          ExpressionAttributeValues: { ":keys": KEYS_PARTITION },
          ExclusiveStartKey: startKey,
        }),
      );
      keys.push(...(page.Items ?? []).map((item) => stripLayout<KeyRecord>(item)));
      startKey = page.LastEvaluatedKey;
    } while (startKey);
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
            Item: { ...counterKey(name), count: by, ...(expiresAt !== undefined ? { [TTL_ATTRIBUTE]: expiresAt } : {}) },
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
}
