/**
 * Kiln's one DynamoDB table (single-table design: jobs, keys, counters, idempotency records,
 * worker beats). Keys and indexes mirror packages/shared/src/adapters/aws/dynamo-table.ts, where
 * the layout is documented; TTL on `expiresAt` deletes ended jobs and lapsed counters.
 */
export const table = new sst.aws.Dynamo("KilnTable", {
  fields: { pk: "string", sk: "string", gsi1pk: "string", gsi1sk: "string", gsi2pk: "string", gsi2sk: "string" },
  primaryIndex: { hashKey: "pk", rangeKey: "sk" },
  globalIndexes: {
    gsi1: { hashKey: "gsi1pk", rangeKey: "gsi1sk" },
    gsi2: { hashKey: "gsi2pk", rangeKey: "gsi2sk", projection: "keys-only" },
  },
  ttl: "expiresAt",
});
