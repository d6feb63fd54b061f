/**
 * PLACE FOR THE OUTBOX RELAY (crash-safe submit): a small function on the table's DynamoDB Stream
 * that sends what each stored transition must cause (stage-0 message, webhook delivery), for the
 * AWS family where a transition and its message cannot commit together.
 *
 * Not deployed yet: the relay's handler lands with that work. To wire it:
 * 1. in table.ts, `stream: "new-image"` on the Dynamo component;
 * 2. here, `table.subscribe("KilnOutboxRelay", { handler: "<relay handler>", permissions:
 *    asSstPermissions(outboxRelayStatements({ ...dataArns, tableStream: table.nodes.table.streamArn })),
 *    environment: apiEnvironment }, { filters: [...] })`;
 * 3. import this file from sst.config.ts.
 * The IAM statements are ready and tested (infra/plan/iam.ts `outboxRelayStatements`).
 */
export {};
